"""Outcome words (the evaluator's facts) and score comparison with meaning."""

from __future__ import annotations

import enum
import math


class Outcome(enum.StrEnum):
    """What happened to a trial, as DESIGN.md names it."""

    OK = "ok"
    GATE_FAILED = "gate_failed"
    CRASHED = "crashed"
    PREFLIGHT_FAILED = "preflight_failed"
    TIMED_OUT = "timed_out"
    SIZE_EXCEEDED = "size_exceeded"
    INVALID_PROPOSAL = "invalid_proposal"
    PROTECTED_VIOLATION = "protected_violation"
    HARNESS_ERROR = "harness_error"

    def __str__(self) -> str:
        return self.value

    @property
    def scored(self) -> bool:
        """Whether the trial has a score that may compete for best."""
        return self is Outcome.OK


class Decision(enum.StrEnum):
    KEEP = "keep"
    DISCARD = "discard"
    BASELINE = "baseline"

    def __str__(self) -> str:
        return self.value


class Direction:
    """Which way a score is better; knows the worst value so 'best' needs no special cases."""

    __slots__ = ("sign",)

    def __init__(self, goal: str) -> None:
        if goal not in ("minimize", "maximize"):
            raise ValueError(f"goal must be 'minimize' or 'maximize', got {goal!r}")
        self.sign = 1 if goal == "maximize" else -1

    @property
    def worst(self) -> float:
        return -math.inf * self.sign

    def key(self, score: float | None) -> float:
        """A sort key where larger is better; ``None`` (no score) is worst."""
        return -math.inf if score is None or math.isnan(score) else score * self.sign

    def better(self, a: float | None, b: float | None, margin: float = 0.0) -> bool:
        """True when ``a`` beats ``b`` by more than ``margin`` (in the metric's units)."""
        if a is None or math.isnan(a):
            return False
        if b is None or math.isnan(b):
            return True
        return (a - b) * self.sign > margin

    def gain(self, new: float | None, old: float | None) -> float | None:
        """Improvement of ``new`` over ``old``, positive when better."""
        if new is None or old is None:
            return None
        return (new - old) * self.sign
