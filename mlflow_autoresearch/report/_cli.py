"""``autoresearch report``: a thin click command over :func:`build_report` and :func:`log_report`."""

from __future__ import annotations

from pathlib import Path

import click

from mlflow_autoresearch.cli import handles_errors


@click.command("report", epilog=(
    "\b\nExamples:\n"
    "  autoresearch report                                # the store's only experiment\n"
    "  autoresearch report --recipe recipes/digits-speedrun --out report/\n"
    "  autoresearch report --experiment digits-speedrun --log"))
@click.option("--experiment", default=None,
              help="Experiment name [default: the recipe's name, else the store's only experiment].")
@click.option("--recipe", "recipe_dir", type=click.Path(path_type=Path), default=None,
              help="Recipe folder: names the experiment and the score's direction.")
@click.option("--profile", default=None, help="A profile of the recipe.")
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False, path_type=Path),
              help="Folder to write report.html, the PNG plots and summary.json into "
                   "[default: ./autoresearch-report/<experiment>].")
@click.option("--tracking-uri", default=None,
              help="Tracking store [default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db].")
@click.option("--goal", type=click.Choice(["minimize", "maximize"]), default=None,
              help="Score direction [default: the recipe's, else inferred from the kept trials].")
@click.option("--ui-url", default=None,
              help="MLflow UI address for trial links [default: the tracking URI when it is http(s)].")
@click.option("--log", "log_run", is_flag=True, help="Also log the report as a summary run of the experiment.")
@handles_errors
def report_command(experiment, recipe_dir, profile, out_dir, tracking_uri, goal, ui_url, log_run) -> None:
    """Write the experiment's report: plots, lineage tree, leaderboard, cost, repairs (one HTML page).

    Prints the path of report.html on stdout and where it wrote on stderr.
    """
    from mlflow_autoresearch.lineage import MlflowStore
    from mlflow_autoresearch.recipe import load_recipe
    from mlflow_autoresearch.report._build import build_report, log_report
    from mlflow_autoresearch.settings import tracking_uri as resolve_uri

    if recipe_dir is not None:
        recipe = load_recipe(recipe_dir, profile)
        experiment = experiment or recipe.name
        goal = goal or recipe.metric.goal
    uri = resolve_uri(tracking_uri)
    if experiment is None:
        experiment = only_experiment(uri)
    _check_experiment(uri, experiment)
    if out_dir is None:
        out_dir = Path("autoresearch-report") / _safe(experiment)
    store = MlflowStore(experiment, uri, create=False)
    paths = build_report(store, out_dir, goal=goal, ui_url=ui_url)
    click.echo(f"report: wrote {paths.html.parent}/ (report.html, summary.json, {len(paths.images)} plots) "
               f"for experiment {experiment!r}", err=True)
    if log_run:
        run_id = log_report(store, goal=goal, ui_url=ui_url)
        click.echo(f"report logged to run {run_id} (artifacts: report/report.html)", err=True)
    click.echo(str(paths.html))


def _check_experiment(uri: str, name: str) -> None:
    """A missing experiment is a usage error that lists what is there."""
    from mlflow_autoresearch._errors import UsageError
    from mlflow_autoresearch.lineage._mlflow import open_client, sqlite_path

    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        raise UsageError(f"there is no tracking store at {uri}: pass --tracking-uri, or run `autoresearch run` first")
    client = open_client(uri)
    exp = client.get_experiment_by_name(name)
    if exp is None or exp.lifecycle_stage == "deleted":
        names = [e.name for e in client.search_experiments(max_results=20) if e.name != "Default"]
        known = ", ".join(names) if names else "none"
        raise UsageError(f"no experiment named {name!r} at {uri} (experiments there: {known})")


def _safe(name: str) -> str:
    """An experiment name as one folder name."""
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "experiment"


def only_experiment(uri: str, option: str = "--experiment or --recipe") -> str:
    """The name of the store's only experiment (MLflow's own ``Default`` left out).

    Raises UsageError, naming the experiments, when there are none or several; a local SQLite
    store that does not exist is not created.
    """
    from mlflow_autoresearch._errors import UsageError
    from mlflow_autoresearch.lineage._mlflow import open_client, sqlite_path

    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        raise UsageError(f"there is no tracking store at {uri}: pass --tracking-uri, or run `autoresearch run` first")
    names = [e.name for e in open_client(uri).search_experiments(max_results=1000) if e.name != "Default"]
    if not names:
        raise UsageError(f"no experiments at {uri}: run `autoresearch run --recipe DIR` first")
    if len(names) > 1:
        shown = ", ".join(repr(n) for n in sorted(names)[:20]) + (", ..." if len(names) > 20 else "")
        raise UsageError(f"{len(names)} experiments at {uri}: name one with {option} ({shown})")
    return names[0]
