"""Trials as MLflow runs: create one from code, evaluate it, record the facts.

This is the one path from code to a recorded trial.  ``autoresearch evaluate``,
the ``evaluate`` MLproject entry point and the loop all call
:func:`evaluate_trial`, which calls :func:`~mlflow_autoresearch.evaluator.evaluate_code`.
"""

from __future__ import annotations

import difflib
import json
import logging
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path

from mlflow_autoresearch import schema as S
from mlflow_autoresearch._errors import BaselineFailed, HarnessError, RecipeError, StoreError
from mlflow_autoresearch._untrusted import one_line, quote
from mlflow_autoresearch.evaluator import Evaluation, evaluate_code
from mlflow_autoresearch.evaluator._core import Progress, watchdog_seconds
from mlflow_autoresearch.lineage import Lineage, LineageStore, TrialDraft, TrialRecord, read_snapshot, write_snapshot
from mlflow_autoresearch.outcome import Decision, Outcome
from mlflow_autoresearch.recipe import Recipe, load_recipe

logger = logging.getLogger(__name__)

BASELINE = "baseline"
NOTE_DIFF_LINES = 40


def recipe_files(recipe: Recipe) -> dict[str, bytes]:
    """The recipe's own code: the baseline snapshot."""
    return read_snapshot(recipe.root, list(recipe.snapshot_files()))


def make_patch(parent: Mapping[str, bytes], child: Mapping[str, bytes]) -> str:
    """A unified diff from the parent's snapshot to the child's."""
    out: list[str] = []
    for rel in sorted(set(parent) | set(child)):
        a = parent.get(rel, b"").decode(errors="replace").splitlines(keepends=True)
        b = child.get(rel, b"").decode(errors="replace").splitlines(keepends=True)
        if a != b:
            out.extend(difflib.unified_diff(a, b, f"a/{rel}", f"b/{rel}"))
    return "".join(line if line.endswith("\n") else line + "\n" for line in out)


def recipe_tags(recipe: Recipe, profile: str | None) -> dict[str, str]:
    tags = {S.RECIPE: recipe.name, S.RECIPE_DIR: str(recipe.root), S.SCORE_NAME: recipe.metric.name}
    if profile:
        tags[S.PROFILE] = profile
    return tags


def create_trial(
    store: LineageStore,
    recipe: Recipe,
    files: Mapping[str, bytes],
    *,
    specialist: str,
    hypothesis: str,
    parent: TrialRecord | None = None,
    parent_files: Mapping[str, bytes] | None = None,
    profile: str | None = None,
    **draft_fields,
) -> TrialRecord:
    """Record a RUNNING trial with its full code and its patch against the parent."""
    if parent is not None and parent_files is None:
        parent_files = store.code(parent.run_id)
    patch = make_patch(parent_files or {}, files) if parent is not None else ""
    tags = {**recipe_tags(recipe, profile), **draft_fields.pop("tags", {})}
    draft = TrialDraft(files=dict(files), specialist=specialist, hypothesis=hypothesis,
                       parent_id=parent.run_id if parent else None, patch=patch, tags=tags, **draft_fields)
    return store.create_trial(draft)


