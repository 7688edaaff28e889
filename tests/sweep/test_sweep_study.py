"""A sweep on a toy recipe: nested runs, the best point as a trial, failures, pruning, refusals."""

from __future__ import annotations

import math

import optuna
import pytest
from click.testing import CliRunner

from mlflow_autoresearch import schema as S
from mlflow_autoresearch._errors import UsageError
from mlflow_autoresearch.cli import cli
from mlflow_autoresearch.recipe import Knob
from mlflow_autoresearch.sweep import default_storage, default_study_name, run_sweep, sweep_command

cli.add_command(sweep_command, "sweep")  # what main() does for the installed command


def _enqueue(swept, *points: dict) -> None:
    """Queue exact points in the study the sweep will open (Optuna's own API, as a user would)."""
    study = optuna.create_study(storage=swept.optuna_url, study_name=default_study_name(swept.trial),
                                direction="minimize")
    for p in points:
        study.enqueue_trial(p)


def test_points_are_nested_runs_and_the_best_becomes_a_kept_trial(swept):
    result = run_sweep(swept.store, swept.recipe, swept.trial.run_id, points=4, seed=0)

    assert result.study_name == default_study_name(swept.trial) == f"sweep-t0000-{swept.trial.run_id[:8]}"
    assert result.storage == swept.optuna_url  # beside mlflow.db
    runs = swept.points()
    assert len(runs) == len(result.points) == 4 and result.evaluated_now == 4
    for run, point in zip(runs, result.points, strict=True):
        assert run.data.tags[S.PARENT_RUN] == swept.trial.run_id
        assert run.info.status == "FINISHED" and run.data.tags["autoresearch.sweep_state"] == point.state
        assert set(run.data.params) == {"X", "Y"}
        assert float(run.data.params["X"]) == pytest.approx(point.values["X"])
        assert run.data.tags[S.OUTCOME] == point.outcome
        if point.state == "COMPLETE" and point.outcome == "ok":
            assert run.data.metrics["loss"] == run.data.metrics["sweep_objective"] == pytest.approx(point.value)
        elif point.state == "COMPLETE":  # gate missed: the worst value, so TPE learns to avoid the region
            assert point.value == math.inf and "sweep_objective" not in run.data.metrics
    # Points are not trials: the lineage holds the baseline and the sweep's trial only.
    assert [t.specialist for t in swept.store.trials()] == ["baseline", "sweep"]

    best, new = result.best, result.trial
    assert best is not None and best.value < swept.trial.score  # the toy's optimum (X=0.3, Y=1) is far from (0.5, 2)
    assert new.specialist == "sweep" and new.parent_id == swept.trial.run_id
    assert f"X={best.values['X']:.6g}" in new.hypothesis and "sweep of t0000" in new.hypothesis
    code = swept.store.code(new.run_id)["train.py"].decode()
    assert f"X = {best.values['X']:.6g}  # first knob" in code and "SEED = int(\"0\")" in code
    assert new.decision == "keep" and new.score == pytest.approx(best.value)
    assert new.reason.startswith("kept: ") and "paired seeds" in new.reason
    assert new.tags["autoresearch.sweep_study"] == result.study_name
    assert swept.store.get(swept.trial.run_id).tags["autoresearch.sweep_study"] == result.study_name

    # The same call again: a finished study evaluates nothing and submits nothing new.
    again = run_sweep(swept.store, swept.recipe, swept.trial.run_id, points=4, seed=0)
    assert again.evaluated_now == 0 and again.trial.run_id == new.run_id
    assert len(swept.points()) == 4 and len(swept.store.trials()) == 2


def test_failed_points_get_the_worst_value_and_no_trial_is_made(swept):
    _enqueue(swept, {"X": 0.5, "Y": 2.3}, {"X": 0.5, "Y": 2.9})  # gate missed; crashed
    result = run_sweep(swept.store, swept.recipe, swept.trial.run_id, points=2, knobs=[
        Knob(name="Y", low=0.0, high=3.0), Knob(name="X", low=0.01, high=1.0, log=True)])

    assert [(p.outcome, p.state, p.value) for p in result.points] == [
        ("gate_failed", "COMPLETE", math.inf), ("crashed", "COMPLETE", math.inf)]
    assert result.best is None and result.trial is None
    assert result.reason == "no point passed every gate (1 crashed, 1 gate_failed); no trial made"
    gate_run, crash_run = swept.points()
    assert "accuracy = 0.5" in gate_run.data.tags[S.REASON]
    assert "RuntimeError" in crash_run.data.tags[S.REASON]
    logs = [a.path for a in swept.store.client.list_artifacts(crash_run.info.run_id, "logs")]
    assert "logs/seed0.stderr.txt" in logs
    stderr = swept.store.read_artifact(crash_run.info.run_id, "logs/seed0.stderr.txt")
    assert "diverged: Y too large" in stderr
    assert len(swept.store.trials()) == 1


