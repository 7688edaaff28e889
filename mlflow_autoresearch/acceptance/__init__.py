"""Noise-aware acceptance: a noise model learnt from every measurement, and a paired sequential test.

The keep decision belongs to the policy (:mod:`mlflow_autoresearch.loop`);
this package holds the rule itself, free of MLflow and of the evaluator.
"""

from __future__ import annotations

from mlflow_autoresearch.acceptance._decide import (
    CANDIDATE,
    INCUMBENT,
    Acceptance,
    Evidence,
    Measure,
    Sample,
    Verdict,
)
from mlflow_autoresearch.acceptance._noise import NoiseModel, Scale, detect_scale
from mlflow_autoresearch.acceptance._sequential import Design, SequentialTest, Windows, boundary_constant, gls

DEFAULT_MIN_EFFECT = {"relative": 0.01, "absolute": 0.0}
DEFAULT_CONFIRM_SEEDS = {"relative": 10, "absolute": 4}


def default_design(scale: str, *, confidence: float = 0.95, min_effect: float | None = None,
                   max_confirm_seeds: int | None = None) -> Design:
    """The test for a scale: timings need a 1% gain by default, losses and accuracies any real gain."""
    pairs = DEFAULT_CONFIRM_SEEDS[scale] if max_confirm_seeds is None else max_confirm_seeds
    return Design(alpha=1.0 - confidence, max_pairs=pairs,
                  min_effect=DEFAULT_MIN_EFFECT[scale] if min_effect is None else min_effect)


__all__ = [
    "CANDIDATE",
    "INCUMBENT",
    "Acceptance",
    "Design",
    "Evidence",
    "Measure",
    "NoiseModel",
    "SequentialTest",
    "Windows",
    "Sample",
    "Scale",
    "Verdict",
    "boundary_constant",
    "default_design",
    "detect_scale",
    "gls",
]
