"""The loop end to end on the toy recipe, with a scripted specialist."""

from __future__ import annotations

from mlflow_autoresearch import schema as S
from mlflow_autoresearch.lineage import Lineage
from mlflow_autoresearch.loop import run_loop
from mlflow_autoresearch.outcome import Outcome
from mlflow_autoresearch.recipe import load_recipe
from mlflow_autoresearch.settings import make_settings

from .scripted import ScriptedSpecialist


def test_loop_in_process_keeps_discards_and_repairs(toy_recipe, mlflow_store):
    recipe = load_recipe(toy_recipe)
    settings = make_settings(trials=12, in_process=True, proposals_ahead=0, tracking_uri=mlflow_store.tracking_uri)
    lines: list[str] = []
    result = run_loop(recipe, settings, store=mlflow_store, specialist=ScriptedSpecialist(), echo=lines.append)
    trials = mlflow_store.trials()
    assert [t.number for t in trials] == list(range(13))  # baseline + 12, unique and dense
    assert result.trials == 12 and "trial budget" in result.stop_reason
    assert all(t.finished for t in trials)
    assert trials[0].decision == "baseline"
    kept = [t for t in trials if t.decision == "keep"]
    assert kept and result.best.run_id == kept[-1].run_id
    crashed = [t for t in trials if t.outcome is Outcome.CRASHED]
    assert crashed, "the script inserts a crash"
    assert "RuntimeError" in crashed[0].feedback
    lineage = Lineage(trials, recipe.metric.goal)
    repaired = [c for t in crashed for c in lineage.children(t.run_id) if c.hypothesis.startswith("repair")]
    assert repaired and repaired[0].outcome is Outcome.OK
    assert any("slots 0/1 busy" in ln or "slots 1/1 busy" in ln for ln in lines)
    assert any("stopped: trial budget reached" in ln for ln in lines)


def test_loop_resumes_to_exact_budget(toy_recipe, mlflow_store):
    recipe = load_recipe(toy_recipe)
    first = make_settings(trials=3, in_process=True, tracking_uri=mlflow_store.tracking_uri)
    run_loop(recipe, first, store=mlflow_store, specialist=ScriptedSpecialist(), echo=lambda m: None)
    again = make_settings(trials=5, in_process=True, tracking_uri=mlflow_store.tracking_uri)
    result = run_loop(recipe, again, store=mlflow_store, specialist=ScriptedSpecialist(), echo=lambda m: None)
    trials = mlflow_store.trials()
    assert result.trials == 5 and len(trials) == 6
    evaluated = [t for t in trials if t.outcome is not Outcome.INVALID_PROPOSAL]
    assert len({t.code_sha256 for t in evaluated}) == len(evaluated), "no code evaluated twice"
    assert sum(t.decision == "baseline" for t in trials) == 1


def test_loop_through_mlflow_projects(toy_recipe, mlflow_store):
    """Evaluations submitted through mlflow.projects.run land on the trial runs themselves."""
    recipe = load_recipe(toy_recipe)
    settings = make_settings(trials=1, tracking_uri=mlflow_store.tracking_uri)
    run_loop(recipe, settings, store=mlflow_store, specialist=ScriptedSpecialist(), echo=lambda m: None)
    trials = mlflow_store.trials()
    assert len(trials) == 2 and all(t.finished for t in trials)
    run = mlflow_store.client.get_run(trials[1].run_id)
    assert run.data.tags.get("mlflow.project.backend") == "local"  # evaluated by the project entry point
    assert run.info.status == "FINISHED" and S.NOTE in run.data.tags
    # The scripted first move is a regression: with the noise not measured yet (one seed), it is confirmed
    # on paired seeds, each a confirmation run through the same entry point, and discarded on them.
    assert trials[1].decision == "discard" and trials[1].evidence["rule"] == "paired"
    confirms = mlflow_store.client.search_runs([mlflow_store.experiment_id], "tags.`autoresearch.kind` = 'confirm'")
    assert len(confirms) == trials[1].metrics["confirm_runs"] == 2 * len(trials[1].evidence["pairs"]) >= 4
    for c in confirms:
        assert c.data.tags[S.PARENT_RUN] == trials[1].run_id and c.info.status == "FINISHED"
        assert c.data.tags.get("mlflow.project.backend") == "local" and c.data.tags[S.OUTCOME] == "ok"
    assert {c.data.tags[S.MEASURES] for c in confirms} == {t.run_id for t in trials}


def test_kept_trial_with_knobs_gets_a_sweep(toy_recipe, mlflow_store, tmp_path):
    import yaml

    spec = yaml.safe_load((toy_recipe / "recipe.yaml").read_text())
    spec["knobs"] = [{"name": "SCORE", "low": 0.01, "high": 1.0, "log": True}]
    (toy_recipe / "recipe.yaml").write_text(yaml.safe_dump(spec))
    recipe = load_recipe(toy_recipe)
    # 5 trials: the first keep (t0003) comes when t0004 is already proposed (one proposal in flight while a
    # trial trains), so a budget of 4 would be fully committed before a sweep could start.
    settings = make_settings(trials=5, in_process=True, proposals_ahead=0, sweep_points=3,
                             sweep_storage=f"sqlite:///{tmp_path / 'optuna.db'}", tracking_uri=mlflow_store.tracking_uri)
    lines: list[str] = []
    result = run_loop(recipe, settings, store=mlflow_store, specialist=ScriptedSpecialist(), echo=lines.append)
    trials = mlflow_store.trials()
    assert result.trials == 5 and len(trials) == 6, "the sweep trial counts toward the budget"
    assert any(ln.startswith("sweep: 3 Optuna points") for ln in lines)
    sweep_trial = next(t for t in trials if t.specialist == "sweep")
    assert sweep_trial.finished and sweep_trial.decision in ("keep", "discard")
    nested = mlflow_store.client.search_runs([mlflow_store.experiment_id],
                                             f"tags.`mlflow.parentRunId` = '{sweep_trial.parent_id}'")
    # Under the swept trial: its sweep points, and the confirmation runs that kept it.
    points = [p for p in nested if p.data.tags.get(S.KIND) == "sweep_point"]
    assert len(points) >= 2 and all(p.data.tags.get(S.KIND) in ("sweep_point", "confirm") for p in nested)


def test_a_cluster_backend_without_a_project_is_refused(toy_recipe, mlflow_store):
    import pytest

    from mlflow_autoresearch._errors import UsageError

    settings = make_settings(trials=1, backend="kubernetes", tracking_uri=mlflow_store.tracking_uri)
    with pytest.raises(UsageError, match="--project"):
        run_loop(load_recipe(toy_recipe), settings, store=mlflow_store, specialist=ScriptedSpecialist())
    assert mlflow_store.trials() == []
