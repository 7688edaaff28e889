"""The MLproject entry points as `mlflow run` runs them (parameters left empty included)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import yaml

from mlflow_autoresearch.lineage import MlflowStore
from tests.conftest import ROOT


def test_entry_points_and_parameters_are_declared():
    project = yaml.safe_load((ROOT / "MLproject").read_text())
    assert project["conda_env"] == "conda.yaml"
    assert set(project["entry_points"]) == {"autoresearch", "evaluate", "sweep"}
    loop = project["entry_points"]["autoresearch"]
    assert {"recipe", "trials", "agent", "profile", "experiment", "worker"} <= set(loop["parameters"])
    assert loop["parameters"]["recipe"]["default"] == "recipes/digits-speedrun"


@pytest.mark.slow
def test_autoresearch_entry_point_runs_the_loop(toy_recipe, tmp_path, monkeypatch):
    """`mlflow run . -e autoresearch` with the empty defaults for profile and experiment."""
    import mlflow
    import mlflow.projects

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    mlflow.set_tracking_uri(uri)
    submitted = mlflow.projects.run(
        str(ROOT), entry_point="autoresearch", env_manager="local", synchronous=True,
        parameters={"recipe": str(toy_recipe), "trials": "1", "agent": "tests.loop.scripted:ScriptedSpecialist"},
    )
    assert submitted.get_status() == "FINISHED"
    trials = MlflowStore("toy", uri).trials()
    assert [t.specialist for t in trials][0] == "baseline" and len(trials) == 2
    assert all(t.finished for t in trials)
    # The run `mlflow run` made for the entry point (in Default) is the loop's session run, not an empty one.
    session = mlflow.tracking.MlflowClient(uri).get_run(submitted.run_id)
    assert session.info.experiment_id == "0" and session.data.tags["autoresearch.kind"] == "session"
    assert session.data.tags["autoresearch.session_experiment"] == "toy" and session.data.metrics["trials"] == 1
