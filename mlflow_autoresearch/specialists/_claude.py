"""The Claude backend: one tool-use session on the ``anthropic`` SDK per proposal.

The model reads the parent's files and the lineage through tools, edits the
editable files by exact string replacement and submits a hypothesis.  Every
refusal (bad tool input, an edit that does not apply, a protected file, a
submit that is not ready) goes back to the model as an ``is_error`` tool
result in the same session.  A session ends when a submit is accepted, when
``max_turns`` model calls have been made, or when the model ends its turn
twice without submitting (it is nudged once); the last two give a
:class:`Proposal` with ``invalid_reason`` set.

Prompt caching: ``cache_control`` marks the tools and the system prompt (the
stable prefix: role brief, recipe, knowledge), and the newest user turn, so
each call re-reads the conversation so far from the cache.

Usage and dollars come from each response's ``usage`` and the price table;
``ctx.on_usage`` is called after every call with that call's usage (an
exception it raises ends the session and propagates).

Failures of the API: retried with backoff (:mod:`._retry`); past the retry
budget, :class:`~mlflow_autoresearch._errors.ModelUnavailable`.  Rejected
credentials or an unknown model raise :class:`UsageError`; any other refusal
(HTTP 400, e.g. a conversation grown too long) ends the proposal as invalid.

One :class:`ClaudeSpecialist` serves many threads at once: each
:meth:`~ClaudeSpecialist.propose` call has its own session state.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, replace
from typing import Any

import anthropic

from mlflow_autoresearch._errors import UsageError
from mlflow_autoresearch.specialists._base import Proposal, ProposalContext, Usage
from mlflow_autoresearch.specialists._edits import EditSession
from mlflow_autoresearch.specialists._pricing import PriceTable
from mlflow_autoresearch.specialists._prompting import first_turn, message, system_prompt, tool_specs
from mlflow_autoresearch.specialists._retry import RetryEvent, RetryPolicy, call_with_retries
from mlflow_autoresearch.specialists._tools import ToolBox
from mlflow_autoresearch.specialists._tracing import proposal_trace

logger = logging.getLogger(__name__)

EPHEMERAL = {"type": "ephemeral"}
LOCAL_SERVER_KEY = "no-key-for-local-server"
TRANSCRIPT_CHARS = 400_000  # the JSON transcript, at most
TRANSCRIPT_STRING = 20_000  # one string inside it, at first


class ClaudeSpecialist:
    """A specialist backed by Claude through the Messages API.  Thread-safe.

    Args:
        model: model id, e.g. ``claude-sonnet-5-5``.
        max_turns: model calls per proposal before it is given up as invalid.
        max_tokens: output tokens per call.
        base_url: an Anthropic-compatible server; default ``ANTHROPIC_BASE_URL``, then the SDK's.
        api_key: default: the SDK's resolution (``ANTHROPIC_API_KEY``, ``ANTHROPIC_AUTH_TOKEN``,
            profiles).  A ``base_url`` with no credentials at all sends a placeholder key.
        prices: overrides of the price table (see :class:`PriceTable`).
        retry: the retry policy; ``retry_seconds`` only sets its budget.
        request_timeout: seconds for one HTTP request (then it is retried as a timeout).
        tracing: trace model calls into MLflow when the store is an MLflow store.
        cache_turns: also mark the newest user turn for prompt caching (not only the prefix).

    Raises:
        UsageError: no credentials and no ``base_url``; a bad setting.
    """

    backend = "claude"

    def __init__(
        self,
        *,
        model: str = "claude-sonnet-5-5",
        max_turns: int = 24,
        max_tokens: int = 8000,
        base_url: str | None = None,
        api_key: str | None = None,
        prices: str | Mapping[str, Any] | PriceTable | None = None,
        retry: RetryPolicy | None = None,
        retry_seconds: float | None = None,
        request_timeout: float = 600.0,
        tracing: bool = True,
        cache_turns: bool = True,
    ) -> None:
        if max_turns < 1 or max_tokens < 1 or request_timeout <= 0:
            raise UsageError(f"claude: max_turns ({max_turns}), max_tokens ({max_tokens}) and request_timeout "
                             f"({request_timeout}) must be positive")
        self.model = model
        self.max_turns = max_turns
        self.max_tokens = max_tokens
        self.base_url = base_url or os.environ.get("ANTHROPIC_BASE_URL") or None
        self.prices = prices if isinstance(prices, PriceTable) else PriceTable(prices)
        self.retry = retry or RetryPolicy()
        if retry_seconds is not None:
            self.retry = replace(self.retry, budget_seconds=retry_seconds)
        self.tracing = tracing
        self.cache_turns = cache_turns
        self._stop = threading.Event()
        self.client = self._client(api_key, request_timeout)

    def _client(self, api_key: str | None, timeout: float) -> anthropic.Anthropic:
        try:
            client = anthropic.Anthropic(api_key=api_key, base_url=self.base_url, max_retries=0, timeout=timeout)
            if client.api_key or client.auth_token or client.credentials:
                return client
            problem = "none found"
        except anthropic.CredentialsError as e:  # e.g. a profile named but missing
            problem = str(e)
        if self.base_url:  # a local server usually wants no key; the SDK wants one to send
            return anthropic.Anthropic(api_key=LOCAL_SERVER_KEY, base_url=self.base_url, max_retries=0,
                                       timeout=timeout)
        raise UsageError(f"agent 'claude' needs Anthropic credentials ({problem}): set ANTHROPIC_API_KEY (or "
                         "ANTHROPIC_BASE_URL for a compatible local server), or use --agent offline")

    def close(self) -> None:
        """Stop waiting on retries (they raise ModelUnavailable) and close the HTTP client."""
        self._stop.set()
        self.client.close()

    def propose(self, ctx: ProposalContext) -> Proposal:
        """One tool-use session.  See the module docstring for how it ends.

        Raises:
            ModelUnavailable: the API stayed down past the retry budget.
            UsageError: credentials refused or model unknown.
        """
        with proposal_trace(ctx, self.tracing) as trace:
            proposal = _Session(self, ctx, trace.trace_id).run()
            trace.finish({"hypothesis": proposal.hypothesis, "invalid_reason": proposal.invalid_reason,
                          "usage": asdict(proposal.usage)})
        return proposal


class _Session:
    """The state of one proposal's conversation."""

    def __init__(self, owner: ClaudeSpecialist, ctx: ProposalContext, trace_id: str | None) -> None:
        self.o = owner
        self.ctx = ctx
        self.trace_id = trace_id
        self.edits = EditSession(ctx.recipe, ctx.parent_files)
        self.toolbox = ToolBox(ctx, self.edits)
        self.system = [{"type": "text", "text": system_prompt(ctx), "cache_control": EPHEMERAL}]
        self.tools = tool_specs()
        self.tools[-1]["cache_control"] = EPHEMERAL
        self.messages: list[dict[str, Any]] = [_user(first_turn(ctx))]
        self.usage = Usage()
        self.retries: list[RetryEvent] = []
        self.turns = 0
        self.started = time.monotonic()

    def run(self) -> Proposal:
        nudged = False
        while self.turns < self.o.max_turns:
            try:
                response = self._call()
            except anthropic.APIStatusError as e:
                return self._refused(e)
            blocks = [_block(b) for b in response.content]
            if blocks:  # the API refuses an empty assistant turn; consecutive user turns are merged
                self.messages.append({"role": "assistant", "content": blocks})
            uses = [b for b in blocks if b["type"] == "tool_use"]
            if uses:
                results = []
                for use in uses:
                    result = self.toolbox.run(use["name"], use["input"])
                    if self.toolbox.submission is not None:
                        return self._finish("submitted")
                    results.append({"type": "tool_result", "tool_use_id": use["id"], "content": result.text,
                                    **({"is_error": True} if result.is_error else {})})
                self.messages.append({"role": "user", "content": results})
            elif response.stop_reason == "max_tokens":
                self.messages.append(_user(message("nudge_max_tokens")))
            elif not nudged:
                nudged = True
                self.messages.append(_user(message("nudge_no_submit")))
            else:
                return self._finish("no submit", "the model ended its turn twice without submitting")
        return self._finish("max turns", f"max turns ({self.o.max_turns}) reached without a submit")

    def _call(self) -> Any:
        self.turns += 1
        if self.o.cache_turns:
            _mark_newest_turn(self.messages)
        request = {"model": self.o.model, "max_tokens": self.o.max_tokens, "system": self.system,
                   "tools": self.tools, "messages": self.messages}
        response = call_with_retries(lambda: self.o.client.messages.create(**request), self.o.retry,
                                     on_retry=self.retries.append, stop=self.o._stop)
        u = response.usage
        call = Usage(tokens_in=u.input_tokens or 0, tokens_out=u.output_tokens or 0,
                     cache_read=getattr(u, "cache_read_input_tokens", None) or 0,
                     cache_write=getattr(u, "cache_creation_input_tokens", None) or 0, calls=1)
        call = replace(call, cost_usd=self.o.prices.cost(self.o.model, call.tokens_in, call.tokens_out,
                                                         call.cache_read, call.cache_write))
        self.usage = self.usage + call
        if self.ctx.on_usage is not None:
            self.ctx.on_usage(call)
        return response

    def _refused(self, e: anthropic.APIStatusError) -> Proposal:
        detail = f"HTTP {e.status_code} {e.type or 'error'}: {e.api_message or e.message}"
        if e.status_code in (401, 403):
            raise UsageError(f"the model API refused the credentials ({detail}); check ANTHROPIC_API_KEY") from e
        if e.status_code == 404:
            raise UsageError(f"the model API does not know model {self.o.model!r} or this route ({detail}); "
                             "check --model and ANTHROPIC_BASE_URL") from e
        return self._finish("refused", f"the model API refused the request ({detail})")

    def _finish(self, stop: str, invalid: str | None = None) -> Proposal:
        sub = self.toolbox.submission
        proposal = Proposal(
            specialist=self.ctx.role.name,
            hypothesis=sub.hypothesis if sub else self.toolbox.last_hypothesis,
            files=self.edits.files,
            expected_effect=sub.expected_effect if sub else "",
            edits=tuple(self.edits.edits),
            knobs=sub.knobs if sub else (),
            backend=self.o.backend,
            usage=self.usage,
            transcript=self._transcript(stop, invalid),
            invalid_reason=invalid,
            trace_id=self.trace_id,
        )
        u = self.usage
        logger.info("claude %s on %s: %s after %d turn(s), %d retries; tokens in %d (+%d cache read, +%d cache "
                    "write), out %d; $%.4f", self.ctx.role.name, self.ctx.parent.short, invalid or "submitted",
                    self.turns, len(self.retries), u.tokens_in, u.cache_read, u.cache_write, u.tokens_out, u.cost_usd)
        return proposal

    def _transcript(self, stop: str, invalid: str | None) -> str:
        record = {
            "backend": self.o.backend, "model": self.o.model, "role": self.ctx.role.name,
            "parent": self.ctx.parent.run_id, "stop": stop, "invalid_reason": invalid, "turns": self.turns,
            "seconds": round(time.monotonic() - self.started, 3), "usage": asdict(self.usage),
            "retries": [asdict(r) for r in self.retries], "trace_id": self.trace_id,
            "system": self.system[0]["text"], "tools": [t["name"] for t in self.tools], "messages": self.messages,
        }
        return bounded_json(record)


