"""One more layer of retries around ``MlflowClient``, for the faults MLflow's own do not cover.

MLflow's HTTP client retries a request that could not connect or got a
408/429/5xx answer, with exponential backoff.  It does not retry a request
whose answer broke off midway (a server killed after sending the headers:
``IncompleteRead``, ``ChunkedEncodingError``), nor one that ran out of its
own retries while the server was still down, nor a local SQLite store that
was locked by another process.  :class:`RetryingClient` retries those,
a few more times with backoff, and nothing else: a refusal (4xx) is an
answer and is raised at once.

Retrying is only safe because every write the lineage store makes is
idempotent or deduplicated (see ``_mlflow.py``).
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import requests
import urllib3
from mlflow.exceptions import MlflowException

logger = logging.getLogger(__name__)

_TRANSIENT = (
    requests.exceptions.ConnectionError,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.Timeout,
    urllib3.exceptions.ProtocolError,
    urllib3.exceptions.ReadTimeoutError,
    http.client.HTTPException,  # IncompleteRead, RemoteDisconnected, BadStatusLine
    ConnectionError,
)
_TRANSIENT_CODES = ("TEMPORARILY_UNAVAILABLE", "RESOURCE_EXHAUSTED")


def is_transient(error: BaseException) -> bool:
    """True when ``error`` (or an exception it was raised from) is a broken connection or a locked database."""
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, _TRANSIENT):
            return True
        if isinstance(e, MlflowException) and getattr(e, "error_code", "") in _TRANSIENT_CODES:
            return True
        if "database is locked" in str(e)[:500]:
            return True
        e = e.__cause__ or e.__context__
    return False


class RetryingClient:
    """Delegates to an ``MlflowClient``; each method call is retried on a transient fault.

    ``attempts`` calls in all, sleeping ``first_sleep`` seconds after the first
    failure and twice as long after each next one (0.5 + 1 + 2 + 4 s by default).
    Thread-safe as the wrapped client is.
    """

    def __init__(self, client: Any, attempts: int = 5, first_sleep: float = 0.5,
                 gate: threading.Semaphore | None = None) -> None:
        self._client = client
        self._attempts = attempts
        self._first_sleep = first_sleep
        self._gate = gate  # bounds the calls in flight at once (see MlflowStore: local SQLite)

    @property
    def wrapped(self) -> Any:
        return self._client

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr
        return self._retrying(name, attr)

    def _retrying(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            delay = self._first_sleep
            for attempt in range(1, self._attempts + 1):
                try:
                    with self._gate or contextlib.nullcontext():
                        return fn(*args, **kwargs)
                except Exception as e:
                    if attempt == self._attempts or not is_transient(e):
                        raise
                    logger.warning("MLflow %s failed (%s); retry %d of %d in %.1f s",
                                   name, str(e)[:200], attempt, self._attempts - 1, delay)
                    time.sleep(delay)
                    delay *= 2
            raise AssertionError("unreachable")

        call.__name__ = name
        return call
