"""Fixtures of the Claude backend's tests: a toy recipe and an in-memory lineage with its baseline."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mlflow_autoresearch import schema as S
from mlflow_autoresearch.lineage import InMemoryStore
from mlflow_autoresearch.recipe import load_recipe
from mlflow_autoresearch.trial import create_trial, recipe_files

TRAIN = """\
import os
SCORE = 0.5  # what this toy prints
WIDTH = 64  # hidden units
print(f"loss: {SCORE}")
print(f"accuracy: {0.9 + 0.01 * int(os.environ.get('AUTORESEARCH_SEED', '0'))}")
"""


@pytest.fixture
def recipe(tmp_path: Path):
    root = tmp_path / "toy"
    (root / "notes").mkdir(parents=True)
    (root / "train.py").write_text(TRAIN)
    (root / "helper.py").write_text("SECRET = 1\n")
    (root / "notes" / "tips.md").write_text("Halving SCORE is the classic trick.\n")
    (root / "recipe.yaml").write_text(yaml.safe_dump({
        "name": "toy", "description": "A toy that prints its score.", "editable": ["train.py"],
        "protected": ["helper.py"], "command": "python train.py", "metric": {"name": "loss", "goal": "minimize"},
        "gates": [{"metric": "accuracy", "op": ">=", "value": 0.85, "near_miss": 0.01}],
        "limits": {"train_seconds": 20, "memory_gb": 2}, "seeds": 2, "min_improvement": 0.01,
        "knowledge": ["notes/tips.md"]}))
    return load_recipe(root)


@pytest.fixture
def store(recipe):
    """An in-memory lineage holding a finished baseline trial."""
    store = InMemoryStore()
    base = create_trial(store, recipe, recipe_files(recipe), specialist="baseline",
                        hypothesis="baseline: the recipe's own code", backend="none")
    store.record_result(base.run_id, tags={S.OUTCOME: "ok", S.DECISION: "baseline", S.SCORE_NAME: "loss",
                                           S.FEEDBACK: "outcome: ok — baseline feedback 4242"},
                        metrics={"loss": 0.5, "loss_std": 0.02, "accuracy": 0.91}, artifacts={})
    return store


