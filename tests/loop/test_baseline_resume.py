"""A baseline left unmeasured by a stopped loop (its evaluation cancelled or killed) is evaluated again,
not waited for forever."""

from __future__ import annotations

from mlflow_autoresearch import schema as S
from mlflow_autoresearch.loop import run_loop
from mlflow_autoresearch.outcome import Outcome
from mlflow_autoresearch.recipe import load_recipe
from mlflow_autoresearch.settings import make_settings
from mlflow_autoresearch.trial import BASELINE, create_trial, recipe_files

from .scripted import ScriptedSpecialist


def test_an_abandoned_baseline_is_taken_over(toy_recipe, mlflow_store):
    recipe = load_recipe(toy_recipe)
    # What a loop stopped while its baseline was being evaluated leaves: the claim taken, the run open,
    # no facts, a lease whose owner is gone (pid 1 on another host, expired).
    assert mlflow_store.claim("baseline", "gone-host:1:dead")
    left = create_trial(mlflow_store, recipe, recipe_files(recipe), specialist=BASELINE, hypothesis="baseline",
                        backend="none", worker="default", tags={S.LEASE: "gone-host:1:dead|0"})
    lines: list[str] = []
    settings = make_settings(trials=0, in_process=True, tracking_uri=mlflow_store.tracking_uri)
    result = run_loop(recipe, settings, store=mlflow_store, specialist=ScriptedSpecialist(), echo=lines.append)
    (base,) = mlflow_store.trials()
    assert base.run_id == left.run_id and base.finished and base.outcome is Outcome.OK
    assert result.stop_reason.startswith("trial budget")
    assert any("left unfinished by a stopped loop" in m for m in lines), lines
