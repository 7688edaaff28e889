"""The context budget: a request is sent only when it fits the model's window with room for the answer.

Tokens are estimated from the request's characters with a ratio calibrated
on what the API reports (the usage of each answer, a ``count_tokens`` result,
or the count in a "prompt is too long" error).  Near the limit the
provider's own ``messages.count_tokens`` is asked, where it exists (not on
Bedrock; a local server may lack it too, and then the estimate serves).

When a request does not fit, *shrinkers* are applied in order until it does:
older tool results are cleared (the model is told it may call the tool
again), then the lineage views in the first turn are shortened, then
dropped (the ``lineage_view`` tool still shows them), then the inlined code
is clipped (``read_file`` shows the rest).  If nothing is left to shrink,
:class:`ContextTooLong` is raised and nothing is sent.

One :class:`ContextBudget` per conversation; :class:`Calibration` is shared
by the conversations of one specialist and is thread-safe.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

logger = logging.getLogger(__name__)

DEFAULT_WINDOW = 200_000  # for a model the table does not know
CHARS_PER_TOKEN = 3.0  # a cautious start: code and JSON run about 2.7-3.5 characters a token
RATIO_RANGE = (1.5, 4.5)
COUNT_ABOVE = 0.7  # ask count_tokens once the estimate passes this share of the limit

Shrinker = Callable[[], bool]  # shrinks the conversation in place; False when it had nothing left to do


class ContextTooLong(Exception):
    """The request cannot be made to fit: ``tokens`` needed, ``limit`` available for the prompt."""

    def __init__(self, tokens: int, limit: int) -> None:
        super().__init__(f"the prompt needs about {tokens:,} tokens and {limit:,} fit")
        self.tokens = tokens
        self.limit = limit


class Calibration:
    """Characters per token, learned from the API's own counts.  Thread-safe."""

    def __init__(self, chars_per_token: float = CHARS_PER_TOKEN) -> None:
        self._ratio = chars_per_token
        self._lock = threading.Lock()

    @property
    def chars_per_token(self) -> float:
        return self._ratio

    def observe(self, chars: int, tokens: int, *, exact: bool = False) -> None:
        """Blend in one measurement (``exact``: replace, e.g. after a count the server made)."""
        if chars <= 0 or tokens <= 0:
            return
        ratio = min(max(chars / tokens, RATIO_RANGE[0]), RATIO_RANGE[1])
        with self._lock:
            self._ratio = ratio if exact else 0.7 * self._ratio + 0.3 * ratio


def request_chars(request: dict[str, Any]) -> int:
    """The size that tokens are estimated from: system, tools and messages as JSON."""
    parts = {k: request.get(k) for k in ("system", "tools", "messages")}
    return len(json.dumps(parts, ensure_ascii=False, separators=(",", ":"), default=str))


class ContextBudget:
    """Keeps one conversation inside ``window`` tokens, leaving ``max_tokens`` for the answer.

    ``counter(request) -> int`` is the provider's token count, or ``None``.
    """

    def __init__(self, window: int, calibration: Calibration, counter: Callable[[dict[str, Any]], int] | None = None,
                 ) -> None:
        self.window = window
        self.calibration = calibration
        self.counter = counter
        self.last_tokens = 0  # the fitted size of the last request
        self.shrunk: list[str] = []  # what was shrunk, in order, for the transcript

    def limit(self, max_tokens: int) -> int:
        """Tokens the prompt may use: the window less the answer and a safety margin."""
        margin = max(256, self.window // 50)  # 2%: 4k of a 200k window, 256 of a small local model's
        return self.window - max_tokens - margin

    def estimate(self, request: dict[str, Any]) -> int:
        return int(request_chars(request) / self.calibration.chars_per_token) + 1

    def count(self, request: dict[str, Any]) -> int:
        """The best count available: the provider's when it answers, else the estimate."""
        if self.counter is not None:
            try:
                tokens = int(self.counter(request))
                self.calibration.observe(request_chars(request), tokens, exact=True)
                return tokens
            except Exception as e:  # no counting here (Bedrock, a local server): the estimate serves
                logger.debug("token counting unavailable (%s); using the estimate", e)
                self.counter = None
        return self.estimate(request)

    def fit(self, request: dict[str, Any], shrinkers: Sequence[tuple[str, Shrinker]]) -> int:
        """Shrink the conversation (in place, through ``shrinkers``) until ``request`` fits; its token count.

        Raises:
            ContextTooLong: it still does not fit after every shrinker.
        """
        limit = self.limit(int(request["max_tokens"]))
        tokens = self.estimate(request)
        if tokens > COUNT_ABOVE * limit:
            tokens = self.count(request)
        for name, shrink in shrinkers:
            if tokens <= limit:
                break
            if shrink():
                self.shrunk.append(name)
                logger.info("context: %s to fit %s tokens (was about %s)", name, f"{limit:,}", f"{tokens:,}")
                tokens = self.count(request) if self.estimate(request) > COUNT_ABOVE * limit else \
                    self.estimate(request)
        if tokens > limit:
            raise ContextTooLong(tokens, max(limit, 0))
        self.last_tokens = tokens
        return tokens


# ----- shrinking a Messages API conversation ---------------------------------
def clear_tool_results(messages: list[dict[str, Any]], keep_turns: int, note: Callable[[int], str]) -> bool:
    """Replace the content of tool results older than the last ``keep_turns`` user turns by ``note(chars)``."""
    users = [i for i, m in enumerate(messages) if m["role"] == "user"]
    old = set(users[1:len(users) - keep_turns] if keep_turns else users[1:])
    changed = False
    for i in sorted(old):
        for block in messages[i]["content"] if isinstance(messages[i]["content"], list) else ():
            if block.get("type") != "tool_result":
                continue
            content = block.get("content")
            size = len(content) if isinstance(content, str) else len(json.dumps(content))
            if size <= 200:
                continue
            block["content"] = note(size)
            changed = True
    return changed


def replace_in_first_turn(messages: list[dict[str, Any]], old: str, new: str) -> bool:
    """Replace ``old`` by ``new`` in the first user turn's text; False when ``old`` is not there."""
    if not old or old == new:
        return False
    for block in messages[0]["content"]:
        if block.get("type") == "text" and old in block["text"]:
            block["text"] = block["text"].replace(old, new, 1)
            return True
    return False
