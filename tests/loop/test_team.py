"""A team's setup (issue 6): loops against a real `mlflow server` with S3 artifacts on moto,
several loops on one experiment, and the server restarted in the middle of a loop."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from mlflow_autoresearch.lineage import MlflowStore
from mlflow_autoresearch.loop import run_loop
from mlflow_autoresearch.outcome import Outcome
from mlflow_autoresearch.recipe import load_recipe
from mlflow_autoresearch.settings import make_settings
from tests.conftest import ROOT, TOY_SPEC, write_recipe
from tests.servers import unique_name

from .scripted import ScriptedSpecialist, budget_trials
from .test_resume import SLOW_TRAIN


def _loop_cmd(recipe, url: str, experiment: str, worker: str, trials: int) -> list[str]:
    return [sys.executable, "-m", "mlflow_autoresearch.cli", "run", "--recipe", str(recipe), "--trials", str(trials),
            "--agent", "tests.loop.scripted:ScriptedSpecialist", "--tracking-uri", url, "--experiment", experiment,
            "--worker", worker, "--in-process", "--proposals-ahead", "0"]


def _evaluated_once(store: MlflowStore, trials) -> None:
    """Each evaluated trial's score was logged exactly once: nothing was evaluated twice."""
    for t in trials:
        if t.outcome in (Outcome.OK, Outcome.GATE_FAILED):
            assert len(store.client.get_metric_history(t.run_id, "loss")) == 1, t.short


@pytest.mark.slow
def test_loop_against_a_server_puts_code_and_logs_in_s3(live_mlflow_server, moto_s3, toy_recipe):
    store = MlflowStore(unique_name("s3loop"), live_mlflow_server.url)
    settings = make_settings(trials=3, in_process=True, tracking_uri=live_mlflow_server.url)
    run_loop(load_recipe(toy_recipe), settings, store=store, specialist=ScriptedSpecialist(), echo=lambda m: None)
    trials = store.trials()
    assert len(budget_trials(trials)) == 3 and all(t.finished for t in trials)
    keys = moto_s3.keys()
    for t in trials:
        assert any(k.endswith(f"{t.run_id}/artifacts/code/train.py") for k in keys), t.short
        if t.outcome is not Outcome.INVALID_PROPOSAL:
            assert any(k.endswith(f"{t.run_id}/artifacts/logs/seed0.stdout.txt") for k in keys), t.short


@pytest.mark.slow
def test_three_loops_share_one_experiment(live_mlflow_server, tmp_path):
    recipe = write_recipe(tmp_path / "toy", TOY_SPEC, {"train.py": SLOW_TRAIN.replace("time.sleep(1.5)",
                                                                                      "time.sleep(0.3)")})
    name = unique_name("three")
    MlflowStore(name, live_mlflow_server.url)  # one creator of the experiment and its ledger
    procs = [subprocess.Popen(_loop_cmd(recipe, live_mlflow_server.url, name, f"w{i}", 2), cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for i in range(3)]
    errors = [p.communicate(timeout=400)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), [e[-2000:] for e in errors]
    store = MlflowStore(name, live_mlflow_server.url)
    trials = store.trials()
    assert sum(t.specialist == "baseline" for t in trials) == 1
    assert sorted(t.worker for t in budget_trials(trials)) == ["w0", "w0", "w1", "w1", "w2", "w2"]
    assert [t.number for t in trials] == list(range(len(trials))), "trial numbers unique and dense"
    assert all(t.finished for t in trials)
    evaluated = [t for t in trials if t.outcome is not Outcome.INVALID_PROPOSAL]
    assert len({t.code_sha256 for t in evaluated}) == len(evaluated)
    _evaluated_once(store, trials)


@pytest.mark.slow
def test_server_restarted_mid_loop_loses_nothing(live_mlflow_server, tmp_path):
    recipe = write_recipe(tmp_path / "toy", TOY_SPEC, {"train.py": SLOW_TRAIN})
    name = unique_name("restart")
    store = MlflowStore(name, live_mlflow_server.url)
    proc = subprocess.Popen(_loop_cmd(recipe, live_mlflow_server.url, name, "default", 4), cwd=ROOT,
                            env={**os.environ, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "10",
                                 "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while sum(t.finished for t in store.trials()) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()[-3000:]
        time.sleep(0.3)
    live_mlflow_server.restart(down_seconds=3)
    _, err = proc.communicate(timeout=400)
    assert proc.returncode == 0, err[-3000:]
    trials = MlflowStore(name, live_mlflow_server.url).trials()
    assert len(budget_trials(trials)) == 4, [(t.short, t.status) for t in trials]
    assert len({t.number for t in trials}) == len(trials) and all(t.finished for t in trials)
    _evaluated_once(store, trials)


@pytest.mark.slow
def test_reader_is_refused_before_any_trial_and_writer_runs(auth_mlflow_server, toy_recipe, monkeypatch, tmp_path):
    from click.testing import CliRunner

    from mlflow_autoresearch.cli import cli
    from tests.servers import ADMIN, READER, WRITER

    name = unique_name("auth")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ADMIN[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN[1])
    admin_store = MlflowStore(name, auth_mlflow_server.url)  # the team's experiment exists
    exp_id = admin_store.experiment_id
    # the writer may edit this experiment; the reader keeps the default READ permission
    auth_mlflow_server.admin_post("/api/3.0/mlflow/users/permissions/grant",
                                  {"username": WRITER[0], "resource_type": "experiment", "resource_id": exp_id,
                                   "permission": "EDIT"})

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", READER[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", READER[1])
    args = ["run", "--recipe", str(toy_recipe), "--trials", "1", "--agent", "tests.loop.scripted:ScriptedSpecialist",
            "--tracking-uri", auth_mlflow_server.url, "--experiment", name, "--in-process"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 2, r.output
    assert "refused" in r.output and "MLFLOW_TRACKING_USERNAME" in r.output
    assert admin_store.trials() == [], "nothing was started"

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", WRITER[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", WRITER[1])
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    assert len(admin_store.trials()) == 2
