"""Fixtures for the evaluator's suites; the helpers they use live in trialkit.py."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from trialkit import Ran, make_recipe, stage_code

from mlflow_autoresearch.evaluator import evaluate_code
from mlflow_autoresearch.recipe import Recipe


@pytest.fixture
def run_trial(tmp_path: Path) -> Callable[..., Ran]:
    """Evaluate ``train_py`` as a trial of a toy recipe (see the module docstring)."""
    counter = iter(range(1_000_000))

    def run(train_py: str, *, spec: dict | None = None, limits: dict | None = None,
            files: dict[str, str] | None = None, trial_files: dict[str, str] | None = None,
            recipe: Recipe | None = None) -> Ran:
        n = next(counter)
        if recipe is None:
            recipe = make_recipe(tmp_path / f"recipe{n}", spec=spec, limits=limits, files=files)
        code = stage_code(recipe, tmp_path / f"code{n}", {"train.py": train_py, **(trial_files or {})})
        logs = tmp_path / f"logs{n}"
        t0 = time.monotonic()
        ev = evaluate_code(recipe, code, keep_logs_in=logs)
        return Ran(ev, recipe, logs, time.monotonic() - t0)

    return run


@pytest.fixture
def marker() -> str:
    """A unique word to put on a trial's command lines, to find its processes afterwards."""
    return f"ar-marker-{uuid.uuid4().hex[:12]}"
