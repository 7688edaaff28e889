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

Failed points (crashed, timed out, gate missed) are COMPLETE with the worst
value, so TPE learns to avoid their region; only a fault of the harness or a
dead process leaves a point FAIL, and such a point is evaluated again.

Pruning.  The evaluator reports a script's ``name: value`` lines once a seed
has ended, so the pruner is fed after the fact: the history of the prune
metric (of the first seed) is reported step by step and the point is PRUNED at
the first step where Optuna's MedianPruner says so — the same decision a live
pruner would take, but it saves no compute yet.  A pruned point cannot become
the best.  Scripts that print a metric once (digits) are never pruned.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow_autoresearch import schema as S
from mlflow_autoresearch._errors import UsageError
from mlflow_autoresearch.outcome import Direction, Outcome
from mlflow_autoresearch.recipe import Knob, Recipe
from mlflow_autoresearch.sweep._callback import RUN_ID_ATTR, SWEEP_STATE, SWEEP_STUDY, SWEPT_TRIAL, MlflowPointLogger
from mlflow_autoresearch.sweep._knobs import check_knobs, current_values, format_value, set_knobs
from mlflow_autoresearch.sweep._storage import (
    OWNER,
    fail_dead_points,
    masked,
    open_storage,
    owner,
    requeue_failed,
    resolve_storage,
)

if TYPE_CHECKING:
    import optuna

    from mlflow_autoresearch.evaluator import Evaluation
    from mlflow_autoresearch.lineage import MlflowStore, TrialRecord

logger = logging.getLogger(__name__)

SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "none")
SOURCE = "source"  # user attribute: "parent" on the swept trial's own point
VALUES = "values"  # user attribute: the literals written into the code
OUTCOME = "outcome"
REASON = "reason"
SUBMITTED = "submitted"  # study attribute: {point number: run id of the trial made from it}

Progress = Callable[[str], None]


@dataclass(frozen=True)
class SweepPoint:
    """One evaluated point of a study.  Immutable."""

    number: int  # the Optuna trial number
    values: Mapping[str, float]  # knob name -> the value written into the code
    state: str  # COMPLETE | PRUNED | FAIL | RUNNING | WAITING
    value: float | None  # what Optuna saw: the score, or the worst value for a failed point; None unless COMPLETE
    outcome: str | None  # the evaluator's outcome word
    reason: str = ""
    run_id: str | None = None  # the nested MLflow run

    @property
    def passed(self) -> bool:
        return self.state == "COMPLETE" and self.outcome == Outcome.OK.value and _finite(self.value)


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


def _finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)


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


def _distribution(k: Knob) -> Any:
    from optuna.distributions import FloatDistribution, IntDistribution

    if k.integer:
        return IntDistribution(math.ceil(k.low), math.floor(k.high), log=k.log)
    return FloatDistribution(k.low, k.high, log=k.log)


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


def _as_point(t: Any) -> SweepPoint:
    ua = t.user_attrs
    return SweepPoint(number=t.number, values=dict(ua.get(VALUES) or t.params), state=t.state.name,
                      value=t.value if t.state.name == "COMPLETE" else None, outcome=ua.get(OUTCOME), reason=ua.get(REASON, ""), run_id=ua.get(RUN_ID_ATTR))


