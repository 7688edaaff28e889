"""The noise model: how much one measurement of the same code moves, learnt from every measurement.

Every evaluation measures its code on several seeds, and confirmation runs
measure the same code again later; each group of values of one code (one
``code_sha256``) says something about the noise.  The pooled estimate is
robust: the median of the absolute differences between two values of the same
code, over every pair of every group, divided by ``sqrt(2) * 0.6745`` (what
that median is for a normal noise of spread sigma).  One load spike moves a
median of many pairs little; it moved the old estimate (a two-seed std of the
baseline) without bound.

Values are compared on the scale the score behaves on: timings spread in
proportion to their size (``relative``: natural logs, so sigma is a fraction
of the score), losses and accuracies in absolute terms (``absolute``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

# The median of |x - y| for x, y independent N(mu, sigma^2) is sqrt(2) * Phi^-1(0.75) * sigma.
_PAIR_MEDIAN = math.sqrt(2.0) * 0.6744897501960817
_TIMING = re.compile(r"(second|seconds|_s|_ms|time|latency|duration|wall|cpu)$", re.IGNORECASE)
MAX_PAIRS_PER_GROUP = 45  # a code measured many times counts like 10 values, not like n^2/2 pairs


def detect_scale(metric: str, values: Iterable[float] = ()) -> str:
    """``relative`` for timings (the name says so and every value is positive), else ``absolute``."""
    vals = list(values)
    if _TIMING.search(metric) and all(v > 0 for v in vals):
        return "relative"
    return "absolute"


class Scale:
    """Maps a score to the scale its noise is additive on, and back."""

    __slots__ = ("kind",)

    def __init__(self, kind: str) -> None:
        if kind not in ("relative", "absolute"):
            raise ValueError(f"scale must be 'relative' or 'absolute', got {kind!r}")
        self.kind = kind

    def to(self, value: float) -> float:
        if self.kind == "relative":
            return math.log(value) if value > 0 else -math.inf
        return value

    def back(self, value: float) -> float:
        return math.exp(value) if self.kind == "relative" else value

    def change(self, diff: float) -> float:
        """A difference on the scale (new minus old) as a change of the score: a fraction, or units."""
        return math.expm1(diff) if self.kind == "relative" else diff

    def change_text(self, diff: float) -> str:
        """``-12.3%`` of a timing, ``+0.0021`` of a loss (new minus old)."""
        if self.kind == "relative":
            return f"{self.change(diff) * 100:+.1f}%"
        return f"{diff:+.4g}"

    def spread_text(self, sigma: float) -> str:
        return f"{sigma * 100:.1f}%" if self.kind == "relative" else f"{sigma:.3g}"


Windows = Mapping[str, Sequence[float]]  # window id -> the values measured in it (one evaluation, one pair)


@dataclass(frozen=True)
class NoiseModel:
    """The pooled noise of one experiment, on its scale, in two parts.

    ``sigma``: the spread of one measurement against another of the same code
    in the same window (the seeds of one evaluation; the two halves of a
    confirmation pair share a window and so cancel what moves between
    windows).  ``drift``: the extra spread between windows (load, thermals,
    a neighbour's job), from values of one code measured in different
    windows.  Either is None until something measured it.  ``df`` is the
    degrees of freedom a pooled variance of as many values would have.
    """

    scale: Scale
    sigma: float | None
    drift: float | None
    pairs: int
    codes: int
    values: int
    df: int

    @classmethod
    def learn(cls, codes: Mapping[str, Windows] | Iterable[Windows], scale: Scale, floor: float = 0.0,
              on_scale: Iterable[Sequence[float]] = ()) -> NoiseModel:
        """Pool every code's values.  ``floor``: the smallest sigma believed.

        ``on_scale``: more groups, already on the scale, each measured in one
        window with the spread of one measurement (e.g. a confirmation's
        paired differences over sqrt 2).
        """
        seqs = codes.values() if isinstance(codes, Mapping) else codes
        within: list[tuple[float, float]] = []  # (|difference|, weight)
        across: list[tuple[float, float]] = []
        n_codes = values = df = 0
        for xs in on_scale:
            xs = [x for x in xs if math.isfinite(x)]
            if len(xs) > 1:
                df += len(xs) - 1
                _pairs(xs, within)
        for windows in seqs:
            clean = [[x for x in (scale.to(v) for v in vals if v is not None and math.isfinite(v)) if math.isfinite(x)]
                     for vals in windows.values()]
            clean = [xs for xs in clean if xs]
            count = sum(len(xs) for xs in clean)
            values += count
            if count < 2:
                continue
            n_codes += 1
            for xs in clean:
                if len(xs) > 1:
                    df += len(xs) - 1
                    _pairs(xs, within)
            if len(clean) > 1:  # window means against each other: drift plus what is left of sigma
                means = [(sum(xs) / len(xs), len(xs)) for xs in clean]
                _pairs([m for m, _ in means], across, sizes=[n for _, n in means])
        sigma = max(_weighted_median(within) / _PAIR_MEDIAN, floor) if within else None
        drift = None
        if across:
            # Each pair of window means differs by sqrt(2 * (drift^2 + sigma^2 / n)); n is folded into the weights.
            total = _weighted_median([(d, w) for d, w, *_ in across]) / _PAIR_MEDIAN
            n_eff = _weighted_median([(h, w) for _, w, h in across]) if across else 1.0
            drift = math.sqrt(max(total * total - (sigma or 0.0) ** 2 / max(n_eff, 1.0), 0.0))
        return cls(scale, sigma, drift, len(within), n_codes, values, df)

    def describe(self) -> str:
        if self.sigma is None and self.drift is None:
            return "noise: not measured yet (no code has two measurements)"
        parts = []
        if self.sigma is not None:
            parts.append(f"±{self.scale.spread_text(self.sigma)} between seeds of one evaluation")
        if self.drift is not None:
            parts.append(f"±{self.scale.spread_text(self.drift)} drift between evaluations")
        return (f"noise: {'; '.join(parts)} ({self.scale.kind} scale; robust estimate from {self.values} "
                f"measurements of {self.codes} code versions)")


def _pairs(xs: Sequence[float], out: list, sizes: Sequence[int] | None = None) -> None:
    """Every pair's |difference|, weighted so that a group weighs as its degrees of freedom."""
    pairs = [(abs(a - b), i, j) for i, a in enumerate(xs) for j, b in enumerate(xs) if j > i]
    if len(pairs) > MAX_PAIRS_PER_GROUP:
        step = len(pairs) / MAX_PAIRS_PER_GROUP
        pairs = [pairs[int(i * step)] for i in range(MAX_PAIRS_PER_GROUP)]
    w = (len(xs) - 1) / len(pairs)
    for d, i, j in pairs:
        if sizes is None:
            out.append((d, w))
        else:  # the harmonic mean of the two windows' sizes: what sigma^2 / n is divided by
            out.append((d, w, 2.0 / (1.0 / sizes[i] + 1.0 / sizes[j])))


def _weighted_median(items: list[tuple[float, float]]) -> float:
    items = sorted(items)
    total = sum(w for _, w in items)
    acc = 0.0
    for value, w in items:
        acc += w
        if acc >= total / 2:
            return value
    return items[-1][0]
