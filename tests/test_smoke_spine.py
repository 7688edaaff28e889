"""End-to-end: a recipe's own code recorded and scored as the baseline trial."""

from __future__ import annotations

from mlflow_autoresearch import schema as S
from mlflow_autoresearch.lineage import Lineage
from mlflow_autoresearch.outcome import Outcome
from mlflow_autoresearch.recipe import load_recipe
from mlflow_autoresearch.trial import evaluate_folder


def test_baseline_then_manual_trial_recorded(toy_recipe, mlflow_store, tmp_path):
    recipe = load_recipe(toy_recipe)
    base = evaluate_folder(mlflow_store, recipe)
    assert base.outcome is Outcome.OK and base.decision == "baseline"
    assert base.score == 0.5 and base.number == 0
    assert mlflow_store.read_artifact(base.run_id, "code/train.py").startswith("import os")

    better = tmp_path / "better"
    better.mkdir()
    (better / "train.py").write_text((toy_recipe / "train.py").read_text().replace("SCORE = 0.5", "SCORE = 0.25"))
    trial = evaluate_folder(mlflow_store, recipe, better)
    assert trial.parent_id == base.run_id and trial.number == 1
    assert trial.outcome is Outcome.OK and trial.decision == "keep" and trial.score == 0.25
    patch = mlflow_store.read_artifact(trial.run_id, S.PATCH)
    assert "-SCORE = 0.5" in patch and "+SCORE = 0.25" in patch
    assert "keep" in trial.feedback and "0.25" in trial.feedback
    lineage = Lineage.load(mlflow_store, recipe.metric.goal)
    assert lineage.best.run_id == trial.run_id
    assert "t0001" in lineage.leaderboard()
