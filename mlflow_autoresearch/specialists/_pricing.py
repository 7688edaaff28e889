"""Dollars from token counts, and each model's context window: ``specialists/models.yaml`` plus user overrides.

Every model has its own five prices (input, output, 5-minute and 1-hour cache
writes, cache reads) and may have *tiers*: rates that apply to every token of
a request whose prompt is longer than a threshold (Claude Haiku 5.5 above
100k tokens, the 1M-context Sonnet 4.x above 200k).  A model id is matched by
its longest listed prefix after provider decorations are stripped
(:func:`canonical_model`), so ``us.anthropic.claude-haiku-4-5-20251001-v1:0``
finds ``claude-haiku-4-5``.

A model the table does not know costs 0 and is warned about once; the loop
refuses a dollar budget for such a model before anything runs
(:meth:`PriceTable.knows`).  Immutable after construction; thread-safe.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from mlflow_autoresearch._errors import UsageError

logger = logging.getLogger(__name__)
MTOK = 1_000_000
RATE_FIELDS = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")
# For a price given as [input, output]: Anthropic's usual cache multipliers of the input price.
DEFAULT_MULTIPLIERS = {"cache_write_5m": 1.25, "cache_write_1h": 2.0, "cache_read": 0.1}
_DECORATIONS = [
    re.compile(r"^arn:aws:bedrock:[^/]*/"),  # an inference-profile or foundation-model ARN
    re.compile(r"^(us|eu|apac|jp|au|ca|global|us-gov)\."),  # Bedrock cross-region profiles
    re.compile(r"^anthropic\."),
    re.compile(r"-v\d+(:\d+)?$"),  # Bedrock version suffix
    re.compile(r"@\d{8}$"),  # Vertex date
    re.compile(r"\[1m\]$"),
    re.compile(r"-\d{8}$"),  # dated snapshot id
]


def canonical_model(model: str) -> str:
    """The first-party model id under a provider's decorations, e.g. ``claude-sonnet-4-5``."""
    out = model.strip().lower()
    for pattern in _DECORATIONS:
        out = pattern.sub("", out)
    return out


@dataclass(frozen=True)
class Rates:
    """USD per million tokens of each kind."""

    input: float
    output: float
    cache_write_5m: float
    cache_write_1h: float
    cache_read: float

    def cost(self, tokens_in: int, tokens_out: int, cache_read: int, write_5m: int, write_1h: int) -> float:
        return (tokens_in * self.input + tokens_out * self.output + cache_read * self.cache_read
                + write_5m * self.cache_write_5m + write_1h * self.cache_write_1h) / MTOK


@dataclass(frozen=True)
class Price:
    """A model's rates, its prompt-length tiers, and its limits (``None``: not known)."""

    base: Rates
    tiers: tuple[tuple[int, Rates], ...] = ()  # (prompt tokens above which, rates), ascending
    context_window: int | None = None
    max_output: int | None = None
    source: str = ""

    def rates(self, prompt_tokens: int) -> Rates:
        chosen = self.base
        for above, rates in self.tiers:
            if prompt_tokens > above:
                chosen = rates
        return chosen

    def cost(self, tokens_in: int, tokens_out: int, cache_read: int = 0, write_5m: int = 0,
             write_1h: int = 0) -> float:
        """Dollars of one request: the tier is chosen by that request's whole prompt."""
        rates = self.rates(tokens_in + cache_read + write_5m + write_1h)
        return rates.cost(tokens_in, tokens_out, cache_read, write_5m, write_1h)


@lru_cache(maxsize=1)
def shipped_table() -> dict[str, Any]:
    """The parsed ``models.yaml`` (its ``as_of`` date and ``models``)."""
    return yaml.safe_load(resources.files("mlflow_autoresearch.specialists").joinpath("models.yaml").read_text())


