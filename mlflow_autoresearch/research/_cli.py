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
