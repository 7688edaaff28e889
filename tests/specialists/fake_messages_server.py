"""A real HTTP server on 127.0.0.1 that speaks the Anthropic Messages API as far as the SDK needs, strictly.

This is the only fake in the specialist tests: it stands in for the model's
judgement.  Everything between the specialist and this server is real (the
``anthropic`` SDK and its clients for the Anthropic API, Bedrock and Vertex,
its HTTP client, JSON or server-sent events over a TCP socket).

It rejects what the real API rejects, with the real error shape (HTTP 400
``invalid_request_error``), and records each rejection in ``rejections``:

- more than 4 ``cache_control`` breakpoints, or one on a thinking block;
- a ``tool_use`` not answered by a ``tool_result`` at the start of the next
  user message, or a ``tool_result`` for an id the previous turn did not use;
- a thinking block that is not returned exactly as it was sent, or a last
  assistant turn with tool use that lost its thinking block;
- a trailing assistant turn (no prefill), unless it ends with the content of
  a ``pause_turn`` reply (the documented way to continue a paused turn);
- unknown fields in content blocks, empty turns, a first turn not by the user;
- a prompt longer than ``context_window`` ("prompt is too long: N tokens > M
  maximum"), counted as :func:`count_tokens` does (characters / 4), which
  also answers ``/v1/messages/count_tokens``.

Routes: ``/v1/messages`` (and ``stream: true`` as SSE), ``count_tokens``,
Bedrock's ``/model/{model}/invoke``, Vertex's
``…/publishers/anthropic/models/{model}:rawPredict`` (and
``count-tokens:rawPredict``).  ``Request.route`` says which was used.

A server is driven by a *script*: a list of :class:`Reply` objects answered
in order, or a callable ``script(request, index) -> Reply``.  Deterministic:
tool-use ids and thinking signatures are numbered per server.

Usage::

    with FakeMessagesServer([reply(tool_use("read_file", {"path": "train.py"})), ...]) as server:
        client = anthropic.Anthropic(base_url=server.url, api_key="test")
"""

from __future__ import annotations

import itertools
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
               403: "permission_error", 404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
               500: "api_error", 503: "api_error", 529: "overloaded_error"}
BLOCK_KEYS = {"text": {"type", "text", "cache_control", "citations"},
              "tool_use": {"type", "id", "name", "input", "cache_control"},
              "tool_result": {"type", "tool_use_id", "content", "is_error", "cache_control"},
              "thinking": {"type", "thinking", "signature"}, "redacted_thinking": {"type", "data"}}
VERTEX = re.compile(r"^(?:/v1)?/projects/[^/]+/locations/[^/]+/publishers/anthropic/models/([^/:]+):(\w+)$")
BEDROCK = re.compile(r"^/model/([^/]+)/(invoke|invoke-with-response-stream)$")


def count_tokens(body: dict[str, Any]) -> int:
    """This server's token count of a request: its system, tools and messages as JSON, 4 characters a token."""
    parts = {k: body.get(k) for k in ("system", "tools", "messages")}
    return len(json.dumps(parts, ensure_ascii=False, separators=(",", ":"))) // 4 + 1


@dataclass(frozen=True)
class Request:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    json: dict[str, Any]
    at: float  # time.monotonic() on arrival
    route: str = "anthropic"  # anthropic, bedrock or vertex

    @property
    def messages(self) -> list[dict[str, Any]]:
        return self.json.get("messages", [])

    def tool_results(self) -> list[dict[str, Any]]:
        """The tool_result blocks of the last user message (what the model is answering)."""
        if not self.messages:
            return []
        content = self.messages[-1].get("content")
        return [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"] \
            if isinstance(content, list) else []

    def last_user_text(self) -> str:
        users = [m for m in self.messages if m.get("role") == "user"]
        content = users[-1].get("content") if users else ""
        if isinstance(content, str):
            return content
        return "\n".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")

    def prompt_text(self) -> str:
        """System prompt plus the first user turn, as plain text."""
        system = self.json.get("system", "")
        if isinstance(system, list):
            system = "\n".join(b.get("text", "") for b in system)
        first = self.messages[0]["content"] if self.messages else ""
        if isinstance(first, list):
            first = "\n".join(b.get("text", "") for b in first if isinstance(b, dict))
        return f"{system}\n{first}"


@dataclass
class Reply:
    """One scripted answer: a status, a JSON body, headers, an optional delay before answering."""

    status: int = 200
    body: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


def text(s: str) -> dict[str, Any]:
    return {"type": "text", "text": s}


def thinking(s: str) -> dict[str, Any]:
    """A thinking block; the server signs it."""
    return {"type": "thinking", "thinking": s, "signature": None}


def tool_use(name: str, input: Any, id: str | None = None) -> dict[str, Any]:
    """A tool_use block; ``id`` is filled in by the server when omitted."""
    return {"type": "tool_use", "id": id, "name": name, "input": input}


def reply(*blocks: dict[str, Any], stop_reason: str | None = None, input_tokens: int = 100,
          output_tokens: int = 20, cache_read: int = 0, cache_write: int = 0, delay: float = 0.0,
          stop_details: dict[str, Any] | None = None) -> Reply:
    """A successful message.  ``stop_reason`` defaults to tool_use when a block uses a tool, else end_turn."""
    if stop_reason is None:
        stop_reason = "tool_use" if any(b["type"] == "tool_use" for b in blocks) else "end_turn"
    body = {
        "type": "message", "role": "assistant", "content": list(blocks), "stop_reason": stop_reason,
        "stop_sequence": None, "stop_details": stop_details,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens,
                  "cache_read_input_tokens": cache_read, "cache_creation_input_tokens": cache_write},
    }
    return Reply(200, body, delay=delay)


