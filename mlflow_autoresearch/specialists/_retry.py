"""Retrying model API calls: exponential backoff with jitter, ``retry-after`` honoured, a time budget.

The SDK's own retries are off (``max_retries=0``) so that every retry is
decided and logged here.  Retried: HTTP 408, 409, 429, every 5xx (529
overloaded included), timeouts and connection failures.  Anything else is
re-raised at once.  When the next wait would end past the budget, the call
gives up with :class:`~mlflow_autoresearch._errors.ModelUnavailable`, so the
loop can pause and try again later instead of crashing.

A ``retry-after`` of 0 (or less, or unreadable) is no hint: the computed
backoff applies, as in the SDK's own retry logic, so a server that says "0"
is not hammered in a tight loop.
"""

from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import anthropic

from mlflow_autoresearch._errors import ModelUnavailable

logger = logging.getLogger(__name__)
T = TypeVar("T")
RETRY_STATUS = frozenset({408, 409, 429})


@dataclass(frozen=True)
class RetryPolicy:
    """How long to keep trying one call.

    ``budget_seconds``: the most time one call may spend waiting between
    attempts (from its first failure) before :class:`ModelUnavailable`.
    Waits grow as ``base_seconds * 2**n`` up to ``max_seconds``, each scaled
    by a random factor in [0.5, 1] (jitter, so that threads spread out); a
    server's ``retry-after`` replaces the computed wait.
    """

    budget_seconds: float = 300.0
    base_seconds: float = 1.0
    max_seconds: float = 60.0

    def backoff(self, attempt: int) -> float:
        return min(self.max_seconds, self.base_seconds * 2**attempt) * random.uniform(0.5, 1.0)


@dataclass(frozen=True)
class RetryEvent:
    """One failed attempt that was retried (or the one that exhausted the budget)."""

    attempt: int
    problem: str  # e.g. "HTTP 529 overloaded_error: Overloaded" or "timeout"
    status: int | None
    wait_seconds: float
    retry_after: float | None


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Positive seconds from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date), else ``None``."""
    try:
        if (ms := headers.get("retry-after-ms")) is not None and float(ms) > 0:
            return float(ms) / 1000
    except ValueError:
        pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            parsed = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = parsed.timestamp() - time.time()
    return seconds if seconds > 0 else None


def classify(e: BaseException) -> tuple[str, int | None, float | None] | None:
    """``(problem, status, retry_after)`` when ``e`` is worth retrying, else ``None``."""
    if isinstance(e, anthropic.APIStatusError):
        status = e.status_code
        if e.response.headers.get("x-should-retry") == "false":
            return None
        if status in RETRY_STATUS or status >= 500:
            detail = f"HTTP {status} {e.type or 'error'}" + (f": {e.api_message}" if e.api_message else "")
            return detail, status, retry_after(e.response.headers)
        return None
    if isinstance(e, anthropic.APITimeoutError):
        return "timeout", None, None
    if isinstance(e, anthropic.APIConnectionError):
        return f"connection failed ({e.__cause__ or e})", None, None
    return None


def call_with_retries(
    fn: Callable[[], T],
    policy: RetryPolicy,
    *,
    on_retry: Callable[[RetryEvent], None] | None = None,
    stop: threading.Event | None = None,
) -> T:
    """Call ``fn`` until it returns, retrying what :func:`classify` accepts.

    Raises:
        ModelUnavailable: the budget would be exceeded by the next wait, or ``stop`` was set while waiting.
        anthropic.APIError: a failure that is not worth retrying, unchanged.
    """
    stop = stop or threading.Event()
    first_failure: float | None = None
    attempt = 0
    answered = False  # any attempt got an HTTP answer
    while True:
        try:
            return fn()
        except anthropic.APIError as e:
            answered = answered or isinstance(e, anthropic.APIStatusError)
            found = classify(e)
            if found is None:
                raise
            problem, status, hint = found
            now = time.monotonic()
            first_failure = now if first_failure is None else first_failure
            waited = now - first_failure
            wait = hint if hint is not None else policy.backoff(attempt)
            event = RetryEvent(attempt + 1, problem, status, wait, hint)
            if waited + wait > policy.budget_seconds:
                if on_retry:
                    on_retry(RetryEvent(attempt + 1, problem, status, 0.0, hint))
                raise ModelUnavailable(
                    f"the model API is unavailable: {problem}; {attempt + 1} attempt(s) over {waited:.1f} s, and "
                    f"the next wait ({wait:.1f} s) would pass the retry budget of {policy.budget_seconds:g} s",
                    status=status, retry_after=hint, waited_seconds=waited, answered=answered) from e
            logger.warning("model API: %s; retry %d in %.2f s (%.1f s of the %g s retry budget used)",
                           problem, attempt + 1, wait, waited, policy.budget_seconds)
            if on_retry:
                on_retry(event)
            if stop.wait(wait):
                raise ModelUnavailable(f"stopped while waiting to retry the model API ({problem})",
                                       status=status, retry_after=hint, waited_seconds=waited,
                                       answered=answered) from e
            attempt += 1
