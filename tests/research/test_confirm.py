"""``autoresearch confirm``: paired runs nested under the trial, at another profile, through the paired test."""

from __future__ import annotations

from click.testing import CliRunner

from mlflow_autoresearch import schema as S
from mlflow_autoresearch.cli import _load_plugins, cli
from mlflow_autoresearch.lineage import Lineage, MlflowStore, query_trial
from mlflow_autoresearch.recipe import load_recipe
from mlflow_autoresearch.trial import create_trial, recipe_files
from tests.conftest import write_recipe

TRAIN = """\
import os
import sys
SCORE = 0.5  # what this toy prints at the default profile
seed = int(os.environ.get("AUTORESEARCH_SEED", "0"))
loss = 1.0 if "--big" in sys.argv else SCORE  # at the big profile the change makes no difference
print(f"loss: {loss * (1 + 0.01 * (seed % 7))}")
print("accuracy: 0.9")
"""
SPEC = {"name": "toy-transfer", "editable": ["train.py"], "command": "python train.py",
        "metric": {"name": "loss", "goal": "minimize"}, "limits": {"train_seconds": 20, "grace_seconds": 1},
        "seeds": 1, "profiles": {"big": {"command": "python train.py --big"}}}


def finished(store, recipe, files, **kw):
    t = create_trial(store, recipe, files, **kw)
    decision = "baseline" if kw["specialist"] == "baseline" else "keep"
    return store.record_result(t.run_id, tags={S.OUTCOME: "ok", S.DECISION: decision, S.SCORE_NAME: "loss"},
                               metrics={"loss": 0.5 if decision == "baseline" else 0.25}, artifacts={})


def test_confirm_records_paired_runs_under_the_trial_and_the_verdict_in_the_views(tmp_path, sqlite_uri,
                                                                                   monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = load_recipe(write_recipe(tmp_path / "toy", SPEC, {"train.py": TRAIN}))
    store = MlflowStore("transfer", sqlite_uri)
    base_files = recipe_files(recipe)
    base = finished(store, recipe, base_files, specialist="baseline", hypothesis="baseline")
    halved = {**base_files, "train.py": base_files["train.py"].replace(b"SCORE = 0.5", b"SCORE = 0.25")}
    trial = finished(store, recipe, halved, specialist="optimization", hypothesis="halve SCORE", parent=base,
                     parent_files=base_files)
    _load_plugins()

    res = CliRunner().invoke(cli, ["confirm", "--trial", trial.run_id, "--seeds", "3", "--tracking-uri", sqlite_uri])
    assert res.exit_code == 0, res.output
    assert "over 3 paired seeds" in res.output and "the gain holds" in res.output

    c = store.client
    [summary] = c.search_runs([store.experiment_id], f"tags.`{S.PARENT_RUN}` = '{trial.run_id}'")
    assert summary.data.tags[S.KIND] == "transfer" and summary.data.tags["autoresearch.transfer_verdict"] == "holds"
    runs = c.search_runs([store.experiment_id], f"tags.`{S.PARENT_RUN}` = '{summary.info.run_id}'")
    roles = sorted((r.data.tags["autoresearch.transfer_role"], r.data.tags[S.SEED]) for r in runs)
    seeds = sorted({s for _, s in roles})
    assert roles == sorted([("candidate", s) for s in seeds] + [("reference", s) for s in seeds]) and len(seeds) == 3
    by_role = {(r.data.tags["autoresearch.transfer_role"], r.data.tags[S.SEED]): r.data.metrics["loss"] for r in runs}
    assert all(by_role[("candidate", s)] < by_role[("reference", s)] for s in seeds), "measured, paired by seed"
    measured = {r.data.tags["autoresearch.measures"] for r in runs}
    assert measured == {trial.run_id, base.run_id}

    res = CliRunner().invoke(cli, ["confirm", "--trial", trial.run_id, "--profile", "big", "--seeds", "2",
                                   "--tracking-uri", sqlite_uri])
    assert res.exit_code == 0, res.output
    assert "at profile 'big'" in res.output and "does not hold" in res.output

    # The transfer runs are no trials of the lineage; the trial's views show the latest verdict.
    lineage = Lineage(store.trials(), "minimize")
    assert {t.run_id for t in lineage.trials} == {base.run_id, trial.run_id}
    assert "at profile 'big'" in query_trial(store, lineage, trial.short)
    assert "[transfer: does not hold]" in lineage.recent()

    res = CliRunner().invoke(cli, ["confirm", "--trial", base.run_id, "--tracking-uri", sqlite_uri])
    assert res.exit_code == 2 and "has no parent" in res.output
