"""The ``autoresearch`` command: thin click wrappers over library functions.

Every user error ends with one clear message on stderr and exit code 2;
nothing is written to the tracking store before the input is validated.
"""

from __future__ import annotations

import functools
import logging
import os
import shlex
import sys
from pathlib import Path

import click

from mlflow_autoresearch._errors import AutoresearchError

logger = logging.getLogger("mlflow_autoresearch")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s", stream=sys.stderr)
    for noisy in ("alembic", "mlflow", "urllib3", "httpx", "botocore", "optuna"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def handles_errors(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except AutoresearchError as e:
            click.echo(f"autoresearch: error: {e}", err=True)
            sys.exit(e.exit_code)

    return wrapper


def _echo(msg: str) -> None:
    click.echo(msg, err=True)


def _silent(msg: str) -> None:
    pass


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mlflow-autoresearch")
    except PackageNotFoundError:
        return "unknown (not installed)"


TRIAL_FORMS = "t0007, a run id, or a unique prefix of one (6+ characters)"


def examples(*lines: str) -> str:
    """A click epilog: the command's examples, one per line, kept as typed (\b stops rewrapping)."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


@click.group(epilog="Shell completion (bash): eval \"$(_AUTORESEARCH_COMPLETE=bash_source autoresearch)\"; "
                    "zsh and fish: see docs/cli.md.")
@click.option("-v", "--verbose", is_flag=True,
              help="Debug logging; `run` also shows MLflow's INFO lines and each evaluation's own output.")
@click.version_option(_version(), "--version", prog_name="autoresearch",
                      message="%(prog)s %(version)s")
def cli(verbose: bool) -> None:
    """Specialist agents that propose, measure and revise training recipes, tracked in MLflow."""
    _setup_logging(verbose)


def _path_or_none(ctx, param, value):
    return Path(value) if value else None  # MLproject passes '' for "not given"


recipe_option = click.option("--recipe", "recipe_dir", callback=_path_or_none,
                             help="Recipe folder (with recipe.yaml).")
profile_option = click.option("--profile", default=None, help="A profile of the recipe (e.g. quick, tiny).")
experiment_option = click.option("--experiment", default=None, help="Experiment name [default: the recipe's name].")
tracking_option = click.option("--tracking-uri", default=None,
                               help="Tracking store [default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db].")


@cli.command(epilog=examples(
    "autoresearch evaluate --recipe recipes/digits-speedrun           # the recipe's own code",
    "autoresearch evaluate --recipe recipes/digits-speedrun --code my/ # a folder of edited code",
    "autoresearch evaluate --trial t0007 --recipe recipes/digits-speedrun",
    "autoresearch evaluate --trial 1a2b3c4d                            # a run-id prefix"))
@recipe_option
@click.option("--code", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Folder with the code to score [default: the recipe's own code].")
@click.option("--trial", "trial_id", default=None, help=f"Re-score this trial instead: {TRIAL_FORMS}.")
@profile_option
@experiment_option
@tracking_option
@click.option("--seeds", type=click.IntRange(min=0), default=0, help="Seeds to run [default: the recipe's].")
@click.option("--gpu", default="", help="Pin the trial to these CUDA devices (sets CUDA_VISIBLE_DEVICES).")
@click.option("--facts-only", is_flag=True, default=False,
              help="Record the evaluator's facts and stop: the loop that submitted this evaluation decides.")
@click.option("--quiet", is_flag=True, default=False, envvar="AUTORESEARCH_QUIET",
              help="Print only warnings and errors, not the progress and the run id (the loop sets "
                   "AUTORESEARCH_QUIET=1 for the evaluations it submits, unless -v).")
@click.option("--allow-failed-baseline", is_flag=True, default=False,
              help="Keep a baseline that does not pass (exit 0) instead of stopping with its error (exit 1).")
@handles_errors
def evaluate(recipe_dir, code, trial_id, profile, experiment, tracking_uri, seeds, gpu, facts_only, quiet,
             allow_failed_baseline) -> None:
    """Score one trial: record CODE (or the recipe's code) as a trial, or re-score --trial.

    The keep decision follows: a trial that beats the best is confirmed with paired seeds first.
    """
    from mlflow_autoresearch.api import evaluate_command

    if quiet:  # the evaluator's per-seed lines too, on every path (confirmation runs log them)
        logging.getLogger("mlflow_autoresearch").setLevel(logging.WARNING)
    rec = evaluate_command(recipe_dir=recipe_dir, code=code, trial_id=trial_id or None, profile=profile or None,
                           experiment=experiment or None, tracking_uri=tracking_uri, seeds=seeds or None,
                           gpu=gpu or None, progress=_silent if quiet else _echo, facts_only=facts_only,
                           allow_failed_baseline=allow_failed_baseline)
    if not quiet:
        click.echo(rec.run_id)


@cli.command(epilog=examples(
    "autoresearch run --recipe recipes/digits-speedrun --trials 20 --agent offline",
    "autoresearch run --recipe recipes/digits-speedrun --profile quick --trials 6 --in-process",
    "autoresearch run --recipe recipes/digits-speedrun --agent claude --dollars 5",
    "mlflow run . -e autoresearch --env-manager local -P trials=5"))
@recipe_option
@profile_option
@experiment_option
@tracking_option
@click.option("--trials", type=int, default=None,
              help="Total trials of this --worker in the experiment, kept in the store: a rerun of the same "
                   "command tops up to it (resumes), it does not add that many again. The baseline, refused "
                   "duplicate proposals and harness errors (retried) do not count [default: 20].")
@click.option("--agent", default=None,
              help="Specialist backend: offline, claude, auto (claude when ANTHROPIC_API_KEY is set), "
                   "or module:Factory [default: auto].")
@click.option("--worker", default=None, help="Name of this loop; budgets count per worker [default: default].")
@click.option("--slots", type=int, default=None,
              help="Evaluation slots [default: one per GPU, else 1; with a cluster backend: jobs at once, default 1].")
@click.option("--proposals-ahead", type=int, default=None, help="Proposals in flight beyond the slots.")
@click.option("--wall-seconds", type=float, default=None, help="Stop after this wall clock.")
@click.option("--dollars", type=float, default=None, help="Stop when the LLM spend reaches this.")
@click.option("--seed", type=int, default=None, help="Seed of the loop's own choices.")
@click.option("--model", default=None, help="Claude model id [default: claude-sonnet-5-5].")
@click.option("--fallback-model", default=None, help="Model a refused proposal starts over on.")
@click.option("--max-turns", type=int, default=None, help="Model calls per proposal [default: 24].")
@click.option("--max-tokens", type=int, default=None,
              help="Output tokens per model call, thinking included [default: 16000].")
@click.option("--thinking", default=None, help="auto (the model's default), off, adaptive, or a budget in tokens.")
@click.option("--effort", type=click.Choice(["low", "medium", "high", "xhigh", "max"]), default=None,
              help="Output effort [default: the model's].")
@click.option("--cache-ttl", type=click.Choice(["5m", "1h"]), default=None, help="Prompt-cache lifetime [default: 5m].")
@click.option("--provider", type=click.Choice(["auto", "anthropic", "bedrock", "vertex", "foundry"]), default=None,
              help="Where Claude is served [default: auto, by the credentials present].")
@click.option("--anthropic-base-url", default=None,
              help="An Anthropic-compatible server, e.g. a local one [default: $ANTHROPIC_BASE_URL].")
@click.option("--connect-timeout", type=float, default=None, help="Seconds to connect to the model API [default: 10].")
@click.option("--prices", default=None, help='Model prices, JSON or a file: {"model": [usd per Mtok in, out]}.')
@click.option("--in-process", is_flag=True, default=None, help="Evaluate in this process (no mlflow run).")
@click.option("--backend", default=None,
              help="MLflow project backend for evaluations: local, slurm, kubernetes, ... [default: local].")
@click.option("--backend-config", default=None,
              help="Backend config file (JSON; for slurm: partition, account, gpus, ... see docs/slurm.md).")
@click.option("--project", default=None,
              help="MLflow project whose `evaluate` entry point runs trials [default: a generated local one; "
                   "for --backend kubernetes e.g. docs/cluster].")
@click.option("--steering-file", default=None, help="A note every specialist reads at its next proposal.")
@click.option("--sweep-points", type=int, default=None, help="Optuna points after each kept trial with knobs.")
@click.option("--sweep-storage", default=None, help="Optuna storage URL [default: optuna.db beside mlflow.db].")
@click.option("--arm", default=None,
              help="Ablation arm: default, lineage-off (specialists see only the parent), generalist (one role "
                   "with every brief) or generic:N (N unnamed roles); its own experiment <recipe>-<arm> unless "
                   "--experiment [default: default].")
@click.option("--lessons-every", type=int, default=None,
              help="An analyst writes a lessons note every K trials; specialists read the latest [default: 0, off].")
@click.option("--lessons-from", multiple=True, default=None,
              help="Import the lessons and kept changes of this experiment (repeatable).")
@click.option("--allow-failed-baseline", is_flag=True, default=None,
              help="Go on when the baseline does not pass (specialists try to repair it) instead of stopping "
                   "with its error (exit 1).")
@handles_errors
def run(recipe_dir, profile, experiment, tracking_uri, **flags) -> None:
    """Run the propose-measure-revise loop on a recipe.

    On a terminal a status line at the bottom shows trials finished of --trials, the best, elapsed
    time and an estimate of the time left; elsewhere each finished trial prints two plain lines.
    Ctrl-C stops it cleanly and exits 130 (a second Ctrl-C aborts); the same command resumes.
    """
    from mlflow_autoresearch.api import run_command

    verbose = bool(click.get_current_context().find_root().params.get("verbose"))
    again = "autoresearch " + shlex.join(sys.argv[1:])
    try:
        result = run_command(recipe_dir=recipe_dir, profile=profile, experiment=experiment,
                             tracking_uri=tracking_uri, flags=flags, echo=_echo, verbose=verbose)
    except KeyboardInterrupt:  # a second Ctrl-C: no clean finish
        _echo(f"autoresearch: aborted; trials left running are evaluated again on resume: {again}")
        sys.exit(130)
    if result.interrupted:
        _echo(f"autoresearch: interrupted; to resume, run the same command again: {again}")
        sys.exit(130)


@cli.command(epilog=examples(
    "autoresearch lineage --recipe recipes/digits-speedrun",
    "autoresearch lineage --recipe recipes/digits-speedrun --role optimization",
    "autoresearch lineage --recipe recipes/digits-speedrun --trial t0007",
    "autoresearch lineage --recipe recipes/digits-speedrun --trial 1a2b3c4d"))
@recipe_option
@profile_option
@experiment_option
@tracking_option
@click.option("--role", default=None, help="Add this specialist's own last trials.")
@click.option("--trial", "trial_ref", default=None, help=f"Show one trial in full: {TRIAL_FORMS}.")
@handles_errors
def lineage(recipe_dir, profile, experiment, tracking_uri, role, trial_ref) -> None:
    """Print the lineage views an agent reads."""
    from mlflow_autoresearch.api import lineage_command

    click.echo(lineage_command(recipe_dir=recipe_dir, profile=profile, experiment=experiment,
                               tracking_uri=tracking_uri, role=role, trial_ref=trial_ref))


@cli.command(epilog=examples(
    "autoresearch ui                                   # ./mlflow.db, its only experiment, a free port",
    "autoresearch ui --experiment digits-speedrun --port 5000",
    "autoresearch ui --tracking-uri sqlite:///runs/mlflow.db"))
@click.option("--experiment", default=None,
              help="Experiment to open [default: the recipe's, else the store's only one, else the list].")
@recipe_option
@tracking_option
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Port on 127.0.0.1 [default: a free one].")
@handles_errors
def ui(experiment, recipe_dir, tracking_uri, port) -> None:
    """Start the MLflow UI on this store (127.0.0.1) and print a link to the experiment's trials.

    The link opens the runs table in MLflow's model-training view.  Ctrl-C stops the server.
    A tracking server (http/https) already serves the UI: only the link is printed.
    """
    from mlflow_autoresearch.settings import tracking_uri as resolve_uri
    from mlflow_autoresearch.ui import serve

    if recipe_dir is not None and experiment is None:
        from mlflow_autoresearch.recipe import load_recipe

        experiment = load_recipe(recipe_dir).name
    serve(resolve_uri(tracking_uri), experiment=experiment, port=port, say=_echo,
          show=lambda link: click.echo(link))


def main() -> None:
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    _load_plugins()
    cli(prog_name="autoresearch")


# Commands that live beside the feature they drive: name -> "module:click_command".
BUILTIN_COMMANDS = {
    "init": "mlflow_autoresearch.onboard:init_command",
    "doctor": "mlflow_autoresearch.doctor:doctor_command",
    "sweep": "mlflow_autoresearch.sweep:sweep_command",
    "report": "mlflow_autoresearch.report:report_command",
    "compare": "mlflow_autoresearch.research._cli:compare_command",
    "confirm": "mlflow_autoresearch.research._cli:confirm_command",
}


def _load_plugins() -> None:
    """Subcommands of other modules of this package, then plug-ins' (entry points)."""
    import importlib
    from importlib.metadata import entry_points

    for name, target in BUILTIN_COMMANDS.items():
        module, attr = target.split(":")
        try:
            cli.add_command(getattr(importlib.import_module(module), attr), name)
        except (ImportError, AttributeError) as e:
            logger.debug("command %s unavailable: %s", name, e)

    for ep in entry_points(group="mlflow_autoresearch.commands"):
        try:
            cmd = ep.load()
        except Exception as e:  # a broken plug-in must not break the CLI
            logger.warning("autoresearch: could not load command plug-in %r: %s", ep.name, e)
            continue
        cli.add_command(cmd, ep.name)


if __name__ == "__main__":
    main()
