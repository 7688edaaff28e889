"""Kill the loop process and run the same command again: nothing lost, nothing twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlflow_autoresearch.lineage import MlflowStore
from mlflow_autoresearch.outcome import Outcome

from ..conftest import ROOT, TOY_SPEC, write_recipe
from .scripted import budget_trials

SLOW_TRAIN = """\
import os
import time
SCORE = 0.5  # what this toy prints
time.sleep(1.5)
print(f"loss: {SCORE}")
print("accuracy: 0.9")
"""


def _command(recipe: Path, uri: str, trials: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "mlflow_autoresearch.cli", "run", "--recipe", str(recipe), "--trials", str(trials),
            "--agent", "tests.loop.scripted:ScriptedSpecialist", "--tracking-uri", uri, "--proposals-ahead", "0",
            *extra]


def _wait_for(store: MlflowStore, predicate, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate(store.trials()):
            return
        if proc.poll() is not None:
            raise AssertionError(f"the loop exited early ({proc.returncode}): {proc.stderr.read()[-3000:]}")
        time.sleep(0.3)
    proc.kill()
    raise AssertionError(f"the loop did not get there in time: {proc.communicate()[1][-3000:]}")


def _env() -> dict[str, str]:
    return {**os.environ, "AUTORESEARCH_LEASE_SECONDS": "30"}


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["in-process", "mlflow-run"])
def test_sigkill_mid_trial_then_resume(tmp_path, mode):
    recipe = write_recipe(tmp_path / "slow", TOY_SPEC, {"train.py": SLOW_TRAIN})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    extra = ("--in-process",) if mode == "in-process" else ()
    cmd = _command(recipe, uri, 4, *extra)
    store = MlflowStore("toy", uri)  # the database exists before the loop starts (no migration race)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    try:
        # Baseline and at least one trial finished, and one trial in the middle of its evaluation.
        _wait_for(store, lambda ts: sum(t.finished for t in ts) >= 2 and any(t.status == "RUNNING" for t in ts), proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert any(t.status == "RUNNING" for t in store.trials()), "killed in the middle of a trial"

    again = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    trials = store.trials()
    mine = budget_trials(trials)
    assert len(mine) == 4, [(t.short, t.status, t.outcome) for t in trials]
    assert all(t.finished and t.status != "RUNNING" for t in trials)
    # unique numbers; a kill inside create_trial's one-request window may leave a gap, never a reuse
    assert len({t.number for t in trials}) == len(trials)
    evaluated = [t for t in trials if t.outcome is not Outcome.INVALID_PROPOSAL]
    assert len({t.code_sha256 for t in evaluated}) == len(evaluated)
    assert "resume:" in again.stderr


@pytest.mark.slow
def test_sigterm_stops_cleanly_and_resumes(tmp_path):
    recipe = write_recipe(tmp_path / "slow", TOY_SPEC, {"train.py": SLOW_TRAIN})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cmd = _command(recipe, uri, 3, "--in-process")
    store = MlflowStore("toy", uri)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait_for(store, lambda ts: sum(t.finished for t in ts) >= 2, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    assert "stopped by SIGTERM" in err and "resumes" in err
    again = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    trials = store.trials()
    assert len(budget_trials(trials)) == 3
    assert all(t.finished for t in trials)
