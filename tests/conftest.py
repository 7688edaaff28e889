"""Shared fixtures.  Server-backed fixtures (mlflow server, moto) live in tests/servers.py."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "recipes" / "digits-speedrun"

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@pytest.fixture
def sqlite_uri(tmp_path: Path) -> str:
    """A fresh local SQLite tracking store (artifacts beside it)."""
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture
def mlflow_store(sqlite_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from mlflow_autoresearch.lineage import MlflowStore

    monkeypatch.chdir(tmp_path)  # ./mlruns artifacts land in the test's folder
    return MlflowStore("test-experiment", sqlite_uri)


def write_recipe(root: Path, spec: dict, files: dict[str, str]) -> Path:
    """Create a recipe folder: ``recipe.yaml`` from ``spec`` plus the given files."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text))
    (root / "recipe.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return root


TOY_TRAIN = """\
import os
SCORE = 0.5  # what this toy prints
print(f"loss: {SCORE}")
print(f"accuracy: {0.9 + 0.01 * int(os.environ.get('AUTORESEARCH_SEED', '0'))}")
"""

TOY_SPEC = {
    "name": "toy",
    "editable": ["train.py"],
    "command": "python train.py",
    "metric": {"name": "loss", "goal": "minimize"},
    "gates": [{"metric": "accuracy", "op": ">=", "value": 0.85, "near_miss": 0.01}],
    "limits": {"train_seconds": 20, "grace_seconds": 1},
    "seeds": 1,
}


@pytest.fixture
def toy_recipe(tmp_path: Path) -> Path:
    """A recipe whose training is a one-line Python script (no torch): runs in ~0.1 s."""
    return write_recipe(tmp_path / "toy", TOY_SPEC, {"train.py": TOY_TRAIN})
