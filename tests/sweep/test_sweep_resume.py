"""Kill a sweep halfway (SIGKILL of the CLI) and run the same command again: same study, no point lost or repeated."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from sweepkit import make_swept

from mlflow_autoresearch import schema as S
from mlflow_autoresearch.sweep import default_study_name, run_sweep

POINTS = 3


def _study(db: Path, name: str) -> optuna.Study | None:
    """The study once the sweep has created it (read first with sqlite3: opening an Optuna
    storage on a database another process is creating races it for the tables)."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            if not con.execute("SELECT 1 FROM studies WHERE study_name = ?", (name,)).fetchall():
                return None
    except sqlite3.OperationalError:  # no file or no tables yet
        return None
    return optuna.load_study(study_name=name, storage=f"sqlite:///{db}")


@pytest.mark.slow
def test_killed_sweep_resumes_the_same_study(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tracking_db_template):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AUTORESEARCH_SWEEP_STORAGE", raising=False)
    swept = make_swept(tmp_path, sleep=2.0, template=tracking_db_template)  # each point sleeps 2 s
    name = default_study_name(swept.trial)
    cmd = [sys.executable, "-m", "mlflow_autoresearch.cli", "sweep", "--trial", swept.trial.run_id,
           "--points", str(POINTS), "--tracking-uri", swept.uri]
    log = (tmp_path / "first.log").open("w")
    first = subprocess.Popen(cmd, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    study = None
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # wait: one point recorded, the next one evaluating
            study = study or _study(tmp_path / "optuna.db", name)
            if study is not None:
                trials = study.get_trials(deepcopy=False)
                done = [t for t in trials if t.state.name == "COMPLETE" and t.number > 0]
                running = [t for t in trials if t.state.name == "RUNNING" and "mlflow_run_id" in t.user_attrs]
                if done and running:
                    break
            assert first.poll() is None, (tmp_path / "first.log").read_text()
            time.sleep(0.2)
        else:
            pytest.fail("the first point was never recorded:\n" + (tmp_path / "first.log").read_text())
        time.sleep(0.5)
        os.killpg(first.pid, signal.SIGKILL)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    before = {t.number: (t.params, t.value) for t in study.get_trials() if t.state.name == "COMPLETE"}
    killed = [t for t in study.get_trials() if t.state.name == "RUNNING"]
    assert len(killed) == 1 and len(before) == 2  # the swept trial's own point and one evaluated point

    again = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]

    assert optuna.get_all_study_names(swept.optuna_url) == [name]  # the same study, no second one
    trials = optuna.load_study(study_name=name, storage=swept.optuna_url).get_trials()
    for number, (params, value) in before.items():  # nothing recorded before the kill changed
        assert (trials[number].params, trials[number].value) == (params, value)
    fail = trials[killed[0].number]
    assert fail.state.name == "FAIL"
    retried = [t for t in trials if t.user_attrs.get("retry_of") == fail.number]
    assert len(retried) == 1 and retried[0].params == fail.params and retried[0].state.name == "COMPLETE"
    evaluated = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED") and t.number > 0]
    assert len(evaluated) == POINTS  # not lost, not repeated
    assert len({tuple(sorted(t.params.items())) for t in evaluated}) == POINTS

    runs = swept.points()
    by_status = {s: [r for r in runs if r.info.status == s] for s in ("FINISHED", "KILLED")}
    assert len(by_status["FINISHED"]) == POINTS and len(runs) == POINTS + 1
    assert by_status["KILLED"][0].info.run_id == fail.user_attrs["mlflow_run_id"]
    assert by_status["KILLED"][0].data.tags["autoresearch.sweep_state"] == "INTERRUPTED"
    assert sorted(int(r.data.tags["autoresearch.sweep_point"]) for r in by_status["FINISHED"]) == sorted(
        t.number for t in evaluated)
    new_trial = again.stdout.strip().splitlines()[-1]
    assert swept.store.get(new_trial).tags[S.SPECIALIST] == "sweep"
    assert f"{POINTS} points ({POINTS - 1} evaluated now)" in again.stderr

    # A third run of a finished study evaluates nothing and returns the same trial.
    third = run_sweep(swept.store, swept.recipe, swept.trial.run_id, points=POINTS)
    assert third.evaluated_now == 0 and third.trial.run_id == new_trial and len(swept.points()) == POINTS + 1
