"""``run_sweep``: an Optuna study over the numeric knobs of one accepted trial.

Optuna only ever changes numbers the code already holds; structure stays the
agents' business.  One sweep:

1. checks the knobs against the trial's code (before anything runs);
2. opens (or resumes) the study ``sweep-<tNNNN>-<run id prefix>`` in the
   storage beside the tracking store; the swept trial enters it as a free
   first point from its recorded score (it is not evaluated again);
3. evaluates points one by one through :func:`~mlflow_autoresearch.evaluator.evaluate_code`,
   each logged as an MLflow run nested under the trial (kind ``sweep_point``,
   never part of the lineage) until the study holds ``points`` finished points;
4. writes the best point that passed every gate into the code as a new trial
   (specialist ``sweep``, parent the swept trial) and sends it through the
   normal acceptance of :func:`~mlflow_autoresearch.trial.evaluate_trial`.

How one point is evaluated, recorded and (after the fact) pruned: ``_point.py``.
Where the study lives and how it recovers points of dead processes: ``_storage.py``.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mlflow_autoresearch import schema as S
from mlflow_autoresearch._errors import UsageError
from mlflow_autoresearch.outcome import Direction
from mlflow_autoresearch.recipe import Knob, Recipe
from mlflow_autoresearch.sweep._callback import SWEEP_STUDY, SWEPT_TRIAL, MlflowPointLogger
from mlflow_autoresearch.sweep._knobs import check_knobs, current_values, format_value, set_knobs
from mlflow_autoresearch.sweep._point import (
    OUTCOME,
    REASON,
    SOURCE,
    VALUES,
    PointObjective,
    SweepPoint,
    as_point,
    distribution,
    finite,
    prune_target,
)
from mlflow_autoresearch.sweep._storage import fail_dead_points, masked, open_storage, requeue_failed, resolve_storage

if TYPE_CHECKING:
    import optuna

    from mlflow_autoresearch.lineage import MlflowStore, TrialRecord

logger = logging.getLogger(__name__)

SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "none")
SUBMITTED = "submitted"  # study attribute: {point number: run id of the trial made from it}

Progress = Callable[[str], None]


@dataclass(frozen=True)
class SweepResult:
    """What a sweep did.  ``trial`` is the trial made from the best point, after acceptance."""

    study_name: str
    storage: str  # the storage URL, password hidden
    knobs: tuple[Knob, ...]
    points: tuple[SweepPoint, ...]  # every point of the study but the swept trial's own, in order
    best: SweepPoint | None
    trial: TrialRecord | None
    reason: str  # the trial's decision reason, or why no trial was made
    evaluated_now: int = 0  # points this call evaluated (the rest came from an earlier run)

    @property
    def finished(self) -> int:
        """Points with a result (COMPLETE or PRUNED); FAIL ones were interrupted and queued again."""
        return sum(1 for p in self.points if p.state in ("COMPLETE", "PRUNED"))


def default_study_name(trial: TrialRecord) -> str:
    """``sweep-t0007-1a2b3c4d``: one study per trial, the same on every machine and every rerun."""
    return f"sweep-{trial.short}-{trial.run_id[:8]}"


def _default_knobs(store: MlflowStore, trial: TrialRecord, recipe: Recipe,
                   files: Mapping[str, bytes]) -> list[Knob]:
    """The trial's own knobs (its ``proposal.json``) then the recipe's standing knobs.

    Lenient: a standing knob that this trial's code no longer has, or holds
    outside its range, is skipped with a warning (an explicit knob is refused).
    """
    declared: dict[str, Knob] = {}
    text = store.read_artifact(trial.run_id, S.PROPOSAL_JSON)
    if text:
        try:
            raw = json.loads(text).get("knobs") or []
            for item in raw:
                k = Knob.model_validate(item)
                declared.setdefault(k.name, k)
        except (ValueError, AttributeError, TypeError) as e:
            logger.warning("%s: the knobs in %s are unreadable (%s); using the recipe's", trial.short,
                           S.PROPOSAL_JSON, e)
    for k in recipe.knobs:
        declared.setdefault(k.name, k)
    usable = []
    for k in declared.values():
        try:
            usable += check_knobs(recipe, files, [k])
        except UsageError as e:
            logger.warning("knob %s skipped for %s: %s", k.name, trial.short, str(e).split("\n", 1)[-1].strip())
    return usable


def _sampler(name: str, seed: int, points: int) -> optuna.samplers.BaseSampler:
    import optuna

    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # Few points: fewer random ones before TPE models the space.
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(2, min(10, points // 3)),
                                          multivariate=True)


def _pruner(name: str) -> optuna.pruners.BasePruner:
    import optuna

    return optuna.pruners.MedianPruner(n_startup_trials=3) if name == "median" else optuna.pruners.NopPruner()


def run_sweep(
    store: MlflowStore,
    recipe: Recipe | None,
    trial_id: str,
    *,
    knobs: Sequence[Knob] | None = None,
    points: int = 12,
    storage: str | None = None,
    sampler: str = "tpe",
    seed: int = 0,
    seeds: int | None = None,
    pruner: str = "median",
    prune_metric: str | None = None,
    study_name: str | None = None,
    submit: bool = True,
    worker: str = "default",
    extra_env: dict[str, str] | None = None,
    progress: Progress | None = None,
) -> SweepResult:
    """Sweep the knobs of accepted trial ``trial_id``; submit the best point as a trial.

    ``points`` is the size of the study, not of this call: running the same
    call again after a crash evaluates only what is missing (the point that
    was running when the process died is evaluated again with the same
    values); a finished study evaluates nothing and returns the same trial.
    ``knobs`` None: the trial's own (``proposal.json``) plus the recipe's
    standing knobs, skipping those the code no longer holds in range.
    ``seeds``: seeds per point (default the recipe's); the submitted trial
    always gets the recipe's.  ``prune_metric``: ``name`` or
    ``name:minimize|maximize`` of a printed curve (default the score's own).
    ``storage``: an Optuna RDB URL (default: ``$AUTORESEARCH_SWEEP_STORAGE``,
    else beside the tracking store).

    Raises:
        UsageError: before anything runs, for a trial that is not accepted,
            knobs that the code refutes, a study of the same name with other knobs, bad options.
        HarnessError: the evaluator itself failed (the point is retried on the next run).
    """
    import optuna

    from mlflow_autoresearch.trial import recipe_of

    say = progress or (lambda msg: logger.info("%s", msg))
    if points < 1:
        raise UsageError(f"points must be at least 1 (got {points})")
    if sampler not in SAMPLERS:
        raise UsageError(f"unknown sampler {sampler!r}; choose one of: {', '.join(SAMPLERS)}")
    if pruner not in PRUNERS:
        raise UsageError(f"unknown pruner {pruner!r}; choose one of: {', '.join(PRUNERS)}")
    trial = store.get(trial_id)
    if trial.tags.get(S.KIND) != "trial":
        raise UsageError(f"run {trial_id} is not a trial (kind {trial.tags.get(S.KIND)!r}); sweep a trial's run id")
    if not trial.kept or trial.score is None:
        decision = f"decision {trial.decision}" if trial.decision else "not decided yet"
        raise UsageError(f"{trial.short} ({trial_id}) is not an accepted trial (outcome {trial.outcome}, {decision}); "
                         f"a sweep tunes a kept trial or the baseline")
    recipe = recipe or recipe_of(trial)
    direction = Direction(recipe.metric.goal)
    files = store.code(trial_id)
    if knobs is None:
        knobs = _default_knobs(store, trial, recipe, files)
        if not knobs:
            raise UsageError(f"nothing to sweep: recipe {recipe.name} declares no knob that {trial.short}'s code "
                             "holds in range; name one with --knob NAME:LOW:HIGH[:log|int]")
    else:
        if not knobs:
            raise UsageError("nothing to sweep: the list of knobs is empty")
        knobs = check_knobs(recipe, files, knobs)
    knobs = sorted(knobs, key=lambda k: k.name)
    prune_target(prune_metric, recipe)  # refuse a malformed one before anything runs
    parent_values = current_values(files, knobs)

    url = resolve_storage(storage, store.tracking_uri)
    name = study_name or default_study_name(trial)
    point_logger = MlflowPointLogger(store.client, store.experiment_id, trial_id, study_name=name,
                                     run_prefix=f"{trial.short}-sweep")

    def on_dead(study: optuna.Study, t: optuna.trial.FrozenTrial) -> None:
        point_logger.abandon(t)
        requeue_failed(study)

    rdb = open_storage(url, on_dead)
    try:
        existing = len(rdb.get_all_trials(rdb.get_study_id_from_name(name), deepcopy=False))
    except KeyError:
        existing = 0
    # Seeded, and different on every resumption: a reseeded TPE would propose its first points again.
    study = optuna.create_study(storage=rdb, study_name=name, direction=recipe.metric.goal,
                                sampler=_sampler(sampler, seed + existing, points), pruner=_pruner(pruner),
                                load_if_exists=True)
    _bind_study(study, trial, recipe, knobs, parent_values, url)
    say(f"study {name} in {masked(url)} ({'resumed' if existing else 'new'}): "
        + ", ".join(f"{k.name} in [{k.low:g}, {k.high:g}]{' log' if k.log else ''}{' int' if k.integer else ''}"
                    for k in knobs))
    store.set_tags(trial_id, {SWEEP_STUDY: name, S.PREFIX + "sweep_storage": masked(url)})

    fail_dead_points(study, lambda s, t: point_logger.abandon(t))
    requeue_failed(study)
    objective = PointObjective(recipe=recipe, files=files, knobs=knobs, logger=point_logger, worst=direction.worst,
                               prune_metric=prune_metric, seeds=seeds, extra_env=extra_env, say=say)

    evaluated_now = 0
    guard = 3 * points + 10  # each call either finishes a point or raises; this only bounds a bug
    while _done(study) < points and guard > 0:
        guard -= 1
        study.optimize(objective, n_trials=1, callbacks=[point_logger], gc_after_trial=False)
        evaluated_now += 1

    all_points = tuple(as_point(t) for t in study.get_trials(deepcopy=False) if t.user_attrs.get(SOURCE) != "parent")
    passed = [p for p in all_points if p.passed]
    best = max(passed, key=lambda p: direction.key(p.value)) if passed else None
    result = dict(study_name=name, storage=masked(url), knobs=tuple(knobs), points=all_points, best=best,
                  evaluated_now=evaluated_now)
    if best is None:
        counts = _count_outcomes(all_points)
        return SweepResult(trial=None, reason=f"no point passed every gate ({counts}); no trial made", **result)
    say(f"best point {best.number}: " + ", ".join(f"{n}={format_value(v, _is_int(knobs, n))}"
                                                   for n, v in best.values.items())
        + f", {recipe.metric.name} {best.value:.5g} (swept trial {trial.score:.5g})")
    if all(math.isclose(best.values[k.name], parent_values[k.name], rel_tol=1e-9, abs_tol=0) for k in knobs):
        return SweepResult(trial=None, reason="the best point holds the swept trial's own values; no trial made",
                           **result)
    if not submit:
        return SweepResult(trial=None, reason="not submitted (submit=False)", **result)
    rec = _submit(store, recipe, study, trial, files, knobs, best, all_points, url, worker, extra_env, say)
    return SweepResult(trial=rec, reason=rec.reason, **result)


def _is_int(knobs: Sequence[Knob], name: str) -> bool:
    return any(k.integer for k in knobs if k.name == name)


def _done(study: optuna.Study) -> int:
    from optuna.trial import TrialState

    return sum(1 for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
               if t.user_attrs.get(SOURCE) != "parent")


def _count_outcomes(points: Sequence[SweepPoint]) -> str:
    counts: dict[str, int] = {}
    for p in points:
        key = p.outcome or p.state.lower()
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no points"


def _bind_study(study: optuna.Study, trial: TrialRecord, recipe: Recipe, knobs: Sequence[Knob],
                parent_values: Mapping[str, float], url: str) -> None:
    """Record what the study sweeps; refuse to resume it with other knobs; add the swept trial's own point."""
    import optuna

    spec = [k.model_dump(mode="json") for k in knobs]
    attrs = study.user_attrs
    if "knobs" in attrs and attrs["knobs"] != spec:
        theirs = ", ".join(f"{k['name']}:{k['low']:g}:{k['high']:g}" for k in attrs["knobs"])
        raise UsageError(f"study {study.study_name} in {masked(url)} sweeps other knobs ({theirs}); run it with the "
                         "same knobs to resume it, or name another study (--study)")
    if study.direction.name.lower() != recipe.metric.goal:
        raise UsageError(f"study {study.study_name} is to {study.direction.name.lower()}, but {recipe.metric.name} "
                         f"is to {recipe.metric.goal}; name another study (--study)")
    if "knobs" not in attrs:
        for key, value in (("knobs", spec), ("swept_trial", trial.run_id), ("recipe", recipe.name),
                           ("metric", recipe.metric.name)):
            study.set_user_attr(key, value)
    if not any(t.user_attrs.get(SOURCE) == "parent" for t in study.get_trials(deepcopy=False)):
        study.add_trial(optuna.trial.create_trial(
            params=dict(parent_values), distributions={k.name: distribution(k) for k in knobs},
            value=float(trial.score), user_attrs={SOURCE: "parent", VALUES: dict(parent_values),
                                                  OUTCOME: "ok", REASON: f"{trial.short}'s recorded score"},
        ))


def _submit(store: MlflowStore, recipe: Recipe, study: optuna.Study, trial: TrialRecord,
            files: Mapping[str, bytes], knobs: Sequence[Knob], best: SweepPoint, points: Sequence[SweepPoint],
            url: str, worker: str, extra_env: dict[str, str] | None, say: Progress) -> TrialRecord:
    """The best point as a new trial through normal acceptance; once per best point, even across reruns."""
    from mlflow_autoresearch.loop._decision import decide_trial, measure_in_process
    from mlflow_autoresearch.loop._decision import evaluate_and_decide as evaluate_trial
    from mlflow_autoresearch.trial import create_trial

    submitted = dict(study.user_attrs.get(SUBMITTED) or {})
    done = submitted.get(str(best.number))
    if done:
        rec = store.get(done)
        if rec.finished:
            say(f"best point {best.number} was already submitted as {rec.short}: {rec.decision}")
            return rec
        if rec.measured:  # evaluated, decision pending (stopped in between)
            return decide_trial(store, recipe, rec, measurer=measure_in_process(store, recipe, extra_env), echo=say)
        return evaluate_trial(store, done, recipe=recipe, extra_env=extra_env, progress=say)
    literals = {k.name: format_value(best.values[k.name], k.integer) for k in knobs}
    shown = ", ".join(f"{n}={v}" for n, v in literals.items())
    n_eval = sum(1 for p in points if p.state in ("COMPLETE", "PRUNED"))
    hypothesis = (f"sweep of {trial.short}: {shown} (best of {n_eval} points: {recipe.metric.name} "
                  f"{best.value:.5g} vs {trial.score:.5g})")
    summary = {"study": study.study_name, "storage": masked(url), "swept_trial": trial.run_id,
               "knobs": [k.model_dump(mode="json") for k in knobs], "best_point": best.number,
               "points": [{"number": p.number, "values": dict(p.values), "state": p.state, "value": p.value
                           if finite(p.value) else None, "outcome": p.outcome, "run_id": p.run_id} for p in points]}
    new = create_trial(store, recipe, set_knobs(files, literals, knobs), specialist="sweep", hypothesis=hypothesis,
                       parent=trial, parent_files=files, profile=trial.tags.get(S.PROFILE), backend="optuna",
                       worker=worker, expected_effect=f"{recipe.metric.name} near {best.value:.5g}",
                       tags={SWEEP_STUDY: study.study_name, SWEPT_TRIAL: trial.run_id},
                       artifacts={"sweep.json": json.dumps(summary, indent=2)})
    submitted[str(best.number)] = new.run_id
    study.set_user_attr(SUBMITTED, submitted)
    say(f"submitting best point {best.number} as {new.short} for acceptance")
    return evaluate_trial(store, new.run_id, recipe=recipe, extra_env=extra_env, progress=say)
