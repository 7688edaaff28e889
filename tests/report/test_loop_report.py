"""A short loop (scripted specialist, real evaluator and store) ends by logging its report."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from mlflow_autoresearch import schema as S
from mlflow_autoresearch.loop import run_loop
from mlflow_autoresearch.recipe import load_recipe
from mlflow_autoresearch.settings import make_settings

from ..loop.scripted import ScriptedSpecialist


@pytest.mark.slow
def test_loop_logs_a_report_run_with_the_page_and_plots(toy_recipe, mlflow_store, tmp_path):
    recipe = load_recipe(toy_recipe)
    settings = make_settings(trials=5, in_process=True, proposals_ahead=0, tracking_uri=mlflow_store.tracking_uri)
    run_loop(recipe, settings, store=mlflow_store, specialist=ScriptedSpecialist(), echo=lambda m: None)
    trials = mlflow_store.trials()
    assert len(trials) == 6

    client = MlflowClient(mlflow_store.tracking_uri)
    runs = client.search_runs([mlflow_store.experiment_id], f"tags.`{S.KIND}` = 'summary'")
    assert len(runs) == 1, "the loop logs one report when it ends"
    run = runs[0]
    assert re.fullmatch(r"report-\d{8}-\d{6}", run.info.run_name)
    assert run.data.metrics["trials"] == 6
    best = min((t for t in trials if t.kept), key=lambda t: t.score)
    assert run.data.metrics["best_loss"] == pytest.approx(best.score)  # minimised, as the recipe says

    local = client.download_artifacts(run.info.run_id, "report", str(tmp_path))
    files = {p.name for p in Path(local).iterdir()}
    assert {"report.html", "summary.json", "tree.png", "best_by_trial.png", "cost.png"} <= files
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["best"]["run_id"] == best.run_id
    assert summary["outcomes"].get("crashed", 0) >= 1  # the script inserts a crash
    page = (tmp_path / "report" / "report.html").read_text()
    assert best.short in page and 'id="leaderboard"' in page
