"""Helpers for the sweep suites: a toy recipe with two knobs (no torch; a point takes well under a second)."""

from __future__ import annotations

import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

import yaml

KNOB_TRAIN = """\
import time

X = 0.5  # first knob
Y = 2.0  # second knob
SLEEP = 0.0  # seconds to wait first, so a test can kill a point halfway
SEED = int("0")  # not a number literal

time.sleep(SLEEP)
if Y > 2.6:
    raise RuntimeError("diverged: Y too large")
for step in range(3):
    print(f"loss: {(X - 0.3) ** 2 + (Y - 1.0) ** 2 + 0.1 * (2 - step)}")
print(f"accuracy: {0.9 if Y <= 2.0 else 0.5}")
"""

KNOB_SPEC = {
    "name": "toy-knobs",
    "editable": ["train.py"],
    "command": "python train.py",
    "metric": {"name": "loss", "goal": "minimize"},
    "gates": [{"metric": "accuracy", "op": ">=", "value": 0.85}],
    "limits": {"train_seconds": 30, "grace_seconds": 1},
    "seeds": 1,
    "knobs": [{"name": "X", "low": 0.01, "high": 1.0, "log": True}, {"name": "Y", "low": 0.0, "high": 3.0}],
}


@dataclass
class Swept:
    """An experiment whose baseline (X=0.5, Y=2.0, loss 1.04) is the accepted trial to sweep."""

    store: object
    recipe: object
    trial: object
    uri: str
    root: Path

    @property
    def optuna_url(self) -> str:
        return f"sqlite:///{self.root / 'optuna.db'}"

    def points(self) -> list:
        """The sweep's nested MLflow runs, oldest first."""
        return self.store.client.search_runs(
            [self.store.experiment_id], "tags.`autoresearch.kind` = 'sweep_point'", order_by=["attributes.start_time ASC"])


def write_toy(root: Path, sleep: float = 0.0) -> Path:
    folder = root / "toy-knobs"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.py").write_text(KNOB_TRAIN.replace("SLEEP = 0.0", f"SLEEP = {sleep}"))
    (folder / "recipe.yaml").write_text(yaml.safe_dump(KNOB_SPEC, sort_keys=False))
    return folder


def empty_tracking_db(path: Path) -> Path:
    """A migrated, empty MLflow SQLite store (migrating one takes 3-5 s: tests copy it instead)."""
    from mlflow.tracking import MlflowClient

    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


def make_swept(root: Path, sleep: float = 0.0, template: Path | None = None) -> Swept:
    from mlflow_autoresearch.lineage import MlflowStore
    from mlflow_autoresearch.recipe import load_recipe
    from mlflow_autoresearch.trial import evaluate_folder

    folder = write_toy(root, sleep)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    if template is not None:
        shutil.copyfile(template, root / "mlflow.db")
    recipe = load_recipe(folder)
    store = MlflowStore("sweep-test", uri)
    base = evaluate_folder(store, recipe)
    assert base.decision == "baseline" and abs(base.score - 1.04) < 1e-9
    return Swept(store, recipe, base, uri, root)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
