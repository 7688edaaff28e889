"""On the digits recipe: a sweep over two knobs of an accepted trial, its points nested runs, its best a trial."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mlflow_autoresearch import schema as S
from mlflow_autoresearch.lineage import MlflowStore
from mlflow_autoresearch.recipe import Knob, load_recipe
from mlflow_autoresearch.sweep import run_sweep
from mlflow_autoresearch.trial import evaluate_folder

DIGITS = Path(__file__).resolve().parents[2] / "recipes" / "digits-speedrun"


@pytest.mark.slow
def test_digits_sweep_of_two_knobs(tmp_path, monkeypatch, tracking_db_template):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AUTORESEARCH_SWEEP_STORAGE", raising=False)
    shutil.copyfile(tracking_db_template, tmp_path / "mlflow.db")
    recipe = load_recipe(DIGITS, "quick")  # one seed per evaluation
    store = MlflowStore("digits-sweep", f"sqlite:///{tmp_path / 'mlflow.db'}")
    base = evaluate_folder(store, recipe, profile="quick")
    assert base.decision == "baseline" and base.outcome.value == "ok"

    knobs = [Knob(name="EPOCHS", low=10, high=60, integer=True), Knob(name="LR", low=0.01, high=0.1, log=True)]
    result = run_sweep(store, recipe, base.run_id, knobs=knobs, points=2, seed=0)  # 4 digits evaluations in all

    runs = store.client.search_runs([store.experiment_id], "tags.`autoresearch.kind` = 'sweep_point'")
    assert len(runs) == 2
    for run in runs:
        assert run.data.tags[S.PARENT_RUN] == base.run_id
        assert set(run.data.params) == {"EPOCHS", "LR"} and 10 <= int(run.data.params["EPOCHS"]) <= 60
        assert run.data.tags[S.OUTCOME] in ("ok", "gate_failed")
        assert "accuracy" in run.data.metrics and "train_seconds" in run.data.metrics
        assert f"EPOCHS = {run.data.params['EPOCHS']}  # passes over the training set" in (
            store.read_artifact(run.info.run_id, S.PATCH) or "")

    if result.best is None:  # every point missed the accuracy gate: said so, no trial
        assert result.trial is None and "no point passed every gate" in result.reason
        return
    new = result.trial
    assert new.specialist == "sweep" and new.parent_id == base.run_id
    assert f"EPOCHS={int(result.best.values['EPOCHS'])}" in new.hypothesis
    code = store.code(new.run_id)["train.py"].decode()
    assert f"EPOCHS = {int(result.best.values['EPOCHS'])}  # passes over the training set" in code
    if new.decision == "keep":  # kept only after paired confirmation, with its interval above zero
        assert new.reason.startswith("kept: ") and new.evidence["low"] > 0
    else:
        assert new.decision == "discard" and new.reason  # discarded with the reason
        assert new.outcome.value != "ok" or new.reason.startswith(("not better", "not confirmed", "unconfirmed"))
    assert [t.run_id for t in store.trials()] == [base.run_id, new.run_id]
