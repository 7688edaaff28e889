"""``autoresearch report``: a thin click command over :func:`build_report` and :func:`log_report`."""

from __future__ import annotations

from pathlib import Path

import click

from mlflow_autoresearch.cli import handles_errors


@click.command("report")
@click.option("--experiment", default=None, help="Experiment name [default: the recipe's name].")
@click.option("--recipe", "recipe_dir", type=click.Path(path_type=Path), default=None,
              help="Recipe folder: names the experiment and the score's direction.")
@click.option("--profile", default=None, help="A profile of the recipe.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder to write report.html, the PNG plots and summary.json into.")
@click.option("--tracking-uri", default=None,
              help="Tracking store [default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db].")
@click.option("--goal", type=click.Choice(["minimize", "maximize"]), default=None,
              help="Score direction [default: the recipe's, else inferred from the kept trials].")
@click.option("--ui-url", default=None,
              help="MLflow UI address for trial links [default: the tracking URI when it is http(s)].")
@click.option("--log", "log_run", is_flag=True, help="Also log the report as a summary run of the experiment.")
@handles_errors
def report_command(experiment, recipe_dir, profile, out_dir, tracking_uri, goal, ui_url, log_run) -> None:
    """Write the experiment's report: plots, lineage tree, leaderboard, cost, repairs (one HTML page)."""
    from mlflow_autoresearch._errors import UsageError
    from mlflow_autoresearch.lineage import MlflowStore
    from mlflow_autoresearch.recipe import load_recipe
    from mlflow_autoresearch.report._build import build_report, log_report
    from mlflow_autoresearch.settings import tracking_uri as resolve_uri

    if experiment is None and recipe_dir is None:
        raise UsageError("name the experiment: --experiment NAME, or --recipe DIR for the recipe's experiment")
    if recipe_dir is not None:
        recipe = load_recipe(recipe_dir, profile)
        experiment = experiment or recipe.name
        goal = goal or recipe.metric.goal
    uri = resolve_uri(tracking_uri)
    _check_experiment(uri, experiment)
    store = MlflowStore(experiment, uri, create=False)
    paths = build_report(store, out_dir, goal=goal, ui_url=ui_url)
    click.echo(f"report: {paths.html} ({len(paths.images)} plots)", err=True)
    if log_run:
        run_id = log_report(store, goal=goal, ui_url=ui_url)
        click.echo(f"report logged to run {run_id} (artifacts: report/report.html)", err=True)
    click.echo(str(paths.html))


def _check_experiment(uri: str, name: str) -> None:
    """A missing experiment is a usage error that lists what is there."""
    from mlflow.tracking import MlflowClient

    from mlflow_autoresearch._errors import UsageError

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(name)
    if exp is None or exp.lifecycle_stage == "deleted":
        names = [e.name for e in client.search_experiments(max_results=20) if e.name != "Default"]
        known = ", ".join(names) if names else "none"
        raise UsageError(f"no experiment named {name!r} at {uri} (experiments there: {known})")
