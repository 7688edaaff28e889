"""A real HTTP server on 127.0.0.1 that speaks enough of the Anthropic Messages API for the SDK.

This is the only fake in the specialist tests: it stands in for the model's
judgement.  Everything between the specialist and this server is real (the
``anthropic`` SDK, its HTTP client, JSON over a TCP socket).

A server is driven by a *script*: either a list of :class:`Reply` objects
answered in order, or a callable ``script(request, index) -> Reply`` that sees
each request (so a scripted model can react to the tool results it gets, e.g.
correct an edit after an error).  Every request is recorded (headers and JSON)
for assertions.  Deterministic: tool-use ids are numbered per server.

Usage::

    with FakeMessagesServer([reply(tool_use("read_file", {"path": "train.py"})), ...]) as server:
        client = anthropic.Anthropic(base_url=server.url, api_key="test")
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
               429: "rate_limit_error", 500: "api_error", 503: "api_error", 529: "overloaded_error"}


@dataclass(frozen=True)
class Request:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    json: dict[str, Any]
    at: float  # time.monotonic() on arrival

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
        content = self.messages[-1].get("content") if self.messages else ""
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


def tool_use(name: str, input: Any, id: str | None = None) -> dict[str, Any]:
    """A tool_use block; ``id`` is filled in by the server when omitted."""
    return {"type": "tool_use", "id": id, "name": name, "input": input}


def reply(*blocks: dict[str, Any], stop_reason: str | None = None, input_tokens: int = 100,
          output_tokens: int = 20, cache_read: int = 0, cache_write: int = 0, delay: float = 0.0) -> Reply:
    """A successful message.  ``stop_reason`` defaults to tool_use when a block uses a tool, else end_turn."""
    if stop_reason is None:
        stop_reason = "tool_use" if any(b["type"] == "tool_use" for b in blocks) else "end_turn"
    body = {
        "type": "message", "role": "assistant", "content": list(blocks), "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens,
                  "cache_read_input_tokens": cache_read, "cache_creation_input_tokens": cache_write},
    }
    return Reply(200, body, delay=delay)


def error(status: int, message: str = "", retry_after: float | None = None, delay: float = 0.0) -> Reply:
    """An API error with the Messages API's error body and, optionally, a retry-after header (seconds)."""
    etype = ERROR_TYPES.get(status, "api_error")
    headers = {"retry-after": f"{retry_after:g}"} if retry_after is not None else {}
    body = {"type": "error", "error": {"type": etype, "message": message or etype.replace("_", " ")}}
    return Reply(status, body, headers, delay)


Script = Sequence[Reply] | Callable[[Request, int], Reply]


class FakeMessagesServer:
    """A threaded HTTP server on a free loopback port.  Use as a context manager."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.requests: list[Request] = []
        self.exhausted = False  # a request arrived after the last scripted reply
        self.script_errors: list[Exception] = []  # raised by a callable script (answered with HTTP 400)
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
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

    # ----- answering --------------------------------------------------------
    def _answer(self, req: Request) -> Reply:
        with self._lock:
            index = len(self.requests)
            self.requests.append(req)
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
        for block in body.get("content", []):
            if block.get("type") == "tool_use" and not block.get("id"):
                block["id"] = f"toolu_{next(self._ids):04d}"
        return Reply(r.status, body, r.headers, r.delay)

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
                req = Request("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, payload,
                              time.monotonic())
                if self.path.split("?")[0] != "/v1/messages":
                    r = error(404, f"fake server: no route {self.path}")
                    with server._lock:
                        server.requests.append(req)
                else:
                    r = server._answer(req)
                if r.delay:
                    time.sleep(r.delay)
                data = json.dumps(r.body).encode()
                try:
                    self.send_response(r.status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    self.send_header("request-id", f"req_{len(server.requests):04d}")
                    for k, v in r.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                    pass

        return Handler