def facts_text(evaluation: Evaluation, recipe: Recipe, parent: TrialRecord | None, best: TrialRecord | None) -> str:
    """The evaluator's part of what the next agent reads: outcome, score against parent and best, limits, the error.

    The policy adds the decision line (:func:`mlflow_autoresearch.loop.decide_trial`).
    """
    ev, lim = evaluation, recipe.limits
    lines = [f"outcome: {ev.outcome.value}" + (" (near miss)" if ev.near_miss else "") + f" — {one_line(ev.reason, 600)}"]
    if ev.score is not None:
        vs = []
        if parent is not None and parent.score is not None:
            vs.append(f"parent {parent.short} {parent.score:.5g}")
        if best is not None and best.score is not None:
            vs.append(f"best {best.short} {best.score:.5g}")
        lines.append(f"score {recipe.metric.name} = {ev.score:.5g} ({recipe.metric.goal})"
                     + (f"; vs {', '.join(vs)}" if vs else ""))
    for g in ev.gates:
        if g.observed is not None:
            lines.append(f"gate {g.gate}: {g.observed:.6g}, margin {g.margin:+.6g}{_gate_certainty(ev, g)}"
                         + ("" if g.passed else f" (near-miss band {g.band:g})"))
    if ev.train_seconds is not None:
        lines.append(f"time: {ev.train_seconds:.2f} s per seed of the {lim.train_seconds:g} s limit (evaluator clock)")
    if ev.artifact_bytes is not None and lim.artifact_bytes:
        lines.append(f"size: {ev.artifact_bytes:,} of {lim.artifact_bytes:,} bytes")
    if ev.error_tail:
        lines.append(f"error ({one_line(ev.error_type or 'no exception type', 80)}), last lines of the "
                     + quote(ev.error_tail, "stderr", max_lines=8))
    return "\n".join(lines)


def _gate_certainty(ev: Evaluation, g) -> str:
    """How sure the gate's call is: its margin's standard error over the seeds, and the chance it truly passes."""
    from statistics import NormalDist

    std, n = ev.metrics.get(f"{g.metric}_std"), int(ev.metrics.get("seeds", 1))
    if not std or n < 2:
        return ""
    se = std / n**0.5
    return f" ± {se:.2g} (P(pass) ≈ {NormalDist().cdf(g.margin / se):.2f} over {n} seeds)"


def note_markdown(trial: TrialRecord, feedback: str, patch: str, parent: TrialRecord | None) -> str:
    """The run's description in the MLflow UI."""
    added = sum(1 for ln in patch.splitlines() if ln.startswith("+") and not ln.startswith("+++"))
    removed = sum(1 for ln in patch.splitlines() if ln.startswith("-") and not ln.startswith("---"))
    files = sorted({ln[6:] for ln in patch.splitlines() if ln.startswith("+++ b/")})
    md = [f"### {trial.name}", f"**Specialist:** {trial.specialist}  ", f"**Hypothesis:** {trial.hypothesis}  "]
    if parent is not None:
        md.append(f"**Parent:** {parent.name} (score {'—' if parent.score is None else format(parent.score, '.5g')})  ")
    md.append(f"**Outcome:** `{trial.outcome.value if trial.outcome else trial.status}`  ")
    if trial.decision:
        md.append(f"**Decision:** `{trial.decision}`  ")
    if trial.score is not None:
        md.append(f"**Score:** {trial.score:.5g}  ")
    if files:
        md.append(f"**Diff:** {', '.join(files)} (+{added} −{removed})  ")
    md += ["", "```", feedback, "```"]
    if patch:
        # The UI previews no .diff files: the start of the patch is shown here, the rest is in patch.diff.
        lines = patch.splitlines()
        excerpt = "\n".join(lines[:NOTE_DIFF_LINES]) + (f"\n… {len(lines) - NOTE_DIFF_LINES} more lines in patch.diff"
                                                          if len(lines) > NOTE_DIFF_LINES else "")
        md += ["", "```diff", excerpt, "```"]
    return S.clip("\n".join(md))