def _user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": [{"type": "text", "text": text}]}


def _block(b: Any) -> dict[str, Any]:
    """A response content block as the dict we send back in the next request."""
    if b.type == "text":
        return {"type": "text", "text": b.text}
    if b.type == "tool_use":
        return {"type": "tool_use", "id": b.id, "name": b.name, "input": b.input}
    return b.model_dump(mode="json", exclude_none=True)  # thinking blocks and the like: back unchanged


def _mark_newest_turn(messages: list[dict[str, Any]]) -> None:
    """One moving cache breakpoint on the newest user turn (the API allows four in all)."""
    for m in messages:
        if m["role"] == "user" and isinstance(m["content"], list):
            for block in m["content"]:
                block.pop("cache_control", None)
    messages[-1]["content"][-1]["cache_control"] = EPHEMERAL


def bounded_json(record: dict[str, Any], limit: int = TRANSCRIPT_CHARS) -> str:
    """JSON of ``record`` in at most about ``limit`` characters: long strings are clipped, saying so."""
    for cap in (TRANSCRIPT_STRING, 2_000, 300):
        text = json.dumps(_clip(record, cap), indent=1, default=str)
        if len(text) <= limit:
            return text
    messages = record.get("messages", [])
    slim = {**record, "messages": messages[:1] + [{"omitted_messages": len(messages) - 5}] + messages[-4:]}
    return json.dumps(_clip(slim, 300), indent=1, default=str)[:limit]


def _clip(value: Any, cap: int) -> Any:
    if isinstance(value, str):
        return value if len(value) <= cap else value[:cap] + f"… [{len(value) - cap} characters clipped]"
    if isinstance(value, dict):
        return {k: _clip(v, cap) for k, v in value.items()}
    if isinstance(value, list):
        return [_clip(v, cap) for v in value]
    return value
