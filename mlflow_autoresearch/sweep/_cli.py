"""``autoresearch sweep``: a thin click wrapper over :func:`run_sweep` (also the MLproject ``sweep`` entry point)."""

from __future__ import annotations

import logging
import os

import click

from mlflow_autoresearch._errors import UsageError
from mlflow_autoresearch.recipe import Knob

logger = logging.getLogger(__name__)


def parse_knob(spec: str) -> Knob:
    """``NAME:LOW:HIGH[:log|int|log,int][@FILE]`` -> a Knob.

    Raises:
        UsageError: naming the spec and what is allowed.
    """
    from pydantic import ValidationError

    text, _, file = spec.partition("@")
    parts = text.split(":")
    if len(parts) not in (3, 4):
        raise UsageError(f"--knob {spec!r}: expected NAME:LOW:HIGH[:log|int] (e.g. LR:1e-4:1e-2:log, EPOCHS:2:80:int)")
    name, low, high = parts[:3]
    flags = set(parts[3].split(",")) if len(parts) == 4 else set()
    if flags - {"log", "int", ""}:
        raise UsageError(f"--knob {spec!r}: unknown scale {parts[3]!r}; allowed: log, int, log,int")
    try:
        lo, hi = float(low), float(high)
    except ValueError:
        raise UsageError(f"--knob {spec!r}: LOW and HIGH must be numbers") from None
    try:
        return Knob(name=name, low=lo, high=hi, log="log" in flags, integer="int" in flags, file=file or None)
    except ValidationError as e:
        raise UsageError(f"--knob {spec!r}: " + "; ".join(err["msg"].removeprefix("Value error, ")
                                                         for err in e.errors())) from None


def _knobs(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(v for v in value if v)  # MLproject passes '' for "not given"


@click.command("sweep", epilog=(
    "\b\nExamples:\n"
    "  autoresearch sweep --trial t0007 --recipe recipes/digits-speedrun --points 12\n"
    "  autoresearch sweep --trial 1a2b3c4d --knob LR:1e-4:1e-2:log --knob EPOCHS:2:20:int\n"
    "  mlflow run . -e sweep --env-manager local -P trial=<run id>"))
@click.option("--trial", "trial_id", required=True,
              help="The accepted trial to sweep: t0007, a run id, or a unique prefix of one.")
@click.option("--points", type=click.IntRange(min=1), default=12, show_default=True,
              help="Points in the study (a rerun evaluates only the missing ones).")
@click.option("--knob", "knob_specs", multiple=True, callback=_knobs,
              help="NAME:LOW:HIGH[:log|int][@FILE]; repeat. [default: the trial's and the recipe's knobs]")
@click.option("--storage", default=None,
              help="Optuna storage URL [default: $AUTORESEARCH_SWEEP_STORAGE, else optuna.db beside mlflow.db].")
@click.option("--sampler", type=click.Choice(["tpe", "random"]), default="tpe", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Sampler seed.")
@click.option("--seeds", type=click.IntRange(min=0), default=0, help="Seeds per point [default: the recipe's].")
@click.option("--pruner", type=click.Choice(["median", "none"]), default="median", show_default=True)
@click.option("--prune-metric", default=None, help="Printed curve fed to the pruner: NAME[:minimize|maximize].")
@click.option("--study", "study_name", default=None, help="Study name [default: sweep-<trial>-<run id prefix>].")
@click.option("--no-submit", is_flag=True, help="Only run the study; do not submit the best point as a trial.")
@click.option("--recipe", "recipe_dir", default=None, help="Recipe folder [default: the one named on the trial].")
@click.option("--tracking-uri", default=None,
              help="Tracking store [default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db].")
@click.option("--experiment", default=None, help="Experiment of the trial [default: found from the trial id].")
@click.option("--gpu", default="", help="Pin points to these CUDA devices (sets CUDA_VISIBLE_DEVICES).")
def sweep_command(trial_id, points, knob_specs, storage, sampler, seed, seeds, pruner, prune_metric, study_name,
                  no_submit, recipe_dir, tracking_uri, experiment, gpu) -> None:
    """Tune the numeric knobs of an accepted trial with Optuna; its best point becomes a new trial."""
    from mlflow_autoresearch.cli import handles_errors

    handles_errors(_sweep)(trial_id=trial_id, points=points, knob_specs=knob_specs, storage=storage or None,
                           sampler=sampler, seed=seed, seeds=seeds or None, pruner=pruner,
                           prune_metric=prune_metric or None, study_name=study_name or None, submit=not no_submit,
                           recipe_dir=recipe_dir or None, tracking_uri=tracking_uri or None,
                           experiment=experiment or None, gpu=gpu or None)


def _sweep(*, trial_id, points, knob_specs, storage, sampler, seed, seeds, pruner, prune_metric, study_name, submit,
           recipe_dir, tracking_uri, experiment, gpu) -> None:
    knobs = [parse_knob(s) for s in knob_specs] or None  # refuse a malformed flag before touching any store
    import optuna

    from mlflow_autoresearch import schema as S
    from mlflow_autoresearch.lineage import resolve_trial
    from mlflow_autoresearch.recipe import load_recipe
    from mlflow_autoresearch.settings import tracking_uri as resolve_uri
    from mlflow_autoresearch.sweep._sweep import run_sweep

    if not logging.getLogger("mlflow_autoresearch").isEnabledFor(logging.DEBUG):
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    named = load_recipe(recipe_dir).name if recipe_dir else None
    resolved = resolve_trial(trial_id, resolve_uri(tracking_uri), experiment=experiment, number_experiment=named)
    store, trial, client = resolved.store, resolved.trial, resolved.store.client
    trial_id = trial.run_id
    recipe = load_recipe(recipe_dir, trial.tags.get(S.PROFILE)) if recipe_dir else None

    def echo(msg: str) -> None:
        click.echo(msg, err=True)

    result = run_sweep(store, recipe, trial_id, knobs=knobs, points=points, storage=storage, sampler=sampler,
                       seed=seed, seeds=seeds, pruner=pruner, prune_metric=prune_metric, study_name=study_name,
                       submit=submit, extra_env={"CUDA_VISIBLE_DEVICES": gpu} if gpu else None, progress=echo)
    echo(f"{result.study_name}: {result.finished} points ({result.evaluated_now} evaluated now) in "
         f"{result.storage}; {result.reason}")
    echo(f"see it: optuna-dashboard {result.storage}")
    project_run = os.environ.get("MLFLOW_RUN_ID")
    if project_run and project_run != trial_id:  # under `mlflow run . -e sweep`: link the project's run
        client.set_tag(project_run, S.KIND, "sweep")
        client.set_tag(project_run, "autoresearch.sweep_study", result.study_name)
        client.set_tag(project_run, "autoresearch.swept_trial", trial_id)
        if result.trial is not None:
            client.set_tag(project_run, "autoresearch.sweep_trial", result.trial.run_id)
            client.set_tag(project_run, S.DECISION, result.trial.decision or "")
    if result.trial is not None:
        click.echo(result.trial.run_id)