def evaluate_trial(
    store: LineageStore,
    run_id: str,
    *,
    recipe: Recipe | None = None,
    seeds: int | None = None,
    extra_env: dict[str, str] | None = None,
    progress: Progress | None = None,
) -> TrialRecord:
    """Evaluate a recorded trial, decide keep or discard, record everything, end the run.

    The trial's failure is data; only a failure of the harness raises
    (and is recorded as ``harness_error`` first, when the store allows).
    """
    trial = store.get(run_id)
    if recipe is None:
        recipe = recipe_of(trial)

    def harness_error(e: object) -> None:
        store.record_result(run_id, tags={S.OUTCOME: Outcome.HARNESS_ERROR.value, S.DECISION: Decision.DISCARD.value,
                                          S.FEEDBACK: f"harness_error: {e} (not the trial's fault; it may be retried)"},
                            metrics={}, artifacts={}, status="FAILED")

    # The watchdog: should the evaluator hang past every limit it enforces, the run is still ended.
    fired = threading.Event()
    limit = watchdog_seconds(recipe, seeds)

    def expire() -> None:
        fired.set()
        logger.error("the evaluation of %s did not finish within %.0f s; recorded as harness_error", run_id, limit)
        try:
            harness_error(f"the evaluator did not finish within {limit:.0f} s (watchdog)")
        except Exception:  # the store itself is down: nothing more can be done from here
            logger.exception("could not record the watchdog's harness_error for %s", run_id)

    timer = threading.Timer(limit, expire)
    timer.daemon = True
    timer.start()
    try:
        with tempfile.TemporaryDirectory(prefix="autoresearch-code-") as tmp, \
                tempfile.TemporaryDirectory(prefix="autoresearch-logs-") as logdir:
            code_dir = Path(tmp)
            write_snapshot(store.code(run_id), code_dir)
            evaluation = evaluate_code(recipe, code_dir, seeds=seeds, extra_env=extra_env, progress=progress,
                                       keep_logs_in=Path(logdir))
            timer.cancel()
            if fired.is_set():
                raise HarnessError(f"the evaluation of {run_id} outlived the watchdog ({limit:.0f} s)")
            return record_evaluation(store, trial, evaluation, recipe)
    except (HarnessError, OSError) as e:
        logger.error("harness error while evaluating %s: %s", run_id, e)
        if not fired.is_set():
            harness_error(e)
        raise
    finally:
        timer.cancel()


def record_evaluation(store: LineageStore, trial: TrialRecord, evaluation: Evaluation, recipe: Recipe) -> TrialRecord:
    """Record the evaluator's facts and end the run.  The keep decision is the policy's, written afterwards."""
    lineage = Lineage([t for t in store.trials() if t.run_id != trial.run_id], recipe.metric.goal)
    parent = lineage.by_id.get(trial.parent_id) if trial.parent_id else None
    facts = facts_text(evaluation, recipe, parent, lineage.best)
    metrics = dict(evaluation.metrics)
    for i, m in enumerate(evaluation.seed_metrics):
        for k in (recipe.metric.name, *(g.metric for g in recipe.gates), "cpu_seconds"):
            if k in m:
                metrics[f"{k}.seed{i}"] = m[k]
    tags = {
        S.OUTCOME: evaluation.outcome.value,
        S.OUTCOME_REASON: S.clip(evaluation.reason, 1000),
        S.FACTS: S.clip(facts, S.FEEDBACK_TAG_LIMIT),
        S.NEAR_MISS: "true" if evaluation.near_miss else "false",
        S.SCORE_NAME: recipe.metric.name,
        S.DEVICE: evaluation.device,
    }
    if evaluation.outcome is Outcome.HARNESS_ERROR:  # not the trial's fault: nothing to decide
        tags.update({S.DECISION: Decision.DISCARD.value, S.REASON: "harness_error: not the trial's fault",
                     S.FEEDBACK: S.clip(facts, S.FEEDBACK_TAG_LIMIT)})
    artifacts = {S.FEEDBACK_JSON: json.dumps({**evaluation.to_dict(), "facts": facts}, indent=2)}
    files = {f"{S.LOGS_DIR}/{name}": path for name, path in evaluation.logs.items()}
    steps = {k: v for k, v in evaluation.histories.items() if len(v) > 1}
    status = "FAILED" if evaluation.outcome is Outcome.HARNESS_ERROR else "FINISHED"
    return store.record_result(trial.run_id, tags=tags, metrics=metrics, artifacts=artifacts, files=files,
                               status=status, step_metrics=steps)


