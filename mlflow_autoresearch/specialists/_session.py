"""One proposal's conversation with Claude: the tool loop and its stop reasons (see ``_claude``)."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any

import anthropic

from mlflow_autoresearch._errors import BackendError
from mlflow_autoresearch.specialists import _account as account
from mlflow_autoresearch.specialists._base import Proposal, ProposalContext, Usage
from mlflow_autoresearch.specialists._context import (
    ContextBudget,
    ContextTooLong,
    clear_tool_results,
    replace_in_first_turn,
    request_chars,
)
from mlflow_autoresearch.specialists._edits import EditSession
from mlflow_autoresearch.specialists._prompting import file_block, first_turn, message, system_prompt, tool_specs
from mlflow_autoresearch.specialists._retry import RetryEvent
from mlflow_autoresearch.specialists._tools import ToolBox

if TYPE_CHECKING:
    from mlflow_autoresearch.specialists._claude import ClaudeSpecialist

logger = logging.getLogger(__name__)

CUT_OFF = ("max_tokens", "model_context_window_exceeded")
MAX_CUT_OFFS = 2  # a third cut-off reply ends the proposal
CLIPPED_CODE_CHARS = 4000
TRANSCRIPT_CHARS = 400_000  # the JSON transcript, at most
TRANSCRIPT_STRING = 20_000  # one string inside it, at first


class Session:
    """The state of one proposal's conversation.  Not shared between threads."""

    def __init__(self, owner: ClaudeSpecialist, ctx: ProposalContext, trace_id: str | None) -> None:
        self.o, self.ctx, self.trace_id = owner, ctx, trace_id
        self.model = owner.model
        self.max_tokens = owner.max_tokens
        marker = owner.cache_marker()
        self.system = [{"type": "text", "text": system_prompt(ctx), "cache_control": marker}]
        self.tools = tool_specs()
        self.tools[-1]["cache_control"] = marker
        self.usage = Usage()
        self.retries: list[RetryEvent] = []
        self.events: list[dict[str, Any]] = []  # one per model call: stop reason, usage, what was done about it
        self.refusals: list[dict[str, Any]] = []
        self.refusal_reason: str | None = None
        self.turns = 0
        self.cut_offs = 0
        self.raised = False  # the output limit was raised once already
        self.too_long_retried = False
        self.first_turn_ok = False
        self.started = time.monotonic()
        self._start()

    def _start(self) -> None:
        """A fresh conversation on ``self.model`` (at the beginning, and after a fallback)."""
        self.edits = EditSession(self.ctx.recipe, self.ctx.parent_files)
        self.toolbox = ToolBox(self.ctx, self.edits)
        self.messages: list[dict[str, Any]] = [_user(first_turn(self.ctx))]
        counter = self.o.count_tokens if self.o.provider != "bedrock" else None  # Bedrock cannot count
        self.budget = ContextBudget(self.o.window(self.model), self.o.calibration, counter)
        self.note: dict[str, Any] | None = None
        self.lineage_text: str | None = None
        self.code_text: str | None = None
        self.request: dict[str, Any] = {}

    # ----- the loop -----------------------------------------------------------
    def run(self) -> Proposal:
        nudged = False
        while self.turns < self.o.max_turns:
            try:
                response = self._call()
            except ContextTooLong as e:
                return self._too_long(e)
            except anthropic.APIStatusError as e:
                ended = self._api_error(e)
                if ended is None:
                    continue
                return ended
            stop = response.stop_reason
            blocks = [_block(b) for b in response.content]
            if stop == "refusal":
                ended = self._refusal(response)
                if ended is None:
                    nudged = False
                    continue
                return ended
            if stop in CUT_OFF:
                ended = self._cut_off(stop, blocks)
                if ended is not None:
                    return ended
                continue
            self._append_assistant(blocks)
            if stop == "pause_turn":  # sent back as it is: the model continues its own turn
                continue
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
            elif not nudged:
                nudged = True
                self.messages.append(_user(message("nudge_no_submit")))
            else:
                return self._finish("no submit", "the model ended its turn twice without submitting")
        return self._finish("max turns", f"max turns ({self.o.max_turns}) reached without a submit")

    def _call(self) -> Any:
        if self.o.cache_turns:
            _mark_newest_turn(self.messages, self.o.cache_marker())
        self.request = request = {"model": self.model, "max_tokens": self.max_tokens, "system": self.system,
                                  "tools": self.tools, "messages": self.messages, **self.o.extras()}
        estimated = self.budget.fit(request, self._shrinkers())
        self.turns += 1
        response = self.o.create(request, on_retry=self.retries.append)
        self.first_turn_ok = True
        u = response.usage
        read = getattr(u, "cache_read_input_tokens", None) or 0
        write = getattr(u, "cache_creation_input_tokens", None) or 0
        split = getattr(u, "cache_creation", None)
        if split is not None:
            w5, w1 = split.ephemeral_5m_input_tokens or 0, split.ephemeral_1h_input_tokens or 0
        else:
            w5, w1 = (0, write) if self.o.cache_ttl == "1h" else (write, 0)
        call = Usage(tokens_in=u.input_tokens or 0, tokens_out=u.output_tokens or 0, cache_read=read,
                     cache_write=write, calls=1)
        call = replace(call, cost_usd=self.o.prices.cost(self.model, call.tokens_in, call.tokens_out, read, w5, w1))
        self.usage = self.usage + call
        self.o.calibration.observe(request_chars(request), call.tokens_in + read + write)
        event: dict[str, Any] = {"turn": self.turns, "model": self.model, "stop_reason": response.stop_reason,
                                 "max_tokens": self.max_tokens, "prompt_tokens_estimated": estimated,
                                 "usage": {"in": call.tokens_in, "out": call.tokens_out, "cache_read": read,
                                           "cache_write": write}}
        details = getattr(response, "stop_details", None)
        if details is not None:
            event["stop_details"] = details.model_dump(mode="json", exclude_none=True)
        self.events.append(event)
        if self.ctx.on_usage is not None:
            self.ctx.on_usage(call)
        return response

    # ----- stop reasons -------------------------------------------------------
    def _append_assistant(self, blocks: list[dict[str, Any]]) -> None:
        if not blocks:  # the API refuses an empty assistant turn
            return
        if self.messages[-1]["role"] == "assistant":  # the continuation of a paused turn
            self.messages[-1]["content"].extend(blocks)
        else:
            self.messages.append({"role": "assistant", "content": blocks})

    def _cut_off(self, stop: str, blocks: list[dict[str, Any]]) -> Proposal | None:
        """A reply cut off by a limit: nothing in it runs; the model is told and asked again."""
        self.cut_offs += 1
        event = self.events[-1]
        event["discarded"] = blocks  # kept for the transcript, never sent back
        limit = self.max_tokens
        if self.cut_offs > MAX_CUT_OFFS:
            if stop == "max_tokens":
                why = (f"the reply was cut off at the output limit ({limit:,} tokens, thinking included) "
                       f"{self.cut_offs} times; no tool call in it was run. Raise --max-tokens, or lower --effort "
                       "or the --thinking budget")
            else:
                why = (f"the reply filled the model's context window {self.cut_offs} times; no tool call in it "
                       "was run. Use a model with a larger window or lower --max-tokens")
            return self._finish("cut off", why)
        if stop == "max_tokens":
            raised = min(limit * 2, self.o.max_output(self.model))
            if not self.raised and raised > limit:
                self.raised = True
                self.max_tokens = raised
                event["raised_max_tokens_to"] = raised
            text = message("nudge_cut_off", limit=limit)
        else:
            clear_tool_results(self.messages, 1, self._cleared)
            text = message("nudge_context_full")
        self._set_note(text)
        return None

    def _refusal(self, response: Any) -> Proposal | None:
        details = getattr(response, "stop_details", None)
        category = getattr(details, "category", None)
        explanation = getattr(details, "explanation", None)
        self.refusals.append({"model": self.model, "category": category, "explanation": explanation})
        reason = f"the model {self.model} refused (stop_reason refusal, category {category or 'none'})"
        reason += f": {explanation}" if explanation else ""
        fallback = self.o.fallback_model
        if fallback and self.model != fallback:
            logger.warning("%s; starting the proposal over on the fallback model %s", reason, fallback)
            self.model = fallback
            self._start()
            return None
        self.refusal_reason = reason
        if len(self.refusals) > 1:
            reason += f" (after {self.refusals[0]['model']} refused too)"
        return self._finish("refusal", reason + "; the conversation ended at once")

    def _api_error(self, e: anthropic.APIStatusError) -> Proposal | None:
        """An HTTP refusal: the account's (raise), too long (shrink and retry once), or this proposal's."""
        problem = self.o.account_error(e, self.model)
        if problem is not None:
            raise problem from e
        detail = account.detail(e)
        first = not any(m["role"] == "assistant" for m in self.messages)
        if account.is_too_long(e):
            counted = account.counted_tokens(e)
            if counted:  # the server's own count: calibrate, and learn the window
                self.o.calibration.observe(request_chars(self.request), counted[0], exact=True)
                self.budget.window = min(self.budget.window, counted[1])
            if not self.too_long_retried:
                self.too_long_retried = True
                return None
            if first:
                raise BackendError(f"the first turn of every proposal is too long for {self.model} ({detail})",
                                   "use a model with a larger context window, lower --max-tokens, or shorten the "
                                   "recipe's editable files and knowledge notes") from e
            return self._finish("too long", f"the conversation outgrew the context window ({detail})")
        if first and e.status_code == 400:
            self.o.first_turn_error(detail)
        return self._finish("refused", f"the model API refused the request ({detail})")

    def _too_long(self, e: ContextTooLong) -> Proposal:
        if len(self.messages) == 1:
            raise BackendError(
                f"the first turn of a proposal needs about {e.tokens:,} tokens but {self.model} leaves {e.limit:,} "
                f"for the prompt (window {self.budget.window:,}, --max-tokens {self.max_tokens:,})",
                "use a model with a larger context window, lower --max-tokens, or shorten the recipe's editable "
                "files and knowledge notes")
        return self._finish("too long", f"the conversation outgrew the context window ({e}); nothing was sent")

    # ----- fitting the window -------------------------------------------------
    def _cleared(self, chars: int) -> str:
        return message("tool_result_cleared", chars=chars)

    def _shrinkers(self) -> list[tuple[str, Any]]:
        return [
            ("cleared older tool results", lambda: clear_tool_results(self.messages, 2, self._cleared)),
            ("cleared all but the newest tool results", lambda: clear_tool_results(self.messages, 1, self._cleared)),
            ("shortened the lineage views", self._shorten_lineage),
            ("dropped the lineage views", self._drop_lineage),
            ("clipped the inlined code", self._clip_code),
        ]

    def _swap_lineage(self, new: str) -> bool:
        if self.lineage_text is None:
            self.lineage_text = self.ctx.lineage.render(self.ctx.role.name)
        if replace_in_first_turn(self.messages, self.lineage_text, new):
            self.lineage_text = new
            return True
        return False

    def _shorten_lineage(self) -> bool:
        lin = self.ctx.lineage
        return self._swap_lineage("\n\n".join([lin.leaderboard(), lin.near_misses(), message("lineage_dropped")]))

    def _drop_lineage(self) -> bool:
        return self._swap_lineage(message("lineage_dropped"))

    def _clip_code(self) -> bool:
        editable = [rel for rel in self.ctx.recipe.editable if rel in self.ctx.parent_files]

        def code(**limit: int) -> str:
            return "\n".join(file_block(rel, self.ctx.parent_files[rel].decode(errors="replace"), **limit)
                             for rel in editable)

        if self.code_text is not None:  # clipped already
            return False
        self.code_text = code(limit=CLIPPED_CODE_CHARS)
        return replace_in_first_turn(self.messages, code(), self.code_text)

    def _set_note(self, text: str) -> None:
        """Tell the model about a discarded reply, in the user turn it answers (one note, replaced)."""
        last = self.messages[-1]
        if last["role"] == "assistant":
            self.note = {"type": "text", "text": text}
            self.messages.append({"role": "user", "content": [self.note]})
            return
        if self.note is not None and any(b is self.note for b in last["content"]):
            last["content"] = [b for b in last["content"] if b is not self.note]
        self.note = {"type": "text", "text": text}
        last["content"].append(self.note)

    # ----- the end ------------------------------------------------------------
    def _finish(self, stop: str, invalid: str | None = None) -> Proposal:
        self.o.proposal_ended(self.refusal_reason, self.first_turn_ok)
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
            "backend": self.o.backend, "model": self.model, "provider": self.o.provider, "role": self.ctx.role.name,
            "parent": self.ctx.parent.run_id, "stop": stop, "invalid_reason": invalid, "turns": self.turns,
            "seconds": round(time.monotonic() - self.started, 3), "usage": asdict(self.usage),
            "stop_reasons": [e["stop_reason"] for e in self.events], "events": self.events,
            "refusals": self.refusals, "context": {"window": self.budget.window, "shrunk": self.budget.shrunk,
                                                   "last_prompt_tokens": self.budget.last_tokens},
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


def _mark_newest_turn(messages: list[dict[str, Any]], marker: dict[str, str]) -> None:
    """One moving cache breakpoint on the newest user turn (the API allows four in all)."""
    users = [m for m in messages if m["role"] == "user" and isinstance(m["content"], list)]
    for m in users:
        for block in m["content"]:
            block.pop("cache_control", None)
    users[-1]["content"][-1]["cache_control"] = dict(marker)


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
