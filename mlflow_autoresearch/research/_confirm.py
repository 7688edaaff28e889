"""``autoresearch confirm``: does a trial's gain survive at another profile and over many seeds?

The trial's code and a reference (its parent, or the baseline) are measured
beside each other, seed by seed on the same seed (common random numbers), in
alternating order (ABBA: a drift of the machine's load cancels), at the
profile asked for (a larger model, the full data, the 8-GPU run).  Each
measurement is a run nested under the trial (tag ``autoresearch.kind =
transfer``, never a trial of the lineage nor a confirmation of its keep
decision, since it may be on another profile).  The paired differences go
through the acceptance package's paired test (:func:`~mlflow_autoresearch.acceptance.
_sequential.paired_t` on the score's scale); the verdict and its
:class:`~mlflow_autoresearch.acceptance.Evidence` are written on a summary
run nested under the trial and as the trial's tags ``autoresearch.transfer``
(one line, shown in the lineage views) and ``autoresearch.transfer_evidence``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

from mlflow_autoresearch import schema as S
from mlflow_autoresearch._errors import UsageError
from mlflow_autoresearch.lineage import Lineage, MlflowStore, TrialRecord
from mlflow_autoresearch.outcome import Direction
from mlflow_autoresearch.recipe import Recipe

logger = logging.getLogger(__name__)

TRANSFER_KIND = "transfer"
TRANSFER = S.PREFIX + "transfer"  # one line on the trial: the latest transfer check's verdict
TRANSFER_EVIDENCE = S.PREFIX + "transfer_evidence"
TRANSFER_VERDICT = S.PREFIX + "transfer_verdict"  # holds | does not hold | unmeasured
TRANSFER_OF = S.PREFIX + "transfer_of"
TRANSFER_SEED_BASE = 20_000  # never one of a trial's own seeds, nor a keep decision's confirmation seeds


@dataclass(frozen=True)
class Transfer:
    trial: TrialRecord
    reference: TrialRecord
    profile: str
    pairs: tuple[tuple[float | None, float | None], ...]
    verdict: str  # holds | does not hold | unmeasured
    line: str
    evidence: dict
    summary_run: str


def _reference(lineage: Lineage, trial: TrialRecord, against: str) -> TrialRecord:
    if against == "baseline":
        ref = lineage.baseline
    else:
        ref = lineage.by_id.get(trial.parent_id) if trial.parent_id else None
    if ref is None:
        raise UsageError(f"--against {against}: trial {trial.short} has no {against} to measure beside it")
    if ref.run_id == trial.run_id:
        raise UsageError(f"--trial {trial.short} is the {against} itself: pick a trial made from it")
    return ref


def confirm_trial(store: MlflowStore, trial: TrialRecord, recipe: Recipe, *, seeds: int, profile: str = "",
                  against: str = "parent", confidence: float = 0.95,
                  progress: Callable[[str], None] | None = None) -> Transfer:
    """Measure ``trial`` and its reference on ``seeds`` paired seeds at ``recipe`` (already at ``profile``)."""
    from mlflow_autoresearch.acceptance import Evidence, Scale, detect_scale
    from mlflow_autoresearch.acceptance._sequential import paired_t
    from mlflow_autoresearch.loop._decision import run_measurement

    say = progress or (lambda m: logger.info("%s", m))
    lineage = Lineage(store.trials(), recipe.metric.goal)
    ref = _reference(lineage, trial, against)
    c = store.client
    summary = c.create_run(store.experiment_id, run_name=f"{trial.short}-transfer-{profile or 'same'}-vs-{ref.short}",
                           tags={S.KIND: TRANSFER_KIND, S.PARENT_RUN: trial.run_id, TRANSFER_OF: trial.run_id,
                                 S.PROFILE: profile, S.SCORE_NAME: recipe.metric.name,
                                 S.PREFIX + "reference": ref.run_id}).info.run_id
    pairs: list[tuple[float | None, float | None]] = []
    for k in range(seeds):
        seed = TRANSFER_SEED_BASE + 64 * max(trial.number, 0) + k
        got: dict[str, float | None] = {}
        for role in (("candidate", "reference") if k % 2 == 0 else ("reference", "candidate")):
            of = trial if role == "candidate" else ref
            run = c.create_run(store.experiment_id, run_name=f"{trial.short}-transfer-{role}-{of.short}-seed{seed}",
                               tags={S.KIND: TRANSFER_KIND, S.PARENT_RUN: summary, TRANSFER_OF: trial.run_id,
                                     S.PREFIX + "measures": of.run_id, S.SEED: str(seed),
                                     S.PREFIX + "transfer_role": role, S.PROFILE: profile,
                                     S.SCORE_NAME: recipe.metric.name}).info.run_id
            say(f"transfer {k + 1}/{seeds}: {role} {of.short}, seed {seed}")
            got[role] = run_measurement(store, recipe, run, of, seed)
        pairs.append((got["candidate"], got["reference"]))
        say(f"pair {k + 1}/{seeds}: {trial.short} {_fmt(got['candidate'])} vs {ref.short} {_fmt(got['reference'])}")
    whole = [(a, b) for a, b in pairs if a is not None and b is not None]
    scale = Scale(detect_scale(recipe.metric.name, [v for p in whole for v in p]))
    sign = Direction(recipe.metric.goal).sign
    name = f"at profile {profile!r}" if profile else "at the trial's profile"
    if len(whole) < 2:
        verdict, line = "unmeasured", (f"transfer {name}: only {len(whole)} of {seeds} pairs measured "
                                       f"(both seeds scored) vs {against} {ref.short}; nothing to conclude")
        evidence = Evidence("transfer", scale.kind, tuple(pairs), incumbent_run=ref.run_id, why=line)
    else:
        look = paired_t([(scale.to(a), scale.to(b)) for a, b in whole], sign, 1.0 - confidence, 0.0)
        holds = look.verdict == "keep"
        verdict = "holds" if holds else "does not hold"
        change = scale.change_text(sign * look.estimate)
        lo, hi = sorted((scale.change_text(sign * look.low), scale.change_text(sign * look.high)))
        line = (f"transfer {name}: {trial.short} vs {against} {ref.short} over {len(whole)} paired seeds: "
                f"{recipe.metric.name} {change} (CI [{lo}, {hi}], p = {look.p_value:.3g}): the gain {verdict}")
        evidence = Evidence("transfer", scale.kind, tuple(pairs), effect=look.estimate, low=look.low, high=look.high,
                            z=look.z, p_value=look.p_value, n_candidate=len(whole), n_incumbent=len(whole),
                            incumbent_run=ref.run_id, why=look.why)
    data = {"verdict": verdict, "line": line, "profile": profile, "against": against, "reference": ref.run_id,
            "evidence": evidence.to_dict()}
    c.log_text(summary, json.dumps(data, indent=2), "transfer/evidence.json")
    metrics = {"pairs": float(len(whole))}
    if evidence.effect is not None:
        metrics.update(effect=evidence.effect, effect_low=evidence.low, effect_high=evidence.high,
                       p_value=evidence.p_value)
    store.record_measurement(summary, tags={S.NOTE: _note(trial, ref, line, pairs, recipe), TRANSFER: line,
                                            TRANSFER_VERDICT: verdict}, metrics=metrics)
    store.set_tags(trial.run_id, {TRANSFER: S.clip(line, 1000), TRANSFER_VERDICT: verdict,
                                  TRANSFER_EVIDENCE: S.clip(json.dumps(data, separators=(",", ":")))})
    say(line)
    return Transfer(trial, ref, profile, tuple(pairs), verdict, line, data, summary)


def _fmt(v: float | None) -> str:
    return "failed" if v is None else f"{v:.5g}"


def _note(trial: TrialRecord, ref: TrialRecord, line: str, pairs, recipe: Recipe) -> str:
    rows = ["| pair | " + f"{trial.short} | {ref.short} |", "|---|---|---|"]
    rows += [f"| {i + 1} | {_fmt(a)} | {_fmt(b)} |" for i, (a, b) in enumerate(pairs)]
    return f"### Transfer check of {trial.short}\n{line}\n\n{recipe.metric.name} per paired seed:\n\n" + "\n".join(rows)
