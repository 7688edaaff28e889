"""What a new user meets in the first week (issue 14): a new store opened by several loops at once,
`report` without flags, the UI's view of our experiments, the `mlflow run` session run, `ui`, `--version`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from mlflow_autoresearch import schema as S
from mlflow_autoresearch.cli import _load_plugins, cli
from mlflow_autoresearch.lineage import MlflowStore, TrialDraft
from mlflow_autoresearch.lineage._mlflow import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG
from tests.conftest import ROOT

OPEN_STORE = """
import sys, time
from pathlib import Path
from mlflow_autoresearch.lineage import MlflowStore
go = Path(sys.argv[2])
Path(sys.argv[3]).touch()
while not go.exists():
    time.sleep(0.01)
MlflowStore(sys.argv[4], sys.argv[1]).trials()
print("opened")
"""


def test_several_processes_create_the_same_new_sqlite_store_at_once(tmp_path):
    """Without the lock the second one died in alembic: `duplicate column name: step` (seen here whenever the lock was left out)."""
    uri = f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}"
    (tmp_path / "new").mkdir()
    go = tmp_path / "go"
    procs = []
    for i in range(3):
        procs.append(subprocess.Popen([sys.executable, "-c", OPEN_STORE, uri, str(go), str(tmp_path / f"ready{i}"),
                                       "same-study" if i < 2 else "other-study"],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path))
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"ready{i}").exists() for i in range(3)) and time.monotonic() < deadline:
        time.sleep(0.05)
    go.touch()  # all three open the store at the same moment
    results = [(p.wait(60), *p.communicate()) for p in procs]
    for rc, out, err in results:
        assert rc == 0 and "opened" in out, err[-2000:]
        assert "Traceback" not in err
    assert (tmp_path / "new" / "mlflow.db.lock").exists()
    names = {e.name for e in MlflowClient(uri).search_experiments()}
    assert {"same-study", "other-study"} <= names


def test_our_experiments_open_in_the_model_training_view(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    store = MlflowStore("study", uri)
    client = MlflowClient(uri)
    assert client.get_experiment(store.experiment_id).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    old = client.create_experiment("made-before")  # an experiment made without the tag: a loop adds it
    MlflowStore("made-before", uri)
    assert client.get_experiment(old).tags[EXPERIMENT_KIND_TAG] == "custom_model_development"
    reader = client.create_experiment("read-only")
    MlflowStore("read-only", uri, create=False)  # a reader writes nothing
    assert EXPERIMENT_KIND_TAG not in client.get_experiment(reader).tags


def _one_trial(uri: str, name: str) -> None:
    store = MlflowStore(name, uri)
    t = store.create_trial(TrialDraft(files={"train.py": b"SCORE = 1\n"}, specialist="baseline", hypothesis="b"))
    store.record_result(t.run_id, tags={S.OUTCOME: "ok", S.DECISION: "baseline", S.SCORE_NAME: "loss"},
                        metrics={"loss": 1.0}, artifacts={})


def test_report_defaults_to_the_only_experiment_and_a_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    _load_plugins()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    runner = CliRunner()
    refused = runner.invoke(cli, ["report"])
    assert refused.exit_code == 2 and "there is no tracking store at" in refused.output
    assert sorted(os.listdir(tmp_path)) == []  # no mlflow.db made by asking

    _one_trial(uri, "study/one")
    r = runner.invoke(cli, ["report"])
    assert r.exit_code == 0, r.output
    html = tmp_path / "autoresearch-report" / "study_one" / "report.html"
    assert r.stdout.strip().splitlines()[-1] == str(Path("autoresearch-report/study_one/report.html"))
    assert html.is_file() and "report: wrote autoresearch-report/study_one/" in r.stderr
    assert "experiment 'study/one'" in r.stderr

    _one_trial(uri, "study-two")
    r = runner.invoke(cli, ["report", "--out", str(tmp_path / "never")])
    assert r.exit_code == 2, r.output
    assert "2 experiments at" in r.output and "'study-two'" in r.output and "'study/one'" in r.output
    assert "--experiment" in r.output and not (tmp_path / "never").exists()


def test_the_loop_uses_the_mlflow_run_entry_points_run_as_its_session(toy_recipe, tmp_path, monkeypatch):
    """`mlflow run . -e autoresearch` makes a run in Default before the loop starts: the loop tags and fills it."""
    from mlflow_autoresearch.loop import run_loop
    from mlflow_autoresearch.recipe import load_recipe
    from mlflow_autoresearch.settings import make_settings

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    project_run = client.create_run("0").info.run_id  # what mlflow.projects does for the entry point
    monkeypatch.setenv("MLFLOW_RUN_ID", project_run)
    settings = make_settings(tracking_uri=uri, trials=0, agent="offline", in_process=True)
    result = run_loop(load_recipe(toy_recipe), settings, echo=lambda m: None)
    run = client.get_run(project_run)
    assert run.data.tags[S.KIND] == "session"
    assert run.data.tags["autoresearch.session_experiment"] == "toy"
    assert "experiment **toy**" in run.data.tags[S.NOTE]
    assert run.data.metrics["trials"] == result.trials == 0
    assert run.data.tags["autoresearch.best"].startswith("t0000 ")
    assert len(MlflowStore("toy", uri, create=False).trials()) == 1  # the session run is no trial


def test_version_examples_and_completion():
    _load_plugins()
    runner = CliRunner()
    v = runner.invoke(cli, ["--version"])
    assert v.exit_code == 0 and re.fullmatch(r"autoresearch \d+\.\d+\S*\n", v.output), v.output
    for command in ("run", "evaluate", "lineage", "ui"):
        h = runner.invoke(cli, [command, "--help"])
        assert h.exit_code == 0 and "Examples:" in h.output and f"autoresearch {command}" in h.output.split(
            "Examples:")[1]
    for command in ("sweep", "report", "confirm"):
        h = runner.invoke(cli, [command, "--help"])
        assert "Examples:" in h.output, command
    exe = Path(sys.executable).with_name("autoresearch")
    src = subprocess.run([str(exe)], env={**os.environ, "_AUTORESEARCH_COMPLETE": "bash_source"},
                         capture_output=True, text=True, timeout=60)
    assert src.returncode == 0 and "complete -o nosort -F _autoresearch_completion autoresearch" in src.stdout
    assert "_AUTORESEARCH_COMPLETE=bash_source autoresearch" in (ROOT / "docs" / "cli.md").read_text()


def test_ui_refuses_what_it_cannot_serve(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    _load_plugins()
    runner = CliRunner()
    r = runner.invoke(cli, ["ui"])
    assert r.exit_code == 2 and "there is no tracking store at" in r.output
    assert os.listdir(tmp_path) == []
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowStore("study", uri)
    r = runner.invoke(cli, ["ui", "--tracking-uri", uri, "--experiment", "nope"])
    assert r.exit_code == 2 and "--experiment 'nope': no such experiment" in r.output and "'study'" in r.output
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        r = runner.invoke(cli, ["ui", "--tracking-uri", uri, "--port", str(busy)])
        assert r.exit_code == 2 and f"--port {busy}: already in use" in r.output
    r = runner.invoke(cli, ["ui", "--tracking-uri", "postgresql://db/mlflow"])
    assert r.exit_code == 2 and "serves a local sqlite:/// store or links to an http(s) tracking server" in r.output


def test_ui_serves_the_store_and_prints_a_link_to_the_trials(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    _one_trial(uri, "study")
    exp_id = MlflowClient(uri).get_experiment_by_name("study").experiment_id
    proc = subprocess.Popen([sys.executable, "-m", "mlflow_autoresearch.cli", "ui", "--tracking-uri", uri],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                            start_new_session=True)
    try:
        link = proc.stdout.readline().strip()  # printed once the server answers
        assert re.fullmatch(rf"http://127\.0\.0\.1:\d+/#/experiments/{exp_id}/runs\?workflowType=machine_learning",
                            link), (link, proc.stderr.read() if proc.poll() is not None else "")
        base = link.split("/#/")[0]
        with urllib.request.urlopen(link, timeout=10) as page:
            assert page.status == 200 and b"<html" in page.read().lower()
        # the server reads this store: its experiment and trial are there
        q = f"{base}/ajax-api/2.0/mlflow/experiments/get-by-name?experiment_name=study"
        with urllib.request.urlopen(q, timeout=10) as r:
            assert json.load(r)["experiment"]["experiment_id"] == exp_id
    finally:
        proc.terminate()
        rc = proc.wait(30)
    assert rc == 0
    with pytest.raises(OSError):  # the mlflow server went with it
        urllib.request.urlopen(f"{base}/health", timeout=3)
