"""The offline backend: a deterministic playbook of program rewrites, no network, no model.

It is the default when no API key is set, and the baseline the Claude backend
is measured against: a fixed catalogue of real rewrites (swap the optimizer,
add a warmup, autocast, the attention path, augmentation, width and depth,
...) found by matching the parent's code, ranked by what the lineage says.
It is not a stand-in for a model: it never reads the briefs' prose and knows
no move that is not in its catalogue.

Choice, for one proposal:

1. When the parent failed, *repair* first (any role may repair; the role's own
   families come first).  A gate near miss buys back accuracy (one more
   epoch, 20% more steps, a warmup, label smoothing, or the parent's numbers
   moved back by at most 20%); a far gate miss moves the parent's numbers
   half way back, or buys accuracy; ``timed_out`` cuts work or speeds up, and
   undoes a speed-up that backfired; ``size_exceeded`` shrinks the artifact;
   a crash undoes the parent's change and makes a move from another family;
   an out-of-memory crash asks for less memory.
2. Otherwise the role's catalogue, ranked by the recipe's objective (time:
   faster moves first, convergence moves paired with a shorter schedule,
   half the epochs while the gates have room and a quarter fewer when they
   are tight; quality: quality moves first, size savings paired with more
   capacity), then by how the same move fared in the lineage: a move that
   already lost on this line of descent goes after other families' fresh
   moves.
3. The first candidate whose code is new to the lineage wins; when none is
   left, the proposal carries ``invalid_reason``.

Same lineage, parent, role and seeds: same proposal.  Holds no state between
calls, so it is safe to call from several threads at once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from mlflow_autoresearch._errors import ProposalError
from mlflow_autoresearch.lineage import Lineage, TrialRecord, code_digest
from mlflow_autoresearch.outcome import Outcome
from mlflow_autoresearch.recipe import Recipe
from mlflow_autoresearch.specialists._base import Edit, Proposal, ProposalContext
from mlflow_autoresearch.specialists._edits import apply_edits
from mlflow_autoresearch.specialists.playbook import Candidate, Source, candidates, catalogue
from mlflow_autoresearch.specialists.playbook._catalogue import numeric_variant
from mlflow_autoresearch.specialists.playbook._repair import bisect_back, revert_edits
from mlflow_autoresearch.specialists.playbook._source import show

logger = logging.getLogger(__name__)

MOVE_ID = re.compile(r"^([a-z][a-z0-9-]*):")
TIME_METRIC = re.compile(r"second|time|latency|wall|(^|_)s$", re.I)
CUTS = (("fewer-epochs", "x0.5", "x0.75"), ("fewer-steps", "x0.5", "x0.8"))
CAPACITY = (("deeper", "+1"), ("wider", "x1.5"))
NEAR_MISS_FIRST = ("one-more-epoch", "longer-training", "add-warmup", "longer-warmup", "label-smoothing",
                   "add-label-smoothing")
TIGHT = 2.0  # near-miss bands of gate margin under which cuts get gentle and quality moves come first
NEAR_MISS_STEP = 0.2  # a near miss moves the parent's numbers back by at most 20% (e.g. +20% steps)
MEMORY_ERROR = re.compile(r"out of memory|MemoryError|memory limit|OOM", re.I)
FAILED = {Outcome.GATE_FAILED: "gate", Outcome.TIMED_OUT: "timed_out", Outcome.SIZE_EXCEEDED: "size",
          Outcome.CRASHED: "crashed", Outcome.PREFLIGHT_FAILED: "crashed", Outcome.INVALID_PROPOSAL: "crashed",
          Outcome.PROTECTED_VIOLATION: "crashed"}
SHOWN = 12  # candidates listed in the transcript
# Order of repair kinds (lower first): move the parent's numbers back; undo a change that crashed or backfired and
# try another move; the role's own moves that serve this failure; a near miss's small step back; other families'.
REPAIR_TIER = {"bisect": 0, "undo": 1, "own": 2, "bisect_near": 3, "undo_other": 3, "other": 4, "undo_late": 5}


@dataclass(frozen=True)
class _Plan:
    """A candidate ready to propose: full edits from the parent, hypothesis, rank."""

    cand: Candidate
    edits: tuple[Edit, ...]
    hypothesis: str
    expect: str
    key: tuple


class OfflineSpecialist:
    """The no-API default backend and the baseline the Claude backend is measured against; not a stand-in
    for a model (see the module docstring).  ``seed`` varies the order among equally ranked moves; other
    options (model, max_turns, ...) are accepted and ignored.  Thread-safe, deterministic."""

    backend = "offline"

    def __init__(self, seed: int = 0, **ignored: object) -> None:
        self.seed = seed
        logger.info("offline specialists: a deterministic playbook of code rewrites, no model and no network "
                    "(set ANTHROPIC_API_KEY and use --agent claude for model-written proposals)")

    # ----- the contract -------------------------------------------------------------
    def propose(self, ctx: ProposalContext) -> Proposal:
        src = Source(ctx.recipe, ctx.parent_files)
        known = _known_digests(ctx)
        plans, mode = self._plans(ctx, src)
        considered = []
        for plan in plans:
            try:
                files = apply_edits(ctx.recipe, ctx.parent_files, list(plan.edits))
            except ProposalError as e:  # a matcher that misjudged the code: skip it, never propose it
                logger.debug("offline move %s does not apply: %s", plan.cand.move, e)
                considered.append({"move": plan.cand.move, "skipped": f"does not apply: {e}"})
                continue
            if code_digest(files) in known:
                considered.append({"move": plan.cand.move, "variant": plan.cand.variant, "skipped": "already tried"})
                continue
            considered.append({"move": plan.cand.move, "variant": plan.cand.variant, "chosen": True})
            return Proposal(specialist=ctx.role.name, hypothesis=plan.hypothesis, files=files,
                            expected_effect=plan.expect, edits=plan.edits, backend=self.backend,
                            transcript=_transcript(mode, considered, plans))
        reason = (f"offline playbook exhausted for role {ctx.role.name!r} on parent {ctx.parent.short}: "
                  f"{len(plans)} candidate move(s) matched its code, all already in the lineage or not applicable")
        return Proposal(specialist=ctx.role.name, hypothesis=f"no new move for {ctx.parent.short}",
                        files=dict(ctx.parent_files), backend=self.backend, invalid_reason=reason,
                        transcript=_transcript(mode, considered, plans))

    # ----- ranking --------------------------------------------------------------------
    def _plans(self, ctx: ProposalContext, src: Source) -> tuple[list[_Plan], str]:
        families = role_families(ctx.role.name, ctx.role.brief)
        speed = _is_speed(ctx.recipe)
        tight = _tight(ctx.recipe, ctx.parent)
        stats = _move_stats(ctx.lineage, ctx.parent)
        found = candidates(src)
        normal = self._normal(ctx, src, found, families, speed, tight, stats)
        kind = FAILED.get(ctx.parent.outcome) if ctx.parent.outcome else None
        if kind == "gate":
            kind = "near_miss" if ctx.parent.near_miss else "gate_miss"
        if kind is None:
            return normal, f"{'speed' if speed else 'quality'} objective, role families {', '.join(families)}"
        repairs = self._repairs(ctx, src, found, families, kind, stats, speed)
        return repairs + normal, f"repair ({kind}) of {ctx.parent.short}, then the {ctx.role.name} catalogue"

    def _jitter(self, ctx: ProposalContext, cand: Candidate) -> float:
        h = hashlib.sha256(f"{self.seed}:{ctx.rng_seed}:{ctx.role.name}:{cand.move}:{cand.variant}".encode())
        return int.from_bytes(h.digest()[:4], "big") / 2**32 * 2.0

    def _normal(self, ctx: ProposalContext, src: Source, found: list[Candidate], families: tuple[str, ...],
                speed: bool, tight: bool, stats: Mapping[str, float]) -> list[_Plan]:
        out: list[_Plan] = []
        steer = _steering_words(ctx.steering)
        helped, tired = _lesson_hints(ctx.lessons)
        ordered = ctx.role.name not in catalogue().unordered_roles
        for c in found:
            fam = _family_rank(c, families)
            variants = [(c.edits, "", "")]
            pair = _pairing(ctx.recipe, ctx.parent_files, c, speed, tight)
            if pair is not None:
                variants.insert(0, (c.edits + pair[0].edits, pair[1], pair[2]))
            for i, (edits, suffix, gain) in enumerate(variants):
                tier = _tier(c, speed, tight, paired=bool(suffix))
                words = set(re.findall(r"[a-z0-9]+", f"{c.move} {c.what}".lower()))
                boost = -2.0 if steer & words else 0.0
                boost += -1.5 if c.move in helped else 0.0  # the lessons note: a move that helped (here or imported)
                saturated = 0 if (not ctx.saturation or c.structural) else 1
                penalty = stats.get(c.move, 0.0)
                outside = fam >= len(families)
                # own fresh moves, then other families' fresh moves, then moves that already lost on this line
                # ... and a family the lessons note calls exhausted goes with the moves that already lost
                group = 2 if penalty >= STALE or c.family in tired else int(outside)
                # near the gate, the gentler of a cut's variants (x0.75 before x0.5) goes first
                gentle = -1.5 if tight and "cut" in c.effects and _factor(c.variant) >= 0.7 else 0.0
                key = ((group, fam, tier) if ordered else (group, tier, fam)) + (
                    saturated, penalty + boost, c.order + gentle + i * 0.1 + self._jitter(ctx, c))
                expect = c.expect + gain
                note = "" if not outside else (f"(a {c.family} move: the {ctx.role.name} catalogue has nothing "
                                               "untried on this line) ")
                out.append(_Plan(c, edits, c.hypothesis(note, suffix, expect), expect, key))
        return sorted(out, key=lambda p: p.key)

    def _repairs(self, ctx: ProposalContext, src: Source, found: list[Candidate], families: tuple[str, ...],
                 kind: str, stats: Mapping[str, float], speed: bool) -> list[_Plan]:
        parent = ctx.parent
        head = f"repair of {parent.short} ({_failure_summary(parent)}): "
        parent_family, parent_effects = _move_meta(_move_of(parent))
        parent_family = parent_family or (families[0] if families else "")
        gp_files = _grandparent_files(ctx)
        gp = Source(ctx.recipe, gp_files) if gp_files is not None else None
        memory = bool(MEMORY_ERROR.search(parent.feedback or ""))
        near = kind == "near_miss"
        # The parent's change backfired: a speed-up that ran out of time, a shrink that grew the artifact.
        backfired = (kind == "timed_out" and "faster" in parent_effects) or (kind == "size" and "smaller" in parent_effects)
        pool: list[tuple[tuple, Candidate, tuple[Edit, ...], str]] = []
        if gp is not None:
            b = bisect_back(src, gp, 0.25 if near else 0.5, parent_family, max_rel=NEAR_MISS_STEP if near else None)
            if b is not None:
                pool.append(((REPAIR_TIER["bisect_near" if near else "bisect"], 0, 0.0), b, b.edits, ""))
        for c in found:
            if not _serves(c, kind, memory):
                continue
            pref = NEAR_MISS_FIRST.index(c.move) if near and c.move in NEAR_MISS_FIRST else 50
            fam = _family_rank(c, families)
            tier = REPAIR_TIER["own" if fam < len(families) else "other"]
            pool.append(((tier, pref, stats.get(c.move, 0.0) + fam + c.order / 1000), c, c.edits, ""))
        undo = revert_edits(src, ctx.parent_files, gp_files) if gp_files is not None else ()
        if gp is not None and undo:
            prefix = f"undid {parent.short}'s change ({_clip(parent.hypothesis, 80)}) and instead "
            for c in candidates(gp):
                if kind == "crashed" and c.family == parent_family:
                    continue  # a crash: another family's idea rather than the same one again
                if memory and not c.effects & {"memory", "smaller"}:
                    continue
                own = _family_rank(c, families) < len(families)
                if kind == "crashed" or backfired:
                    tier = REPAIR_TIER["undo" if own else "undo_other"]
                else:
                    tier = REPAIR_TIER["undo_late"]
                rank = (_tier(c, speed, False, False), stats.get(c.move, 0.0) + c.order / 1000)
                pool.append(((tier, *rank), c, undo + c.edits, prefix))
        pool.sort(key=lambda x: x[0])
        return [_Plan(c, edits, c.hypothesis(head + prefix), c.expect, key) for key, c, edits, prefix in pool]


# ----- helpers ----------------------------------------------------------------------
def role_families(role: str, brief: str = "") -> tuple[str, ...]:
    """Move families a role draws on, in order of preference (the catalogue's role map, else its brief)."""
    cat = catalogue()
    if role in cat.roles:
        return cat.roles[role]
    text = brief.lower()
    hits = [f for f, words in cat.family_keywords.items() if any(w in text for w in words)]
    return tuple(hits) or cat.families


def _family_rank(c: Candidate, families: tuple[str, ...]) -> int:
    ranks = [families.index(f) for f in c.families if f in families]
    return min(ranks) if ranks else len(families)


def _serves(c: Candidate, kind: str, memory: bool) -> bool:
    """Whether a move on the failed parent's own code can repair this kind of failure."""
    if kind in ("near_miss", "gate_miss"):
        return bool(c.effects & {"quality", "stability"})
    if kind == "timed_out":
        return bool(c.effects & {"cut", "faster"})
    if memory:
        return bool(c.effects & {"memory", "smaller"})
    if kind == "size":
        return "smaller" in c.effects
    return False  # a crash: only undoing the change (below) is a repair


def _tier(c: Candidate, speed: bool, tight: bool, paired: bool) -> int:
    """Rank by the objective: for a time score, faster first (when the gate is tight, quality paired
    with a shorter schedule first); for a quality score, quality first."""
    e = c.effects
    if speed:
        if paired:
            return 0 if (c.enables_cut or tight) else 1
        if "faster" in e and "slower" not in e:
            return (2 if "cut" in e else 1) if tight else 0
        return 3 if (e & {"quality", "stability"}) and "slower" not in e else 4
    if paired or "quality" in e:
        return 0
    if "stability" in e:
        return 1
    if "faster" in e and "cut" not in e:
        return 2
    return 3


def _is_speed(recipe: Recipe) -> bool:
    return recipe.metric.goal == "minimize" and bool(TIME_METRIC.search(recipe.metric.name))


def _tight(recipe: Recipe, parent: TrialRecord) -> bool:
    """The parent clears a gate by less than TIGHT near-miss bands (or 0.5% of the threshold when the band is 0)."""
    for g in recipe.gates:
        observed = parent.metrics.get(g.metric)
        if observed is None:
            continue
        band = g.near_miss or abs(g.value) * 0.005
        if g.margin(observed) < TIGHT * band:
            return True
    return False


def _pairing(recipe: Recipe, parent_files: Mapping[str, bytes], c: Candidate, speed: bool, tight: bool = False
             ) -> tuple[Candidate, str, str] | None:
    """A second move that cashes in ``c``'s effect under this objective: (move, hypothesis suffix, expectation).

    Time score: a faster-converging change, or a cheap quality move, paired with a shorter schedule
    (half the steps while the gates have room, a quarter fewer when they are tight).
    Quality score with an artifact limit: a pure size saving paired with more capacity.
    """
    if speed and (c.enables_cut or ("quality" in c.effects and not c.effects & {"cut", "slower"})):
        cut = _paired_cut(recipe, parent_files, c, strong=c.enables_cut or not tight)
        if cut is not None:
            return (cut, f", and shorten the schedule to cash it in: {_changes(cut)}",
                    "; the shorter schedule turns it into time saved")
    if not speed and recipe.limits.artifact_bytes and c.effects == frozenset({"smaller"}):
        after = _after(recipe, parent_files, c)
        for move, variant in CAPACITY:
            more = numeric_variant(after, move, variant) if after is not None else None
            if more is not None:
                return (more, f", and spend the bytes it saves on capacity: {_changes(more)}",
                        "; the bytes saved buy a larger model under the same limit")
    return None


def _after(recipe: Recipe, parent_files: Mapping[str, bytes], c: Candidate) -> Source | None:
    try:
        return Source(recipe, apply_edits(recipe, parent_files, list(c.edits)))
    except ProposalError:
        return None


def _paired_cut(recipe: Recipe, parent_files: Mapping[str, bytes], c: Candidate, strong: bool) -> Candidate | None:
    """The schedule cut that turns ``c``'s quality into time: on the code after ``c``."""
    if any(re.search(r"epoch|step|iter", label, re.I) for label, _, _ in c.changes):
        return None  # c already changes the schedule
    after = _after(recipe, parent_files, c)
    for move, hard, gentle in CUTS:
        cut = numeric_variant(after, move, hard if strong else gentle) if after is not None else None
        if cut is not None:
            return cut
    return None


def _factor(variant: str) -> float:
    """The factor of a scaling variant (``x0.75`` -> 0.75); 0 for anything else."""
    try:
        return float(variant[1:]) if variant.startswith("x") else 0.0
    except ValueError:
        return 0.0


def _changes(c: Candidate) -> str:
    return ", ".join(f"{label} {show(o)} -> {show(n)}" for label, o, n in c.changes)


def _move_of(t: TrialRecord) -> str | None:
    m = MOVE_ID.match(t.hypothesis or "")
    return m.group(1) if m else None


def _move_meta(move: str | None) -> tuple[str | None, frozenset[str]]:
    """Family and effects of a catalogue move by id; (None, {}) for anything else."""
    cat = catalogue()
    m = next((m for m in (*cat.moves, *cat.rewrites) if m.id == move), None)
    return (m.family, m.effects) if m is not None else (None, frozenset())


STALE = 3.0  # a move with this penalty or more has already lost on this line of descent


def _move_stats(lineage: Lineage, parent: TrialRecord) -> dict[str, float]:
    """A penalty per move, from the lineage.

    +3 per try that was not kept on this parent or one of its ancestors (the same line of code), +1 per
    discard elsewhere, +2 per failure or worse-than-its-parent result elsewhere; -1 per keep (at most -2).
    A penalty of ``STALE`` or more means the move already lost on this line.
    """
    line = {t.run_id for t in lineage.path_to(parent)} | {parent.run_id}
    score: Counter = Counter()
    keeps: Counter = Counter()
    for t in lineage.trials:
        move = _move_of(t)
        if move is None:
            continue
        if t.decision == "keep":
            keeps[move] += 1
        elif t.parent_id in line:
            score[move] += STALE  # tried from this code or an ancestor's: running or lost
        elif t.finished:
            gain = lineage.direction.gain(t.score, lineage.parent_score(t))
            score[move] += 2 if (t.outcome is not Outcome.OK or (gain is not None and gain < 0)) else 1
    return {m: score[m] - min(keeps[m], 2) for m in set(score) | set(keeps)}


def _known_digests(ctx: ProposalContext) -> set[str]:
    known = {t.code_sha256 for t in ctx.lineage.trials}
    try:  # trials recorded since the lineage snapshot was taken (other proposers, other loops)
        known |= {t.code_sha256 for t in ctx.store.trials()}
    except Exception as e:  # best effort: the loop checks duplicates again before it records a trial
        logger.warning("offline specialist: could not refresh the lineage (%s); using the snapshot", e)
    known.add(code_digest(ctx.parent_files))
    return known


def _grandparent_files(ctx: ProposalContext) -> dict[str, bytes] | None:
    if not ctx.parent.parent_id:
        return None
    try:
        return ctx.store.code(ctx.parent.parent_id)
    except Exception as e:  # without it, repairs that undo or bisect the parent's change are skipped
        logger.warning("offline specialist: no code for %s (%s); repairing without it", ctx.parent.parent_id, e)
        return None


def _failure_summary(t: TrialRecord) -> str:
    first = (t.feedback or "").strip().splitlines()[0] if (t.feedback or "").strip() else ""
    first = first.removeprefix("outcome: ")
    outcome = t.outcome.value if t.outcome else "failed"
    if not first:
        return outcome + (" (near miss)" if t.near_miss else "")
    return _clip(first.replace(" — ", ": ", 1), 160)


def _clip(text: str, n: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _lesson_hints(text: str) -> tuple[frozenset[str], frozenset[str]]:
    if not text:
        return frozenset(), frozenset()
    from mlflow_autoresearch.research._lessons import hints

    return hints(text)


def _steering_words(steering: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9]+", steering.lower()) if len(w) >= 4}


def _transcript(mode: str, considered: list[dict], plans: list[_Plan]) -> str:
    ranked = [{"move": p.cand.move, "variant": p.cand.variant, "family": p.cand.family,
               "hypothesis": _clip(p.hypothesis, 200)} for p in plans[:SHOWN]]
    return json.dumps({"backend": "offline", "mode": mode, "ranked": ranked, "considered": considered[:SHOWN]},
                      indent=2)