def refusal(category: str | None = "cyber", explanation: str | None = "This request may facilitate harm.",
            **kw: Any) -> Reply:
    """A classifier refusal: a normal 200 answer with ``stop_reason: refusal`` and its ``stop_details``."""
    return reply(stop_reason="refusal", stop_details={"type": "refusal", "category": category,
                                                      "explanation": explanation}, **kw)


def error(status: int, message: str = "", retry_after: float | None = None, delay: float = 0.0) -> Reply:
    """An API error with the Messages API's error body and, optionally, a retry-after header (seconds)."""
    etype = ERROR_TYPES.get(status, "api_error")
    headers = {"retry-after": f"{retry_after:g}"} if retry_after is not None else {}
    body = {"type": "error", "error": {"type": etype, "message": message or etype.replace("_", " ")},
            "request_id": "req_fake"}
    return Reply(status, body, headers, delay)


Script = Sequence[Reply] | Callable[[Request, int], Reply]


class FakeMessagesServer:
    """A threaded HTTP server on a free loopback port.  Use as a context manager."""

    def __init__(self, script: Script, *, context_window: int = 1_000_000, count_tokens_route: bool = True) -> None:
        self.script = script
        self.context_window = context_window
        self.count_tokens_route = count_tokens_route
        self.requests: list[Request] = []  # Messages requests, including rejected ones
        self.counted: list[Request] = []  # count_tokens requests
        self.unrouted: list[Request] = []  # requests to paths this server does not serve (answered 404)
        self.rejections: list[str] = []  # what the validation refused (a correct client causes none)
        self.exhausted = False  # a request arrived after the last scripted reply
        self.script_errors: list[Exception] = []  # raised by a callable script (answered with HTTP 400)
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._signed: dict[str, dict[str, Any]] = {}  # signature -> the thinking block as sent
        self._thought_before: dict[str, str] = {}  # tool_use id -> signature of the thinking in its reply
        self._paused: list[list[dict[str, Any]]] = []  # contents of pause_turn replies
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="fake-messages", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeMessagesServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    # ----- validation, as the real API does it --------------------------------
    def validate(self, body: dict[str, Any], route: str) -> str | None:
        """The API's complaint about ``body``, or None."""
        if route == "anthropic" and not body.get("model"):
            return "model: Field required"
        if route != "anthropic" and not body.get("anthropic_version"):  # Bedrock and Vertex take it in the body
            return "anthropic_version: Field required"
        if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1:
            return "max_tokens: Field required"
        budget = (body.get("thinking") or {}).get("budget_tokens")
        if budget is not None and budget >= body["max_tokens"]:
            return "`max_tokens` must be greater than `thinking.budget_tokens`"
        messages = body.get("messages") or []
        if not messages or messages[0].get("role") != "user":
            return "messages: the first message must use the \"user\" role"
        marks = sum("cache_control" in b for b in _blocks(body.get("tools")) + _blocks(body.get("system")))
        for i, m in enumerate(messages):
            content = m.get("content")
            if not content:
                return f"messages.{i}: all messages must have non-empty content except for the optional final " \
                       "assistant message"
            for j, b in enumerate(_blocks(content)):
                extra = set(b) - BLOCK_KEYS.get(b.get("type"), set(b))
                if extra:
                    return f"messages.{i}.content.{j}.{sorted(extra)[0]}: Extra inputs are not permitted"
                if "cache_control" in b:
                    marks += 1
                    if b.get("type") in ("thinking", "redacted_thinking"):
                        return f"messages.{i}.content.{j}: cache_control cannot be set on thinking blocks"
                if b.get("type") == "thinking" and self._signed.get(b.get("signature")) != b:
                    return f"messages.{i}.content.{j}: Invalid `signature` in `thinking` block"
            problem = self._tool_pairing(messages, i)
            if problem:
                return problem
        if marks > 4:
            return f"A maximum of 4 blocks with cache_control may be provided. Found {marks}."
        if messages[-1].get("role") == "assistant" and not self._continues_pause(messages[-1]):
            return "This model does not support assistant message prefill. The conversation must end with a user " \
                   "message."
        problem = self._thinking_kept(body, messages)
        if problem:
            return problem
        tokens = count_tokens(body)
        if tokens > self.context_window:
            return f"prompt is too long: {tokens} tokens > {self.context_window} maximum"
        return None

    def _tool_pairing(self, messages: list[dict[str, Any]], i: int) -> str | None:
        m = messages[i]
        if m.get("role") == "user":
            blocks = _blocks(m.get("content"))
            kinds = [b.get("type") == "tool_result" for b in blocks]
            if any(kinds) and kinds != sorted(kinds, reverse=True):
                return f"messages.{i}: `tool_result` blocks must come first in the user message"
            used = {b.get("id") for b in _blocks(messages[i - 1].get("content")) if b.get("type") == "tool_use"} \
                if i else set()
            for j, b in enumerate(blocks):
                if b.get("type") == "tool_result" and b.get("tool_use_id") not in used:
                    return (f"messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` blocks: "
                            f"{b.get('tool_use_id')}. Each `tool_result` block must have a corresponding `tool_use` "
                            "block in the previous message.")
            return None
        ids = [b.get("id") for b in _blocks(m.get("content")) if b.get("type") == "tool_use"]
        if not ids:
            return None
        after = messages[i + 1] if i + 1 < len(messages) else None
        answered = [b.get("tool_use_id") for b in _blocks(after.get("content"))] if after else []
        answered = answered[:len(ids)] if after and after.get("role") == "user" else []
        missing = [x for x in ids if x not in answered]
        if missing:
            return (f"messages.{i + 1}: `tool_use` ids were found without `tool_result` blocks immediately after: "
                    f"{', '.join(map(str, missing))}. Each `tool_use` block must have a corresponding `tool_result` "
                    "block in the next message.")
        return None

    def _continues_pause(self, last: dict[str, Any]) -> bool:
        content = _blocks(last.get("content"))
        return any(p and content[-len(p):] == p for p in self._paused)

    def _thinking_kept(self, body: dict[str, Any], messages: list[dict[str, Any]]) -> str | None:
        if (body.get("thinking") or {}).get("type") not in ("enabled", "adaptive"):
            return None
        assistants = [i for i, m in enumerate(messages) if m.get("role") == "assistant"]
        if not assistants:
            return None
        i = assistants[-1]
        blocks = _blocks(messages[i].get("content"))
        signatures = {b.get("signature") for b in blocks if b.get("type") == "thinking"}
        for b in blocks:
            wanted = self._thought_before.get(b.get("id")) if b.get("type") == "tool_use" else None
            if wanted and wanted not in signatures:
                return (f"messages.{i}.content.0: Expected `thinking` or `redacted_thinking`, but found "
                        "`tool_use`. When `thinking` is enabled, a final `assistant` message must start with a "
                        "thinking block.")
        return None

    # ----- answering ----------------------------------------------------------
    def _answer(self, req: Request) -> Reply:
        with self._lock:
            index = len(self.requests) - len(self.rejections)  # the script answers what passed validation
            self.requests.append(req)
            problem = self.validate(req.json, req.route)
            if problem is not None:
                self.rejections.append(problem)
                return error(400, problem)
            if callable(self.script):
                try:
                    r = self.script(req, index)
                except Exception as e:  # a broken script must fail the test, not hang it in retries
                    self.script_errors.append(e)
                    r = error(400, f"fake server: the script raised {type(e).__name__}: {e}")
            elif index < len(self.script):
                r = self.script[index]
            else:
                self.exhausted = True
                r = error(400, f"fake server: script exhausted after {len(self.script)} replies")
            if r.status == 200:
                r = self._complete(r, req)
        return r

    def _complete(self, r: Reply, req: Request) -> Reply:
        body = json.loads(json.dumps(r.body))  # a copy: scripts may reuse replies
        body.setdefault("id", f"msg_{len(self.requests):04d}")
        body.setdefault("model", req.json.get("model", "claude-test"))
        signature = None
        for block in body.get("content", []):
            if block.get("type") == "thinking":
                block["signature"] = block.get("signature") or f"sig_{next(self._ids):04d}"
                signature = block["signature"]
                self._signed[signature] = dict(block)
            if block.get("type") == "tool_use":
                block["id"] = block.get("id") or f"toolu_{next(self._ids):04d}"
                if signature:
                    self._thought_before[block["id"]] = signature
        if body.get("stop_reason") == "pause_turn":
            self._paused.append(body["content"])
        return Reply(r.status, body, r.headers, r.delay)

    def _route(self, path: str, payload: dict[str, Any]) -> tuple[str, str] | None:
        """``(route, kind)`` with kind messages, stream or count; or None for an unknown path."""
        if path == "/v1/messages":
            return "anthropic", "stream" if payload.get("stream") else "messages"
        if path == "/v1/messages/count_tokens":
            return ("anthropic", "count") if self.count_tokens_route else None
        if m := BEDROCK.match(path):
            payload["model"] = m.group(1)
            return "bedrock", "stream" if m.group(2) != "invoke" else "messages"
        if m := VERTEX.match(path):
            if m.group(1) == "count-tokens":
                return "vertex", "count"
            payload["model"] = m.group(1)
            return "vertex", "stream" if m.group(2) == "streamRawPredict" else "messages"
        return None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    payload = json.loads(raw or b"{}")
                except json.JSONDecodeError:
                    payload = {"_raw": raw.decode(errors="replace")}
                path = self.path.split("?")[0]
                found = server._route(path, payload)
                headers = {k.lower(): v for k, v in self.headers.items()}
                req = Request("POST", self.path, headers, payload, time.monotonic(), found[0] if found else "?")
                if found is None:
                    r = error(404, f"fake server: no route {self.path}")
                    with server._lock:
                        server.unrouted.append(req)
                elif found[1] == "count":
                    with server._lock:
                        server.counted.append(req)
                    r = Reply(200, {"input_tokens": count_tokens(payload)})
                else:
                    r = server._answer(req)
                if r.delay:
                    time.sleep(r.delay)
                stream = found is not None and found[1] == "stream" and r.status == 200
                data = _sse(r.body) if stream else json.dumps(r.body).encode()
                try:
                    self.send_response(r.status)
                    self.send_header("content-type", "text/event-stream" if stream else "application/json")
                    self.send_header("content-length", str(len(data)))
                    self.send_header("request-id", f"req_{len(server.requests):04d}")
                    for k, v in r.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                    pass

        return Handler