STDERR_TAIL_LINES = 20


def failed_baseline(store: LineageStore, base: TrialRecord, *, recorded: bool = True) -> BaselineFailed:
    """The error for a baseline that did not pass: its outcome, its reason, the tail of its stderr, the fix."""
    try:
        facts = json.loads(store.read_artifact(base.run_id, S.FEEDBACK_JSON) or "{}")
    except ValueError:
        facts = {}
    tail = "\n".join(str(facts.get("error_tail") or "").splitlines()[-STDERR_TAIL_LINES:])
    reason = one_line(base.tags.get(S.OUTCOME_REASON, "") or str(facts.get("reason", "")), 600)
    outcome = base.outcome.value if base.outcome else base.status
    lines = [f"the baseline {base.short} (the recipe's own code) did not pass: {outcome}: {reason}"]
    if tail:
        lines += [f"last lines of its stderr (all of it: logs/ of run {base.run_id}):",
                  *("  | " + ln for ln in tail.splitlines())]
    lines.append("Fix the recipe (its command, its code) and run again"
                 + (" (this baseline was discarded; the next run scores a fresh one)" if recorded else "")
                 + ", or pass --allow-failed-baseline to let specialists try to repair it.")
    return BaselineFailed("\n".join(lines))


def recipe_of(trial: TrialRecord) -> Recipe:
    """The trusted recipe of a trial: from the folder named on the run (never from its code)."""
    folder = trial.tags.get(S.RECIPE_DIR)
    if not folder:
        raise StoreError(f"run {trial.run_id} has no {S.RECIPE_DIR} tag; pass the recipe folder explicitly")
    try:
        return load_recipe(folder, trial.tags.get(S.PROFILE) or None)
    except RecipeError as e:
        raise RecipeError(f"the recipe of run {trial.run_id} cannot be loaded (pass --recipe): {e}") from None


def evaluate_folder(
    store: LineageStore,
    recipe: Recipe,
    code: Path | None = None,
    *,
    profile: str | None = None,
    seeds: int | None = None,
    progress: Progress | None = None,
    allow_failed_baseline: bool = False,
) -> TrialRecord:
    """``autoresearch evaluate``: record ``code`` (default: the recipe's own) as a trial and score it.

    The recipe's own code becomes the baseline when the experiment has none.

    Raises:
        BaselineFailed: that baseline did not pass (outcome not ``ok``), unless ``allow_failed_baseline``;
            it is recorded and discarded, so a later run scores the fixed recipe afresh.
    """
    files = recipe_files(recipe)
    if code is not None:
        missing = [rel for rel in recipe.editable if not (Path(code) / rel).is_file()]
        if missing:
            raise RecipeError(f"{code}: missing editable file(s) {', '.join(missing)}")
        files.update(read_snapshot(Path(code), list(recipe.editable)))
    lineage = Lineage(store.trials(), recipe.metric.goal)
    base = lineage.baseline
    if base is None:
        trial = create_trial(store, recipe, files, specialist=BASELINE, profile=profile,
                             hypothesis="baseline: the recipe's own code", backend="none")
    else:
        trial = create_trial(store, recipe, files, specialist="manual", parent=base, profile=profile,
                             hypothesis=f"manual submission from {code or recipe.root}", backend="none")
    from mlflow_autoresearch.loop._decision import evaluate_and_decide

    rec = evaluate_and_decide(store, trial.run_id, recipe=recipe, seeds=seeds, progress=progress,
                              allow_failed_baseline=allow_failed_baseline)
    if base is None and rec.outcome is not Outcome.OK and not allow_failed_baseline:
        if progress:
            progress(f"{rec.name}: {rec.outcome.value if rec.outcome else rec.status}, decision {rec.decision} "
                     f"(run {rec.run_id})")
        raise failed_baseline(store, rec)
    return rec