def test_a_curve_behind_the_median_is_pruned_after_the_fact(swept):
    # Two good points, then one whose printed loss is far behind theirs from its first step.
    _enqueue(swept, {"X": 0.3, "Y": 1.0}, {"X": 0.35, "Y": 1.1}, {"X": 0.9, "Y": 1.9})
    result = run_sweep(swept.store, swept.recipe, swept.trial.run_id, points=3, submit=False)

    assert [p.state for p in result.points] == ["COMPLETE", "COMPLETE", "PRUNED"]
    pruned = result.points[2]
    assert pruned.outcome == "ok"  # it passed the gate; the pruner stopped it, not the evaluator
    assert result.best.number == result.points[0].number  # a pruned point never becomes the best
    run = swept.points()[2]
    assert run.data.tags["autoresearch.sweep_state"] == "PRUNED"
    study = optuna.load_study(study_name=result.study_name, storage=swept.optuna_url)
    assert study.trials[pruned.number].user_attrs["pruned_at_step"] == 0
    assert result.trial is None and "submit=False" in result.reason


def test_refused_before_anything_runs_through_the_cli(swept):
    runner = CliRunner()
    args = ["sweep", "--trial", swept.trial.run_id, "--tracking-uri", swept.uri, "--points", "3"]

    missing = runner.invoke(cli, [*args, "--knob", "LR:0.001:0.1:log", "--knob", "Y:0:3"])
    assert missing.exit_code == 2
    assert ("knob LR: missing: no module-level assignment `LR = <number>` and no argparse flag "
            '`add_argument("--lr", default=<number>)` in train.py') in missing.output

    out_of_range = runner.invoke(cli, [*args, "--knob", "X:0.6:0.9", "--knob", "Y:0:3"])
    assert out_of_range.exit_code == 2
    assert "knob X: out of range: the current value 0.5 (train.py line 3) is outside [0.6, 0.9]" in out_of_range.output

    malformed = runner.invoke(cli, [*args, "--knob", "X:0.6"])
    assert malformed.exit_code == 2 and "expected NAME:LOW:HIGH" in malformed.output

    # Nothing ran: no study, no point.
    assert not (swept.root / "optuna.db").exists()
    assert swept.points() == []


def test_a_study_is_resumed_only_with_its_own_knobs(swept):
    run_sweep(swept.store, swept.recipe, swept.trial.run_id, points=1, knobs=[Knob(name="Y", low=0, high=3)],
              submit=False)
    with pytest.raises(UsageError, match=r"sweeps other knobs \(Y:0:3\); run it with the same knobs"):
        run_sweep(swept.store, swept.recipe, swept.trial.run_id, points=2, knobs=[Knob(name="Y", low=0, high=2.5)])
    assert len(swept.points()) == 1


def test_only_an_accepted_trial_is_swept(swept):
    from mlflow_autoresearch.trial import create_trial, evaluate_trial

    files = {"train.py": swept.store.code(swept.trial.run_id)["train.py"].replace(b"Y = 2.0", b"Y = 2.9")}
    bad = create_trial(swept.store, swept.recipe, files, specialist="manual", hypothesis="too large",
                       parent=swept.trial)
    bad = evaluate_trial(swept.store, bad.run_id, recipe=swept.recipe)
    assert bad.outcome.value == "crashed"
    with pytest.raises(UsageError, match=r"t0001 .* is not an accepted trial \(outcome crashed, not decided yet\)"):
        run_sweep(swept.store, swept.recipe, bad.run_id, points=2)


def test_storage_beside_the_tracking_store(tmp_path, monkeypatch):
    from mlflow_autoresearch.sweep import resolve_storage

    monkeypatch.delenv("AUTORESEARCH_SWEEP_STORAGE", raising=False)
    monkeypatch.chdir(tmp_path)
    assert default_storage("sqlite:////data/runs/mlflow.db") == "sqlite:////data/runs/optuna.db"
    assert default_storage("sqlite:///mlflow.db") == f"sqlite:///{tmp_path}/optuna.db"
    assert default_storage("http://mlflow.team:5000") is None
    assert resolve_storage(None, "http://mlflow.team:5000") == f"sqlite:///{tmp_path}/optuna.db"
    monkeypatch.setenv("AUTORESEARCH_SWEEP_STORAGE", "postgresql://u:secret@db/optuna")
    assert resolve_storage(None, "http://mlflow.team:5000") == "postgresql://u:secret@db/optuna"
    assert resolve_storage("sqlite:///x.db", "http://mlflow.team:5000") == "sqlite:///x.db"
    with pytest.raises(UsageError, match="not a database URL"):
        resolve_storage("optuna.db", "sqlite:///mlflow.db")