def _blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, list):
        return [b for b in content if isinstance(b, dict)]
    return [{"type": "text", "text": content}] if isinstance(content, str) else []


def _sse(body: dict[str, Any]) -> bytes:
    """A message as the Messages API streams it: server-sent events."""
    events: list[dict[str, Any]] = []
    start = {**body, "content": [], "stop_reason": None, "stop_details": None,
             "usage": {**body["usage"], "output_tokens": 1}}
    events.append({"type": "message_start", "message": start})
    for i, block in enumerate(body["content"]):
        if block["type"] == "text":
            events += [{"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}},
                       {"type": "content_block_delta", "index": i,
                        "delta": {"type": "text_delta", "text": block["text"]}}]
        elif block["type"] == "tool_use":
            events += [{"type": "content_block_start", "index": i,
                        "content_block": {**block, "input": {}}},
                       {"type": "content_block_delta", "index": i,
                        "delta": {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}}]
        elif block["type"] == "thinking":
            events += [{"type": "content_block_start", "index": i,
                        "content_block": {"type": "thinking", "thinking": "", "signature": ""}},
                       {"type": "content_block_delta", "index": i,
                        "delta": {"type": "thinking_delta", "thinking": block["thinking"]}},
                       {"type": "content_block_delta", "index": i,
                        "delta": {"type": "signature_delta", "signature": block["signature"]}}]
        events.append({"type": "content_block_stop", "index": i})
    events.append({"type": "message_delta", "delta": {"stop_reason": body["stop_reason"], "stop_sequence": None,
                                                      "stop_details": body.get("stop_details")},
                   "usage": {"output_tokens": body["usage"]["output_tokens"]}})
    events.append({"type": "message_stop"})
    return "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events).encode()


class SilentServer:
    """A socket that accepts connections and never answers (a hung endpoint).  Use as a context manager."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._conns: list[socket.socket] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}"

    def _accept(self) -> None:
        self._sock.settimeout(0.1)
        while not self._done.is_set():
            try:
                conn, _ = self._sock.accept()
                self._conns.append(conn)  # held open, never read or answered
            except OSError:
                continue

    def __enter__(self) -> SilentServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(2)
        for c in self._conns:
            c.close()
        self._sock.close()


def closed_port_url() -> str:
    """The URL of a loopback port where nothing listens (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"
