"""Helpers for the evaluator's suites: tiny pure-Python recipes run through the real sandbox.

``run_trial(train_py, ...)`` (a fixture in conftest.py) writes a recipe whose baseline is the toy
training script, stages a trial's code (the same protected files, the given
``train.py``) and evaluates it with :func:`evaluate_code`.  Each call takes
0.1-2 s: no torch, no MLflow.
"""

from __future__ import annotations

import copy
import os
import shutil
import textwrap
from dataclasses import dataclass
from pathlib import Path

import yaml

from mlflow_autoresearch.evaluator import Evaluation
from mlflow_autoresearch.recipe import Recipe, load_recipe
from tests.conftest import TOY_SPEC

OK_LINES = "print('loss: 0.5')\nprint('accuracy: 0.9')\n"

BASE_TRAIN = "SCORE = 0.5  # what this toy prints\nprint(f'loss: {SCORE}')\nprint('accuracy: 0.9')\n"

BASE_SPEC: dict = copy.deepcopy(TOY_SPEC)  # the shared toy recipe (tests/conftest.py)


@dataclass
class Ran:
    """One evaluated trial: the evaluator's facts and where its bounded logs were kept."""

    evaluation: Evaluation
    recipe: Recipe
    logs: Path
    seconds: float  # the test's own clock around evaluate_code

    def log(self, name: str) -> str:
        p = self.logs / name
        return p.read_text(errors="replace") if p.exists() else ""

    @property
    def stdout(self) -> str:
        return self.log("seed0.stdout.txt")


def make_recipe(root: Path, *, spec: dict | None = None, limits: dict | None = None,
                files: dict[str, str] | None = None) -> Recipe:
    """A toy recipe folder under ``root``: ``BASE_SPEC`` updated by ``spec`` and ``limits``."""
    full = copy.deepcopy(BASE_SPEC)
    full.update(copy.deepcopy(spec or {}))
    full["limits"] = {**full["limits"], **(limits or {})}
    root.mkdir(parents=True, exist_ok=True)
    for rel, text in {"train.py": BASE_TRAIN, **(files or {})}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(textwrap.dedent(text))
    (root / "recipe.yaml").write_text(yaml.safe_dump(full, sort_keys=False))
    return load_recipe(root)


def stage_code(recipe: Recipe, dest: Path, editable: dict[str, str]) -> Path:
    """A trial's code folder: the recipe's files with the given editable files replaced."""
    dest.mkdir(parents=True)
    for rel in recipe.snapshot_files():
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(recipe.root / rel, dest / rel)
    for rel, text in editable.items():
        (dest / rel).write_text(textwrap.dedent(text))
    return dest


def processes_with(word: str) -> list[int]:
    """Pids of live (non-zombie) processes whose command line contains ``word``."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmd = f.read()
            with open(f"/proc/{name}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if word.encode() in cmd and state != b"Z":
            found.append(int(name))
    return found


_CHILD_EVALUATOR = """
import json, sys
from pathlib import Path
from mlflow_autoresearch.evaluator import evaluate_code
from mlflow_autoresearch.recipe import load_recipe
ev = evaluate_code(load_recipe(sys.argv[1]), Path(sys.argv[2]), keep_logs_in=Path(sys.argv[3]))
print(json.dumps(ev.to_dict()))
"""


def evaluate_in_child(recipe: Recipe, code: Path, logs: Path, env: dict[str, str]) -> dict:
    """Evaluate in a fresh interpreter whose *initial* environment is ``env``.

    What a process was started with is what ``/proc/<pid>/environ`` shows;
    ``os.environ`` changes made later in the test process are not there.
    """
    import json
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", _CHILD_EVALUATOR, str(recipe.root), str(code), str(logs)],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])
