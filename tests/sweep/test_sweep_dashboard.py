"""``optuna-dashboard <storage URL>`` opens a sweep's study: started on 127.0.0.1, read through its API."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from sweepkit import free_port

from mlflow_autoresearch.recipe import Knob
from mlflow_autoresearch.sweep import run_sweep


@pytest.mark.slow
def test_optuna_dashboard_serves_the_study(swept, tmp_path: Path):
    result = run_sweep(swept.store, swept.recipe, swept.trial.run_id, points=2, submit=False,
                       knobs=[Knob(name="Y", low=0.0, high=3.0)])
    port = free_port()
    dashboard = Path(sys.executable).parent / "optuna-dashboard"
    log = (tmp_path / "dashboard.log").open("w")
    proc = subprocess.Popen([str(dashboard), result.storage, "--host", "127.0.0.1", "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                r = requests.get(f"{base}/api/studies", timeout=5)
                if r.status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert proc.poll() is None, (tmp_path / "dashboard.log").read_text()
            assert time.monotonic() < deadline, "optuna-dashboard did not answer in 60 s"
            time.sleep(0.3)
        summaries = r.json()["study_summaries"]
        assert [s["study_name"] for s in summaries] == [result.study_name]
        attrs = {a["key"]: a["value"] for a in summaries[0]["user_attrs"]}
        assert attrs["swept_trial"] == swept.trial.run_id and attrs["metric"] == "loss"

        study = requests.get(f"{base}/api/studies/{summaries[0]['study_id']}", params={"after": 0}, timeout=10).json()
        trials = study["trials"]
        assert len(trials) == 3  # the swept trial's own point and two evaluated ones
        own = trials[0]
        assert [p["param_external_value"] for p in own["params"]] == ["2.0"] and own["values"] == [1.04]
        points = {r.info.run_id for r in swept.points()}
        linked = {a["value"] for t in trials[1:] for a in t["user_attrs"] if a["key"] == "mlflow_run_id"}
        assert linked == points and len(points) == 2  # each point links its nested MLflow run
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # its wsgiref server does not stop on SIGTERM
        proc.wait(timeout=20)
