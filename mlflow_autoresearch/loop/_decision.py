"""The policy's keep decision for one measured trial, with its evidence written on the run.

The evaluator records facts and ends the run; :func:`decide_trial` then reads
the lineage, builds the noise model from every measurement, confirms a
promising candidate with paired seeds (confirmation runs nested under it,
measured on the slot it ran on, through ``measure``) and writes the decision
once (:meth:`~mlflow_autoresearch.lineage.LineageStore.record_decision`).
A kept trial whose re-measurement no longer beats the trial it displaced is
demoted (a tag; nothing is deleted).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from mlflow_autoresearch import schema as S
from mlflow_autoresearch.acceptance import CANDIDATE, Acceptance, Sample, Verdict, default_design
from mlflow_autoresearch.acceptance._decide import Evidence
from mlflow_autoresearch.lineage import Lineage, LineageStore, TrialRecord, write_snapshot
from mlflow_autoresearch.outcome import Decision, Outcome
from mlflow_autoresearch.recipe import Recipe
from mlflow_autoresearch.trial import BASELINE, note_markdown

logger = logging.getLogger(__name__)

# measurer(of, parent, seed, role) -> the score of one seed of ``of``'s code (a confirmation run nested
# under ``parent``), or None when that seed did not pass.
Measurer = Callable[[TrialRecord, TrialRecord, int, str], "float | None"]
CONFIRM_SEED_BASE = 10_000  # confirmation seeds never collide with a trial's own seeds 0..n-1


def confirmation_seed(candidate: TrialRecord, k: int) -> int:
    """Pair ``k`` of a candidate uses one seed for both codes (common random numbers), unique per candidate."""
    return CONFIRM_SEED_BASE + 64 * max(candidate.number, 0) + k


def acceptance_for(recipe: Recipe, lineage: Lineage, incumbent: TrialRecord | None) -> Acceptance:
    spec = recipe.acceptance
    scale = lineage.scale
    design = default_design(scale.kind, confidence=spec.confidence, min_effect=spec.min_effect,
                            max_confirm_seeds=spec.max_confirm_seeds)
    legacy = recipe.min_improvement  # metric units (version 1 recipes)
    ref = lineage.estimate(incumbent)
    if legacy > 0:
        if scale.kind == "absolute":
            extra = legacy
        elif ref:
            extra = abs(math.log((ref + legacy * lineage.direction.sign) / ref))
        else:
            extra = 0.0
        design = dataclasses.replace(design, min_effect=max(design.min_effect, extra))
    return Acceptance(design, scale, recipe.metric.goal, " s" if recipe.metric.name.endswith("seconds") else "")


def _verdict(store: LineageStore, recipe: Recipe, trial: TrialRecord, lineage: Lineage,
             measurer: Measurer | None, allow_failed_baseline: bool = True) -> tuple[Verdict, TrialRecord | None]:
    if trial.specialist == BASELINE and trial.outcome is not Outcome.OK and not allow_failed_baseline:
        # Not the baseline: the next run (after the recipe is fixed) scores a fresh one.
        why = trial.tags.get(S.OUTCOME_REASON, "")
        return Verdict(Decision.DISCARD, f"the recipe's own code did not pass ({trial.outcome.value if trial.outcome else '?'}"
                       f": {why}); fix the recipe and run again, or pass --allow-failed-baseline to keep it as the "
                       "baseline for specialists to repair", Evidence("baseline", lineage.scale.kind)), None
    if trial.specialist == BASELINE:
        return Verdict(Decision.BASELINE, "the recipe's own code: the reference every trial is compared with",
                       Evidence("baseline", lineage.scale.kind)), None
    if trial.outcome is not Outcome.OK:
        why = trial.tags.get(S.OUTCOME_REASON, "")
        return Verdict(Decision.DISCARD, f"{trial.outcome.value if trial.outcome else '?'}: {why}",
                       Evidence("outcome", lineage.scale.kind)), None
    incumbent = lineage.best
    acceptance = acceptance_for(recipe, lineage, incumbent)
    inc_windows = lineage.windows_of(incumbent) if incumbent else ()
    measure = None
    if measurer is not None and incumbent is not None:
        def measure(role: str, k: int) -> float | None:
            of = trial if role == CANDIDATE else incumbent
            return measurer(of, trial, confirmation_seed(trial, k), role)

    verdict = acceptance.decide(Sample.of(*trial.seed_values()), Sample(inc_windows), lineage.noise_model, measure,
                                incumbent.run_id if incumbent else None, relearn=lineage.noise_with)
    return verdict, incumbent


def decide_trial(store: LineageStore, recipe: Recipe, trial: TrialRecord, *, measurer: Measurer | None = None,
                 echo: Callable[[str], None] | None = None, allow_failed_baseline: bool = True) -> TrialRecord:
    """Decide keep or discard for a measured trial (confirming it first when it looks better); record it.

    A baseline that did not pass stays the baseline only with ``allow_failed_baseline``;
    else it is discarded, so that the next run scores the fixed recipe afresh.
    Idempotent on a trial that already has a decision (returns it as it is).
    """
    trial = store.get(trial.run_id)
    if trial.decision is not None or trial.outcome is None:
        return trial
    # The candidate's own seeds count for the noise model; undecided, it cannot be the incumbent.
    lineage = Lineage(store.trials(), recipe.metric.goal, recipe.acceptance.scale)
    t0 = time.monotonic()
    verdict, incumbent = _verdict(store, recipe, trial, lineage, measurer, allow_failed_baseline)
    cost = {"confirm_seconds": time.monotonic() - t0, "confirm_runs": float(verdict.evidence.confirm_runs)} \
        if verdict.evidence.pairs else {}
    record = _record(store, trial, verdict, lineage, cost)
    if incumbent is not None and verdict.evidence.pairs:
        _demote_if_needed(store, recipe, incumbent, echo)
    if echo and verdict.evidence.pairs:
        echo(f"{trial.short}: {verdict.decision.value} after {len(verdict.evidence.pairs)} confirmation pair(s): "
             f"{verdict.reason}")
    return record


def _record(store: LineageStore, trial: TrialRecord, verdict: Verdict, lineage: Lineage,
            cost: dict[str, float]) -> TrialRecord:
    facts = trial.tags.get(S.FACTS, "") or f"outcome: {trial.outcome.value if trial.outcome else '?'}"
    feedback = f"{facts}\ndecision: {verdict.decision.value} — {verdict.reason}"
    parent = lineage.by_id.get(trial.parent_id) if trial.parent_id else None
    patch = store.read_artifact(trial.run_id, S.PATCH) or ""
    evidence = verdict.evidence.to_dict()
    shown = TrialRecord(**{**trial.__dict__, "decision": verdict.decision.value})
    tags = {
        S.DECISION: verdict.decision.value,
        S.REASON: S.clip(verdict.reason, 1000),
        S.FEEDBACK: S.clip(feedback, S.FEEDBACK_TAG_LIMIT),
        S.EVIDENCE: S.clip(json.dumps(evidence, separators=(",", ":")), S.TAG_LIMIT),
        S.NOTE: note_markdown(shown, feedback, patch, parent),
    }
    decision_json = json.dumps({"decision": verdict.decision.value, "reason": verdict.reason,
                                "evidence": evidence, "noise": lineage.noise_model.describe()}, indent=2)
    return store.record_decision(trial.run_id, tags, {S.DECISION_JSON: decision_json}, cost)


def _demote_if_needed(store: LineageStore, recipe: Recipe, incumbent: TrialRecord,
                      echo: Callable[[str], None] | None) -> None:
    """A kept trial re-measured as incumbent that no longer beats the trial it displaced loses its place."""
    lineage = Lineage(store.trials(), recipe.metric.goal, recipe.acceptance.scale)
    inc = lineage.by_id.get(incumbent.run_id)
    if inc is None or inc.decision != Decision.KEEP.value or inc.demoted:
        return
    displaced = lineage.by_id.get(inc.evidence.get("incumbent_run", ""))
    if displaced is None:
        return
    now, then = lineage.estimate(inc), lineage.estimate(displaced)
    values, _ = lineage.values_of(inc)
    if now is None or then is None or lineage.direction.better(now, then):
        return
    reason = (f"does not hold up under re-measurement: {now:.5g} over {len(values)} measurements, no better than "
              f"{displaced.short} ({then:.5g}), the trial it displaced")
    store.set_tags(inc.run_id, {S.DEMOTED: reason})
    (echo or (lambda m: logger.info("%s", m)))(f"{inc.short} demoted: {reason}")


def measure_in_process(store: LineageStore, recipe: Recipe, extra_env: dict[str, str] | None = None) -> Measurer:
    """A measurer that runs each confirmation seed here, through the evaluator, as a nested run."""

    def measurer(of: TrialRecord, parent: TrialRecord, seed: int, role: str) -> float | None:
        run_id = store.create_measurement(of, parent, seed=seed, role=role)
        return run_measurement(store, recipe, run_id, of, seed, extra_env)

    return measurer


def run_measurement(store: LineageStore, recipe: Recipe, run_id: str, of: TrialRecord, seed: int,
                    extra_env: dict[str, str] | None = None) -> float | None:
    """Evaluate one seed of ``of``'s code into the confirmation run ``run_id``; its score, or None."""
    from mlflow_autoresearch.evaluator import evaluate_code

    with tempfile.TemporaryDirectory(prefix="autoresearch-confirm-") as tmp, \
            tempfile.TemporaryDirectory(prefix="autoresearch-logs-") as logdir:
        write_snapshot(store.code(of.run_id), Path(tmp))
        ev = evaluate_code(recipe, Path(tmp), seeds=[seed], extra_env=extra_env, keep_logs_in=Path(logdir))
        metrics = {k: v for k, v in ev.metrics.items() if not k.endswith("_std")}
        files = {f"{S.LOGS_DIR}/{name}": path for name, path in ev.logs.items()}
        store.record_measurement(run_id, tags={S.OUTCOME: ev.outcome.value, S.OUTCOME_REASON: S.clip(ev.reason, 1000)},
                                 metrics=metrics, files=files,
                                 status="FAILED" if ev.outcome is Outcome.HARNESS_ERROR else "FINISHED")
    # One seed's gate is not the trial's gate (that is on the mean of its own seeds): a scored seed counts.
    return ev.score if ev.outcome in (Outcome.OK, Outcome.GATE_FAILED) else None


def evaluate_and_decide(store: LineageStore, run_id: str, *, recipe: Recipe, seeds: int | None = None,
                        extra_env: dict[str, str] | None = None, progress: Callable[[str], None] | None = None,
                        allow_failed_baseline: bool = True) -> TrialRecord:
    """Evaluate a RUNNING trial here, then decide it here (confirmation seeds run in this process too)."""
    from mlflow_autoresearch.trial import evaluate_trial

    record = evaluate_trial(store, run_id, recipe=recipe, seeds=seeds, extra_env=extra_env, progress=progress)
    return decide_trial(store, recipe, record, measurer=measure_in_process(store, recipe, extra_env), echo=progress,
                        allow_failed_baseline=allow_failed_baseline)
