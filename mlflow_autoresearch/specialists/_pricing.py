"""Dollars from token counts: the shipped price table (``specialists/prices.yaml``) plus user overrides.

A model id is priced by its longest listed prefix.  A model with no price
costs 0 and is warned about once: the dollar budget cannot see it.
Immutable after construction; thread-safe.
"""

from __future__ import annotations

import logging
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


@dataclass(frozen=True)
class Price:
    """USD per million tokens of each kind."""

    input: float
    output: float
    cache_read: float
    cache_write: float

    def cost(self, tokens_in: int, tokens_out: int, cache_read: int = 0, cache_write: int = 0) -> float:
        return (tokens_in * self.input + tokens_out * self.output + cache_read * self.cache_read
                + cache_write * self.cache_write) / MTOK


@lru_cache(maxsize=1)
def _shipped() -> dict[str, Any]:
    return yaml.safe_load(resources.files("mlflow_autoresearch.specialists").joinpath("prices.yaml").read_text())


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
        raise UsageError('prices: expected a mapping like {"claude-sonnet-4-5": [3, 15]} (USD per Mtok in, out)')
    return data


class PriceTable:
    """Prices of the shipped table, with ``overrides`` on top.

    ``overrides`` maps a model id (or prefix) to ``[input, output]`` USD per
    million tokens, or to ``{input, output, cache_read, cache_write}``; it may
    also be JSON/YAML text or the path of such a file.

    Raises:
        UsageError: an override that is not two non-negative numbers, naming the model.
    """

    def __init__(self, overrides: str | Mapping[str, Any] | None = None) -> None:
        shipped = _shipped()
        self.read_mult = float(shipped["cache_read"])
        self.write_mult = float(shipped["cache_write"])
        self._prices = {m: self._price(m, v) for m, v in shipped["models"].items()}
        self._prices.update({str(m): self._price(str(m), v) for m, v in _parse_overrides(overrides).items()})
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    def _price(self, model: str, v: Any) -> Price:
        try:
            if isinstance(v, Mapping):
                pin, pout = float(v["input"]), float(v["output"])
                read = float(v.get("cache_read", pin * self.read_mult))
                write = float(v.get("cache_write", pin * self.write_mult))
            else:
                pin, pout = (float(x) for x in v)
                read, write = pin * self.read_mult, pin * self.write_mult
        except (TypeError, ValueError, KeyError):
            raise UsageError(f"prices: {model!r}: expected [input, output] USD per million tokens, got {v!r}") from None
        if min(pin, pout, read, write) < 0:
            raise UsageError(f"prices: {model!r}: prices cannot be negative")
        return Price(pin, pout, read, write)

    def price(self, model: str) -> Price | None:
        """The price of ``model`` by its longest listed prefix, or ``None``."""
        best = max((m for m in self._prices if model.startswith(m)), key=len, default=None)
        return self._prices[best] if best is not None else None

    def cost(self, model: str, tokens_in: int, tokens_out: int, cache_read: int = 0, cache_write: int = 0) -> float:
        p = self.price(model)
        if p is None:
            with self._lock:
                if model not in self._warned:
                    self._warned.add(model)
                    logger.warning("no price for model %r: its dollars count as 0 and the dollar budget cannot "
                                   "see them; set prices, e.g. AUTORESEARCH_PRICES='{\"%s\": [3, 15]}'", model, model)
            return 0.0
        return p.cost(tokens_in, tokens_out, cache_read, cache_write)