def _log_point(client: Any, run_id: str, ev: Evaluation, patch: str) -> None:
    """The evaluator's facts on the point's run: metrics (with curves), outcome, logs, the knob diff."""
    import time

    from mlflow.entities import Metric, RunTag

    ts = int(time.time() * 1000)
    metrics = [Metric(k, float(v), ts, 0) for k, v in ev.metrics.items() if math.isfinite(v)]
    for k, values in ev.histories.items():
        if len(values) > 1:
            metrics += [Metric(k, float(v), ts, i) for i, v in enumerate(values) if math.isfinite(v)]
    tags = [RunTag(S.OUTCOME, ev.outcome.value), RunTag(S.REASON, S.clip(ev.reason, 1000)),
            RunTag(S.NEAR_MISS, "true" if ev.near_miss else "false")]
    client.log_batch(run_id, tags=tags)
    for i in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[i : i + 1000])
    client.log_text(run_id, patch, S.PATCH)
    client.log_text(run_id, json.dumps(ev.to_dict(), indent=2), S.FEEDBACK_JSON)
    for path in ev.logs.values():
        if Path(path).exists():
            client.log_artifact(run_id, str(path), S.LOGS_DIR)


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

    from mlflow_autoresearch.evaluator import evaluate_code
    from mlflow_autoresearch.lineage import write_snapshot
    from mlflow_autoresearch.trial import make_patch, recipe_of

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
        raise UsageError(f"{trial.short} ({trial_id}) is not an accepted trial (outcome {trial.outcome}, decision "
                         f"{trial.decision}); a sweep tunes a kept trial or the baseline")
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
    prune_name, prune_sign = _prune_target(prune_metric, recipe)
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
    worst = direction.worst

    def objective(t: optuna.Trial) -> float:
        raw = {k.name: (t.suggest_int(k.name, int(_distribution(k).low), int(_distribution(k).high), log=k.log)
                        if k.integer else t.suggest_float(k.name, k.low, k.high, log=k.log)) for k in knobs}
        literals = {k.name: format_value(raw[k.name], k.integer) for k in knobs}
        t.set_user_attr(OWNER, owner())
        t.set_user_attr(VALUES, {n: float(v) for n, v in literals.items()})
        code = set_knobs(files, literals, knobs)
        run_id = point_logger.start(t.number, literals, tags={S.RECIPE: recipe.name})
        t.set_user_attr(RUN_ID_ATTR, run_id)
        shown = ", ".join(f"{n}={v}" for n, v in literals.items())
        say(f"point {t.number}: {shown}")
        try:
            with tempfile.TemporaryDirectory(prefix="autoresearch-sweep-") as tmp:
                code_dir = Path(tmp) / "code"
                write_snapshot(code, code_dir)
                ev = evaluate_code(recipe, code_dir, seeds=seeds, extra_env=extra_env,
                                   progress=lambda m: say(f"point {t.number}: {m}"), keep_logs_in=Path(tmp) / "logs")
                _log_point(store.client, run_id, ev, make_patch(files, code))
        except BaseException as e:
            # Not the point's fault (harness error, Ctrl-C): FAIL in the study, evaluated again next run.
            store.client.set_tag(run_id, SWEEP_STATE, "FAIL")
            store.client.set_terminated(run_id, "KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
            raise
        t.set_user_attr(OUTCOME, ev.outcome.value)
        t.set_user_attr(REASON, ev.reason[:500])
        score = "—" if ev.score is None else f"{ev.score:.5g}"
        say(f"point {t.number}: {ev.outcome.value}, {recipe.metric.name} {score}")
        if ev.outcome is not Outcome.OK or not _finite(ev.score):
            return worst
        _replay_pruner(t, ev, prune_name, prune_sign)
        return float(ev.score)

    evaluated_now = 0
    guard = 3 * points + 10  # each call either finishes a point or raises; this only bounds a bug
    while _done(study) < points and guard > 0:
        guard -= 1
        study.optimize(objective, n_trials=1, callbacks=[point_logger], gc_after_trial=False)
        evaluated_now += 1

    all_points = tuple(_as_point(t) for t in study.get_trials(deepcopy=False) if t.user_attrs.get(SOURCE) != "parent")
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


def _prune_target(prune_metric: str | None, recipe: Recipe) -> tuple[str, int]:
    if not prune_metric:
        return recipe.metric.name, 1
    metric, _, goal = prune_metric.partition(":")
    if goal and goal not in ("minimize", "maximize"):
        raise UsageError(f"prune metric {prune_metric!r}: the goal after ':' must be minimize or maximize")
    return metric, (1 if not goal or goal == recipe.metric.goal else -1)


def _replay_pruner(t: optuna.Trial, ev: Evaluation, metric: str, sign: int) -> None:
    """Report the first seed's curve step by step; PRUNED where a live pruner would have stopped."""
    import optuna

    history = ev.histories.get(metric) or []
    if len(history) < 2:
        return
    for step, value in enumerate(history):
        if not math.isfinite(value):
            continue
        t.report(sign * value, step)
        if t.should_prune():
            t.set_user_attr("pruned_at_step", step)
            raise optuna.TrialPruned(f"{metric} = {value:.5g} at step {step} is behind the median of earlier points")


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
            params=dict(parent_values), distributions={k.name: _distribution(k) for k in knobs},
            value=float(trial.score), user_attrs={SOURCE: "parent", VALUES: dict(parent_values),
                                                  OUTCOME: "ok", REASON: f"{trial.short}'s recorded score"},
        ))


def _submit(store: MlflowStore, recipe: Recipe, study: optuna.Study, trial: TrialRecord,
            files: Mapping[str, bytes], knobs: Sequence[Knob], best: SweepPoint, points: Sequence[SweepPoint],
            url: str, worker: str, extra_env: dict[str, str] | None, say: Progress) -> TrialRecord:
    """The best point as a new trial through normal acceptance; once per best point, even across reruns."""
    from mlflow_autoresearch.trial import create_trial, evaluate_trial

    submitted = dict(study.user_attrs.get(SUBMITTED) or {})
    done = submitted.get(str(best.number))
    if done:
        rec = store.get(done)
        if rec.finished:
            say(f"best point {best.number} was already submitted as {rec.short}: {rec.decision}")
            return rec
        return evaluate_trial(store, done, recipe=recipe, extra_env=extra_env, progress=say)
    literals = {k.name: format_value(best.values[k.name], k.integer) for k in knobs}
    shown = ", ".join(f"{n}={v}" for n, v in literals.items())
    n_eval = sum(1 for p in points if p.state in ("COMPLETE", "PRUNED"))
    hypothesis = (f"sweep of {trial.short}: {shown} (best of {n_eval} points: {recipe.metric.name} "
                  f"{best.value:.5g} vs {trial.score:.5g})")
    summary = {"study": study.study_name, "storage": masked(url), "swept_trial": trial.run_id,
               "knobs": [k.model_dump(mode="json") for k in knobs], "best_point": best.number,
               "points": [{"number": p.number, "values": dict(p.values), "state": p.state, "value": p.value
                           if _finite(p.value) else None, "outcome": p.outcome, "run_id": p.run_id} for p in points]}
    new = create_trial(store, recipe, set_knobs(files, literals, knobs), specialist="sweep", hypothesis=hypothesis,
                       parent=trial, parent_files=files, profile=trial.tags.get(S.PROFILE), backend="optuna",
                       worker=worker, expected_effect=f"{recipe.metric.name} near {best.value:.5g}",
                       tags={SWEEP_STUDY: study.study_name, SWEPT_TRIAL: trial.run_id},
                       artifacts={"sweep.json": json.dumps(summary, indent=2)})
    submitted[str(best.number)] = new.run_id
    study.set_user_attr(SUBMITTED, submitted)
    say(f"submitting best point {best.number} as {new.short} for acceptance")
    return evaluate_trial(store, new.run_id, recipe=recipe, extra_env=extra_env, progress=say)
