"""The Claude backend: one tool-use session on the ``anthropic`` SDK per proposal.

The model reads the parent's files and the lineage through tools, edits the
editable files by exact string replacement and submits a hypothesis.  Every
refusal of a tool call (bad input, an edit that does not apply, a protected
file, a submit that is not ready) goes back to the model as an ``is_error``
tool result in the same session.

Every stop reason is handled as the Messages API documents it:

- ``tool_use`` / ``end_turn``: tools are run; a turn without a submit is
  nudged once, and a second one ends the proposal as invalid.
- ``max_tokens`` and ``model_context_window_exceeded``: the reply is cut off,
  so **no tool call in it is run** (a cut-off ``submit`` would lose its
  knobs, a cut-off edit its text).  The reply is dropped from the
  conversation, the model is told, and the same turn is asked again; for
  ``max_tokens`` the output limit is raised once (to twice the setting, up to
  the model's maximum), for a full window older tool results are cleared.
  A third cut-off ends the proposal as invalid, saying which limit to raise.
- ``pause_turn``: the paused assistant content is sent back unchanged and the
  model continues its turn.
- ``refusal``: the conversation ends at once.  Its ``stop_details``
  (category, explanation) go into the proposal's invalid reason and the
  transcript.  With a ``fallback_model`` the proposal starts over on that
  model; ``refusals_to_stop`` refused proposals in a row stop the loop.

Before each call the request is fitted into the model's context window with
room for the answer (:mod:`._context`).  Account-level refusals of the API
(credentials, permission, billing, spend limit, unknown model, the same 400
on every first turn, an endpoint that has never answered) raise
:class:`~mlflow_autoresearch._errors.BackendError`: the loop stops with exit
code 2 (:mod:`._account`).  Transient failures are retried (:mod:`._retry`),
past the retry budget :class:`~mlflow_autoresearch._errors.ModelUnavailable`.

Prompt caching: ``cache_control`` marks the tools, the system prompt and the
newest user turn (three of the four breakpoints the API allows), with the
configured lifetime.  Usage and dollars come from each response's ``usage``
and the price table; ``ctx.on_usage`` is called after every call.

One :class:`ClaudeSpecialist` serves many threads at once: each
:meth:`~ClaudeSpecialist.propose` call has its own session state.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, replace
from typing import Any

import anthropic

from mlflow_autoresearch._errors import BackendError, ModelUnavailable, UsageError
from mlflow_autoresearch.specialists import _account as account
from mlflow_autoresearch.specialists._base import Proposal, ProposalContext
from mlflow_autoresearch.specialists._context import DEFAULT_WINDOW, Calibration
from mlflow_autoresearch.specialists._pricing import PriceTable
from mlflow_autoresearch.specialists._prompting import message
from mlflow_autoresearch.specialists._providers import endpoint, make_client, provider_model, resolve_provider
from mlflow_autoresearch.specialists._retry import RetryPolicy, call_with_retries
from mlflow_autoresearch.specialists._session import Session, bounded_json
from mlflow_autoresearch.specialists._tracing import proposal_trace

logger = logging.getLogger(__name__)

THINKING = ("auto", "off", "adaptive")  # or a budget in tokens
EFFORTS = ("low", "medium", "high", "xhigh", "max")
CACHE_TTLS = ("5m", "1h")
STREAM_ABOVE = 16_000  # output tokens above which a call streams (the SDK refuses long non-streaming calls)
CHECK_SECONDS = 60.0  # the most the backend check keeps retrying
SAME_FIRST_TURN_ERRORS = 3

__all__ = ["ClaudeSpecialist", "bounded_json"]


class ClaudeSpecialist:
    """A specialist backed by Claude through the Messages API.  Thread-safe.

    Args:
        model: model id, e.g. ``claude-sonnet-5-5`` (Bedrock: ``anthropic.`` is prefixed when missing).
        fallback_model: a model to start a proposal over on when ``model`` refuses it.
        max_turns: model calls per proposal before it is given up as invalid.
        max_tokens: output tokens per call (thinking included); raised once, to twice this, on a cut-off.
        thinking: ``auto`` (the model's default), ``off``, ``adaptive``, or a budget in tokens (>= 1024).
        effort: ``low`` … ``max`` (``output_config.effort``), or None for the model's default.
        cache_ttl: prompt-cache lifetime, ``5m`` or ``1h`` (1-hour writes cost more, see the price table).
        provider: ``auto``, ``anthropic``, ``bedrock``, ``vertex`` or ``foundry`` (see :mod:`._providers`).
        base_url: an Anthropic-compatible server (or the provider's endpoint); default ``ANTHROPIC_BASE_URL``.
        api_key: default: the SDK's resolution.  A ``base_url`` with no credentials sends a placeholder key.
        provider_options: extra keyword arguments for the SDK client (e.g. ``aws_region``, ``access_token``).
        prices: overrides of the price table (see :class:`PriceTable`).
        retry: the retry policy; ``retry_seconds`` only sets its budget.
        request_timeout: seconds for one HTTP request to answer (then it is retried as a timeout).
        connect_timeout: seconds to open the connection (short: a wrong address fails fast).
        tracing: trace model calls into MLflow when the store is an MLflow store.
        cache_turns: also mark the newest user turn for prompt caching (not only the prefix).
        refusals_to_stop: refused proposals in a row after which :meth:`propose` raises BackendError.
        context_window: the model's window in tokens [default: from the price table, else 200,000].

    Raises:
        UsageError: no credentials and no ``base_url``; a bad setting.
    """

    backend = "claude"

    def __init__(
        self,
        *,
        model: str = "claude-sonnet-5-5",
        fallback_model: str | None = None,
        max_turns: int = 24,
        max_tokens: int = 16_000,
        thinking: str | int = "auto",
        effort: str | None = None,
        cache_ttl: str = "5m",
        provider: str = "auto",
        base_url: str | None = None,
        api_key: str | None = None,
        provider_options: Mapping[str, Any] | None = None,
        prices: str | Mapping[str, Any] | PriceTable | None = None,
        retry: RetryPolicy | None = None,
        retry_seconds: float | None = None,
        request_timeout: float = 600.0,
        connect_timeout: float = 10.0,
        tracing: bool = True,
        cache_turns: bool = True,
        refusals_to_stop: int = 3,
        context_window: int | None = None,
    ) -> None:
        if max_turns < 1 or max_tokens < 1 or request_timeout <= 0 or connect_timeout <= 0 or refusals_to_stop < 1:
            raise UsageError(f"claude: max_turns ({max_turns}), max_tokens ({max_tokens}), request_timeout "
                             f"({request_timeout}), connect_timeout ({connect_timeout}) and refusals_to_stop "
                             f"({refusals_to_stop}) must be positive")
        self.thinking = _thinking(thinking, max_tokens)
        if effort is not None and effort not in EFFORTS:
            raise UsageError(f"--effort {effort!r}: expected one of {', '.join(EFFORTS)}")
        if cache_ttl not in CACHE_TTLS:
            raise UsageError(f"--cache-ttl {cache_ttl!r}: expected 5m or 1h")
        self.base_url = base_url or os.environ.get("ANTHROPIC_BASE_URL") or None
        self.provider = resolve_provider(provider, self.base_url)
        self.model = provider_model(self.provider, model)
        self.fallback_model = provider_model(self.provider, fallback_model) if fallback_model else None
        self.max_turns, self.max_tokens, self.effort, self.cache_ttl = max_turns, max_tokens, effort, cache_ttl
        self.prices = prices if isinstance(prices, PriceTable) else PriceTable(prices)
        self.retry = retry or RetryPolicy()
        if retry_seconds is not None:
            self.retry = replace(self.retry, budget_seconds=retry_seconds)
        self.tracing, self.cache_turns, self.refusals_to_stop = tracing, cache_turns, refusals_to_stop
        self.context_window = context_window
        self.calibration = Calibration()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._answered = False  # the endpoint has answered at least once (any HTTP status)
        self._refusals: list[str] = []  # refused proposals in a row (their reasons)
        self._first_turn_errors: list[str] = []  # the same 400 on first turns, in a row
        timeout = anthropic.Timeout(request_timeout, connect=min(connect_timeout, request_timeout))
        # The check's one-line answer comes quickly or not at all: a hung endpoint must not hold it for long.
        self._check_timeout = anthropic.Timeout(min(request_timeout, CHECK_SECONDS / 2),
                                                connect=min(connect_timeout, request_timeout))
        self.client = make_client(self.provider, base_url=self.base_url, api_key=api_key, timeout=timeout,
                                  options=dict(provider_options or {}))
        self.endpoint = endpoint(self.client)

    # ----- what a session asks of its owner -----------------------------------
    def window(self, model: str) -> int:
        price = self.prices.price(model)
        return self.context_window or (price.context_window if price and price.context_window else DEFAULT_WINDOW)

    def max_output(self, model: str) -> int:
        price = self.prices.price(model)
        return price.max_output if price and price.max_output else 64_000

    def extras(self) -> dict[str, Any]:
        """Request fields for thinking and effort (none when left to the model)."""
        out: dict[str, Any] = {}
        if self.thinking is not None:
            out["thinking"] = self.thinking
        if self.effort:
            out["output_config"] = {"effort": self.effort}
        return out

    def cache_marker(self) -> dict[str, str]:
        return {"type": "ephemeral", "ttl": "1h"} if self.cache_ttl == "1h" else {"type": "ephemeral"}

    def create(self, request: dict[str, Any], on_retry=None) -> Any:
        """One call with retries: streamed when the answer may be long."""
        def once() -> Any:
            if request["max_tokens"] > STREAM_ABOVE and self.provider != "bedrock":
                with self.client.messages.stream(**request) as stream:
                    return stream.get_final_message()
            return self.client.messages.create(**request)

        try:
            response = call_with_retries(once, self.retry, on_retry=on_retry, stop=self._stop)
        except ModelUnavailable as e:
            self._never_answered(e)
            raise
        except anthropic.APIStatusError:
            self._answered = True
            raise
        self._answered = True
        return response

    def count_tokens(self, request: dict[str, Any]) -> int:
        fields = {k: request[k] for k in ("model", "system", "tools", "messages", "thinking") if k in request}
        return self.client.messages.count_tokens(**fields, timeout=self._check_timeout).input_tokens

    def account_error(self, e: anthropic.APIStatusError, model: str) -> BackendError | None:
        return account.account_problem(e, model=model, provider=self.provider, endpoint=self.endpoint)

    def _never_answered(self, e: ModelUnavailable) -> None:
        if not e.answered and not self._answered:
            raise BackendError(
                f"the model endpoint {self.endpoint or self.provider} has never answered ({e})",
                "check that the server runs and the address is right (ANTHROPIC_BASE_URL, --anthropic-base-url, "
                "--provider), and the network or proxy between; --connect-timeout sets how long a connection "
                "may take") from e

    def first_turn_error(self, detail: str) -> None:
        """The same 400 on first turns ``SAME_FIRST_TURN_ERRORS`` times in a row is the setup's fault."""
        with self._lock:
            if self._first_turn_errors and self._first_turn_errors[-1] != detail:
                self._first_turn_errors.clear()
            self._first_turn_errors.append(detail)
            repeated = len(self._first_turn_errors) >= SAME_FIRST_TURN_ERRORS
        if repeated:
            raise BackendError(f"every proposal's first request was refused the same way ({detail})",
                               "check --model, --thinking, --effort and --max-tokens against the model's "
                               "documentation, and the recipe's knowledge notes for size")

    def proposal_ended(self, refusal: str | None, first_turn_ok: bool) -> None:
        with self._lock:
            if refusal is None:
                self._refusals.clear()
            else:
                self._refusals.append(refusal)
            if first_turn_ok:
                self._first_turn_errors.clear()

    # ----- the public face -----------------------------------------------------
    def close(self) -> None:
        """Stop waiting on retries (they raise ModelUnavailable) and close the HTTP client."""
        self._stop.set()
        self.client.close()

    def check(self, dollars: float | None = None) -> str:
        """Check the endpoint, the credentials and the model with a one-line request; a summary line.

        Also refuses a dollar budget for a model without a price.

        Raises:
            BackendError: what the loop would run into on its first proposal, with the fix.
        """
        for model in filter(None, (self.model, self.fallback_model)):
            if dollars and not self.prices.knows(model):
                raise BackendError(
                    f"--dollars {dollars:g} is set but the price table (checked {self.prices.as_of}) has no price "
                    f"for model {model!r}, so the budget could not see its spend",
                    f"give its prices, e.g. --prices '{{\"{model}\": [3, 15]}}' (USD per million tokens in, out), "
                    "or drop --dollars")
        request = {"model": self.model, "max_tokens": 32, "messages": [
            {"role": "user", "content": [{"type": "text", "text": message("check")}]}]}
        if isinstance(self.thinking, dict) and self.thinking.get("type") != "enabled":
            request["thinking"] = self.thinking  # a manual budget cannot fit 32 tokens; the rest is checked
        if self.effort:
            request["output_config"] = {"effort": self.effort}
        t0 = time.monotonic()
        budget = replace(self.retry, budget_seconds=min(self.retry.budget_seconds, CHECK_SECONDS))
        try:
            response = call_with_retries(lambda: self.client.messages.create(**request, timeout=self._check_timeout),
                                         budget, stop=self._stop)
        except anthropic.APIStatusError as e:
            self._answered = True
            problem = self.account_error(e, self.model)
            if problem is None:
                problem = BackendError(f"the model API refused a one-line test request ({account.detail(e)})",
                                       "check --model, --thinking, --effort and --max-tokens against the model's "
                                       "documentation")
            raise problem from e
        except ModelUnavailable as e:
            self._never_answered(e)
            logger.warning("model API check: %s; the loop goes on and retries", e)
            return f"{self.model} via {self.provider} at {self.endpoint}: not available now ({e})"
        self._answered = True
        u = response.usage
        cost = self.prices.cost(self.model, u.input_tokens or 0, u.output_tokens or 0)
        return (f"{self.model} via {self.provider} at {self.endpoint} answered in {time.monotonic() - t0:.1f} s "
                f"(${cost:.4f})")

    def propose(self, ctx: ProposalContext) -> Proposal:
        """One tool-use session.  See the module docstring for how it ends.

        Raises:
            ModelUnavailable: the API stayed down past the retry budget.
            BackendError: credentials, billing, model or endpoint refused; or refusals in a row.
        """
        with self._lock:
            refusals = list(self._refusals)
        if len(refusals) >= self.refusals_to_stop:
            raise BackendError(
                f"the model refused {len(refusals)} proposals in a row; last: {refusals[-1]}",
                "set --fallback-model to a model that accepts this work, reword the recipe's description, knowledge "
                "notes or steering note, or use --agent offline")
        with proposal_trace(ctx, self.tracing) as trace:
            session = Session(self, ctx, trace.trace_id)
            proposal = session.run()
            trace.finish({"hypothesis": proposal.hypothesis, "invalid_reason": proposal.invalid_reason,
                          "usage": asdict(proposal.usage), "model": session.model,
                          "stop_reasons": [e["stop_reason"] for e in session.events], "refusals": session.refusals})
        return proposal


def _thinking(value: str | int, max_tokens: int) -> dict[str, Any] | None:
    text = str(value).strip().lower()
    if text == "auto":
        return None
    if text == "off":
        return {"type": "disabled"}
    if text == "adaptive":
        return {"type": "adaptive"}
    try:
        budget = int(text)
    except ValueError:
        raise UsageError(f"--thinking {value!r}: expected auto, off, adaptive or a budget in tokens") from None
    if not 1024 <= budget < max_tokens:
        raise UsageError(f"--thinking {budget}: a thinking budget must be at least 1024 and below --max-tokens "
                         f"({max_tokens}), since thinking counts against it")
    return {"type": "enabled", "budget_tokens": budget}
