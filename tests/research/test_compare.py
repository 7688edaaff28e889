"""``autoresearch compare`` over real experiments of real loops: equal budgets, curves, failure mix."""

from __future__ import annotations

import json

from click.testing import CliRunner

from mlflow_autoresearch.cli import _load_plugins, cli
from mlflow_autoresearch.lineage import MlflowStore
from mlflow_autoresearch.loop import run_loop
from mlflow_autoresearch.recipe import load_recipe
from mlflow_autoresearch.settings import make_settings
from tests.loop.scripted import ScriptedSpecialist


def test_compare_cuts_arms_at_equal_budgets_and_writes_plots_and_tables(toy_recipe, sqlite_uri, tmp_path,
                                                                         monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = load_recipe(toy_recipe)
    names = []
    for arm, seed, trials in (("default", 1, 3), ("default", 2, 2), ("generalist", 1, 2)):
        name = f"cmp-{arm}-s{seed}"
        settings = make_settings(trials=trials, in_process=True, proposals_ahead=0, arm=arm, seed=seed,
                                 tracking_uri=sqlite_uri, experiment=name)
        run_loop(recipe, settings, store=MlflowStore(name, sqlite_uri), specialist=ScriptedSpecialist(),
                 echo=lambda m: None)
        names.append(name)
    _load_plugins()
    out = tmp_path / "report"
    res = CliRunner().invoke(cli, ["compare", *names, "--out", str(out), "--tracking-uri", sqlite_uri])
    assert res.exit_code == 0, res.output
    data = json.loads((out / "compare.json").read_text())
    assert data["budget_trials"] == 2, "the fewest trials any run has"
    assert set(data["arms"]) == {"default", "generalist"}
    default = data["arms"]["default"]
    assert default["experiments"] == names[:2] and default["seeds"] == ["1", "2"]
    assert default["best_at_budget"]["n"] == 2 and default["trials"] == 5
    assert sum(default["outcomes"].values()) == 5 and default["outcomes"].get("crashed", 0) >= 1
    run = next(r for r in data["runs"] if r["experiment"] == names[0])
    assert len(run["best_so_far"]) == 4 and run["best_so_far"][0] == run["baseline"]
    assert all(b <= a for a, b in zip(run["best_so_far"], run["best_so_far"][1:], strict=False)), "minimize: never worse"
    for png in ("best_by_trials.png", "best_over_baseline.png", "best_by_seconds.png", "failure_mix.png"):
        assert (out / png).stat().st_size > 5000
    md = (out / "compare.md").read_text()
    assert "best at 2 trials" in md and "| generalist | 1 |" in md
    assert "<table>" in (out / "compare.html").read_text()

    res = CliRunner().invoke(cli, ["compare", "nope", "--out", str(out), "--tracking-uri", sqlite_uri])
    assert res.exit_code == 2 and "no experiment named 'nope'" in res.output