def _parse_overrides(prices: str | Mapping[str, Any] | None) -> Mapping[str, Any]:
    if prices is None or isinstance(prices, Mapping):
        return prices or {}
    text = prices.strip()
    if text and not text.startswith("{") and Path(text).is_file():
        text = Path(text).read_text()
    try:
        data = yaml.safe_load(text)  # JSON is YAML
    except yaml.YAMLError as e:
        raise UsageError(f"prices: not JSON or YAML, nor a file holding it: {e}") from None
    if not isinstance(data, Mapping):
        raise UsageError('prices: expected a mapping like {"claude-sonnet-5-5": [2, 10]} (USD per Mtok in, out)')
    return data


def _rates(model: str, v: Any) -> Rates:
    if isinstance(v, Mapping):
        if "input" not in v or "output" not in v:
            raise UsageError(f"prices: {model!r}: needs at least 'input' and 'output' (USD per million tokens)")
        pin, pout = float(v["input"]), float(v["output"])
        given = {"cache_write_5m": v.get("cache_write_5m", v.get("cache_write")),
                 "cache_write_1h": v.get("cache_write_1h"), "cache_read": v.get("cache_read")}
    else:
        pin, pout = (float(x) for x in v)
        given = {}
    values = {k: float(given[k]) if given.get(k) is not None else pin * m for k, m in DEFAULT_MULTIPLIERS.items()}
    rates = Rates(pin, pout, **values)
    if min(rates.__dict__.values()) < 0:
        raise UsageError(f"prices: {model!r}: prices cannot be negative")
    return rates


def _price(model: str, v: Any) -> Price:
    try:
        base = _rates(model, v)
        tiers: list[tuple[int, Rates]] = []
        window = max_output = None
        source = ""
        if isinstance(v, Mapping):
            tiers = sorted((int(t["above"]), _rates(model, t)) for t in v.get("tiers") or ())
            window = int(v["context_window"]) if v.get("context_window") else None
            max_output = int(v["max_output"]) if v.get("max_output") else None
            source = str(v.get("source", ""))
    except (TypeError, ValueError, KeyError):
        raise UsageError(f"prices: {model!r}: expected [input, output] USD per million tokens or a mapping with "
                         f"input, output, cache_write_5m, cache_write_1h, cache_read; got {v!r}") from None
    return Price(base, tuple(tiers), window, max_output, source)


class PriceTable:
    """Prices of the shipped table, with ``overrides`` on top.

    ``overrides`` maps a model id (or prefix) to ``[input, output]`` USD per
    million tokens (cache prices then follow Anthropic's usual multipliers:
    1.25x and 2x for writes, 0.1x for reads), or to a mapping with any of
    ``input, output, cache_write_5m, cache_write_1h, cache_read, tiers,
    context_window, max_output``; it may also be JSON/YAML text or the path of
    such a file.

    Raises:
        UsageError: an override that is not a price, naming the model.
    """

    def __init__(self, overrides: str | Mapping[str, Any] | None = None) -> None:
        shipped = shipped_table()
        self.as_of = str(shipped.get("as_of", ""))
        self._prices = {m: _price(m, v) for m, v in shipped["models"].items()}
        self.overridden = {str(m) for m in _parse_overrides(overrides)}
        self._prices.update({str(m): _price(str(m), v) for m, v in _parse_overrides(overrides).items()})
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    def price(self, model: str) -> Price | None:
        """The price of ``model`` (as given, else its canonical id) by longest listed prefix, or ``None``."""
        for name in (model, canonical_model(model)):
            best = max((m for m in self._prices if name.startswith(m)), key=len, default=None)
            if best is not None:
                return self._prices[best]
        return None

    def knows(self, model: str) -> bool:
        return self.price(model) is not None

    def cost(self, model: str, tokens_in: int, tokens_out: int, cache_read: int = 0, write_5m: int = 0,
             write_1h: int = 0) -> float:
        p = self.price(model)
        if p is None:
            with self._lock:
                if model not in self._warned:
                    self._warned.add(model)
                    logger.warning("no price for model %r: its dollars count as 0 and the dollar budget cannot "
                                   "see them; set prices, e.g. AUTORESEARCH_PRICES='{\"%s\": [3, 15]}'", model, model)
            return 0.0
        return p.cost(tokens_in, tokens_out, cache_read, write_5m, write_1h)
