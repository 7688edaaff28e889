"""Library functions behind the CLI commands and the MLproject entry points."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from mlflow_autoresearch import schema as S
from mlflow_autoresearch._errors import UsageError
from mlflow_autoresearch.doctor import preflight
from mlflow_autoresearch.lineage import Lineage, MlflowStore, TrialRecord, match_trial, query_trial, resolve_trial
from mlflow_autoresearch.recipe import Recipe, load_recipe
from mlflow_autoresearch.settings import tracking_uri as resolve_uri
from mlflow_autoresearch.trial import create_trial, evaluate_folder, evaluate_trial, recipe_of

logger = logging.getLogger(__name__)


def _recipe(recipe_dir: Path | None, profile: str | None) -> Recipe:
    if recipe_dir is None:
        raise UsageError("--recipe is required: the folder that holds recipe.yaml (e.g. recipes/digits-speedrun)")
    return load_recipe(recipe_dir, profile)


def open_store(recipe: Recipe, experiment: str | None, tracking_uri: str | None) -> MlflowStore:
    return MlflowStore(experiment or recipe.name, resolve_uri(tracking_uri))


def evaluate_command(
    *,
    recipe_dir: Path | None,
    code: Path | None,
    trial_id: str | None,
    profile: str | None,
    experiment: str | None,
    tracking_uri: str | None,
    seeds: int | None,
    gpu: str | None,
    progress: Callable[[str], None] | None = None,
    facts_only: bool = False,
    allow_failed_baseline: bool = False,
) -> TrialRecord:
    """Score code as a new trial, or (re-)score an existing trial by run id.

    The keep decision follows in this process (confirmation seeds included),
    unless ``facts_only``: the loop that submitted this evaluation decides.
    A confirmation run (kind ``confirm``) is measured and ended.  A new
    baseline that does not pass raises :class:`~mlflow_autoresearch._errors.BaselineFailed`
    (exit code 1, with its stderr's tail) unless ``allow_failed_baseline``.
    """
    from mlflow_autoresearch.loop._decision import decide_trial, measure_in_process, run_measurement

    extra_env = {"CUDA_VISIBLE_DEVICES": gpu} if gpu else None
    if trial_id is None:
        recipe = _recipe(recipe_dir, profile)
        preflight(recipe, tracking_uri=tracking_uri, experiment=experiment, echo=progress)  # before the store opens
        store = open_store(recipe, experiment, tracking_uri)
        rec = evaluate_folder(store, recipe, code, profile=profile, seeds=seeds, progress=progress,
                              allow_failed_baseline=allow_failed_baseline)
        _report(rec, progress)
        return rec

    # Bad input is refused before the tracking store is touched (or, for SQLite, created).
    named = load_recipe(recipe_dir, profile).name if recipe_dir is not None else None
    resolved = resolve_trial(trial_id, resolve_uri(tracking_uri), experiment=experiment, number_experiment=named)
    store, trial = resolved.store, resolved.trial
    trial_id, client = trial.run_id, store.client
    recipe = load_recipe(recipe_dir, profile or trial.tags.get(S.PROFILE) or None) if recipe_dir else recipe_of(trial)
    if trial.tags.get(S.KIND) == "confirm":
        of = store.get(trial.tags[S.MEASURES])
        run_measurement(store, recipe, trial_id, of, int(trial.tags.get(S.SEED, "0")), extra_env)
        return store.get(trial_id)

    def decide(rec: TrialRecord) -> TrialRecord:
        if facts_only:
            return rec
        return decide_trial(store, recipe, rec, measurer=measure_in_process(store, recipe, extra_env), echo=progress)

    project_run = os.environ.get("MLFLOW_RUN_ID")
    if trial.status == "RUNNING" and project_run in (None, trial_id):
        from mlflow_autoresearch.loop._executor import LeaseKeeper, new_owner

        # This process now evaluates the trial: it holds the lease, so a resumed loop waits for it.
        leases = LeaseKeeper(store, new_owner(), float(os.environ.get("AUTORESEARCH_LEASE_SECONDS", "120")))
        leases.hold(trial_id)
        try:
            rec = decide(evaluate_trial(store, trial_id, recipe=recipe, seeds=seeds, extra_env=extra_env,
                                        progress=progress))
        finally:
            leases.release(trial_id)
            leases.close()
    else:
        # A finished trial is immutable: re-scoring records a new trial with the same code.
        again = create_trial(store, recipe, store.code(trial_id), specialist="rescore", parent=trial,
                             hypothesis=f"re-score of {trial.short} with the same code", backend="none",
                             profile=trial.tags.get(S.PROFILE))
        rec = decide(evaluate_trial(store, again.run_id, recipe=recipe, seeds=seeds, extra_env=extra_env,
                                    progress=progress))
        if project_run and project_run != trial_id:
            client.set_tag(project_run, S.KIND, "evaluation")
            client.set_tag(project_run, "autoresearch.rescored_as", rec.run_id)
            client.set_tag(project_run, S.OUTCOME, rec.outcome.value if rec.outcome else "")
            for k, v in rec.metrics.items():
                client.log_metric(project_run, k, v)
    _report(rec, progress)
    return rec


def _report(rec: TrialRecord, progress: Callable[[str], None] | None) -> None:
    if progress:
        score = "—" if rec.score is None else f"{rec.score:.5g}"
        progress(f"{rec.name}: {rec.outcome.value if rec.outcome else rec.status}, score {score}, "
                 f"decision {rec.decision} (run {rec.run_id})")


def lineage_command(*, recipe_dir, profile, experiment, tracking_uri, role=None, trial_ref=None) -> str:
    recipe = _recipe(recipe_dir, profile or None)
    store = open_store(recipe, experiment or None, tracking_uri)
    lineage = Lineage.load(store, recipe.metric.goal)
    if trial_ref:
        t = match_trial(lineage.trials, trial_ref, where=f"in experiment {store.experiment_name!r}")
        return query_trial(store, lineage, t.run_id)
    return lineage.render(role)


def run_command(*, recipe_dir, profile, experiment, tracking_uri, flags: dict, echo, verbose: bool = False):
    """The loop, shown as a live status line on a terminal (plain lines elsewhere); its LoopResult.

    Unless ``verbose``, the evaluator's per-seed lines and MLflow's INFO lines are left out.
    """
    from mlflow_autoresearch.loop import run_loop
    from mlflow_autoresearch.loop._progress import make_display
    from mlflow_autoresearch.settings import make_settings

    # MLproject passes '' for a parameter left at its empty default: that means "not given".
    profile, experiment = profile or None, experiment or None
    flags = {k: (None if v == "" else v) for k, v in flags.items()}
    recipe = _recipe(recipe_dir, profile)
    settings = make_settings(profile=profile, experiment=experiment, tracking_uri=tracking_uri, **flags)
    # Before the store is opened: a setup problem is one line with its fix, and nothing is recorded.
    preflight(recipe, tracking_uri=settings.tracking_uri, experiment=settings.experiment, agent=settings.agent,
              provider=settings.provider, base_url=settings.anthropic_base_url, echo=echo,
              trials_here=settings.in_process or settings.backend == "local")
    display = make_display(echo)
    per_seed = logging.getLogger("mlflow_autoresearch.evaluator")  # "seed 1/2: training" for every trial
    level = per_seed.level
    if not verbose:
        per_seed.setLevel(logging.WARNING)
    try:
        return run_loop(recipe, settings, echo=display.message, display=display, verbose=verbose)
    finally:
        per_seed.setLevel(level)
