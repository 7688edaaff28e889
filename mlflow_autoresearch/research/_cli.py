"""``autoresearch compare``: thin click command over :mod:`._compare`."""

from __future__ import annotations

from pathlib import Path

import click

from mlflow_autoresearch.cli import handles_errors


@click.command("compare")
@click.argument("experiments", nargs=-1, required=True)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder to write compare.md, compare.html, compare.json and the PNG plots into.")
@click.option("--tracking-uri", default=None,
              help="Tracking store [default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db].")
@click.option("--goal", type=click.Choice(["minimize", "maximize"]), default=None,
              help="Score direction [default: the recipe's, named on the runs].")
@click.option("--title", default="Arms compared", help="Heading of the report.")
@handles_errors
def compare_command(experiments, out_dir, tracking_uri, goal, title) -> None:
    """Compare arms (experiments) at equal trial budgets and equal compute: best-so-far curves over the
    loop seeds, keep rate, failure mix, refused duplicates, dollars.  Experiments are grouped by their
    tag autoresearch.arm (set by `autoresearch run --arm`)."""
    from mlflow.tracking import MlflowClient

    from mlflow_autoresearch._errors import UsageError
    from mlflow_autoresearch.lineage import MlflowStore
    from mlflow_autoresearch.report._facts import infer_goal
    from mlflow_autoresearch.research._compare import collect, compare, write_report
    from mlflow_autoresearch.settings import tracking_uri as resolve_uri

    uri = resolve_uri(tracking_uri)
    client = MlflowClient(uri)
    missing = [e for e in experiments if client.get_experiment_by_name(e) is None]
    if missing:
        raise UsageError(f"no experiment named {', '.join(map(repr, missing))} at {uri}")
    if goal is None:
        goal = infer_goal(MlflowStore(experiments[0], uri, create=False).trials())
        if goal is None:
            raise UsageError("cannot tell the score's direction from the runs; pass --goal minimize|maximize")
    runs = collect(uri, list(experiments), goal)
    path = write_report(compare(runs, goal), out_dir, title)
    click.echo(f"compare: {len(runs)} experiments; {path} and {path.with_suffix('.html').name}", err=True)
    click.echo(str(path))


@click.command("confirm", epilog=(
    "\b\nExamples:\n"
    "  autoresearch confirm --trial t0007 --recipe recipes/digits-speedrun --seeds 10\n"
    "  autoresearch confirm --trial 1a2b3c4d --profile full --against baseline"))
@click.option("--trial", "trial_ref", required=True,
              help="The trial to re-check: t0007, a run id, or a unique prefix of one.")
@click.option("--profile", default="", help="The recipe profile to measure at [default: the trial's own].")
@click.option("--seeds", type=click.IntRange(min=2, max=200), default=10, help="Paired seeds (each code once per seed).")
@click.option("--against", type=click.Choice(["parent", "baseline"]), default="parent",
              help="The code measured beside the trial.")
@click.option("--recipe", "recipe_dir", type=click.Path(path_type=Path), default=None,
              help="Recipe folder [default: the one named on the trial's run].")
@click.option("--confidence", type=click.FloatRange(0.5, 0.999), default=0.95, help="Of the paired test.")
@click.option("--tracking-uri", default=None,
              help="Tracking store [default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db].")
@click.option("--experiment", default=None, help="Experiment of the trial [default: found from the trial id].")
@handles_errors
def confirm_command(trial_ref, profile, seeds, against, recipe_dir, confidence, tracking_uri, experiment) -> None:
    """Re-score a trial at another profile and over many seeds, its parent (or the baseline) measured beside it
    on the same seeds; the paired result is recorded as runs nested under the trial."""
    from mlflow_autoresearch import schema as S
    from mlflow_autoresearch._errors import UsageError
    from mlflow_autoresearch.lineage import resolve_trial
    from mlflow_autoresearch.recipe import load_recipe
    from mlflow_autoresearch.research._confirm import confirm_trial
    from mlflow_autoresearch.settings import tracking_uri as resolve_uri

    named = load_recipe(recipe_dir, profile or None).name if recipe_dir else None
    resolved = resolve_trial(trial_ref, resolve_uri(tracking_uri), experiment=experiment, number_experiment=named)
    store, trial = resolved.store, resolved.trial
    folder = recipe_dir or trial.tags.get(S.RECIPE_DIR)
    if not folder:
        raise UsageError(f"--trial {trial.short} names no recipe folder; pass --recipe")
    recipe = load_recipe(Path(folder), profile or trial.tags.get(S.PROFILE) or None)
    result = confirm_trial(store, trial, recipe, seeds=seeds, profile=profile, against=against,
                           confidence=confidence, progress=lambda m: click.echo(m, err=True))
    click.echo(result.line)
