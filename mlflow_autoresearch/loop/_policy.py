"""The policy: which parent and which specialist for the next proposal.

Mostly the current best; sometimes a near miss or a failure worth repairing,
or a strong kept ancestor; a specialist rotation weighted by each role's
recent yield, with a saturation note for a role whose last trials moved the
score less than the noise.  Keep or discard: :meth:`Policy.decide`, from the
evaluator's facts and paired confirmation (:mod:`mlflow_autoresearch.loop._decision`).
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from dataclasses import dataclass

from mlflow_autoresearch.lineage import Lineage, TrialRecord
from mlflow_autoresearch.outcome import Outcome
from mlflow_autoresearch.specialists import Role

REPAIRABLE = {Outcome.GATE_FAILED, Outcome.SIZE_EXCEEDED, Outcome.TIMED_OUT, Outcome.CRASHED}
REPAIR_SHARE = 0.5
ANCESTOR_SHARE = 0.15
RECENT = 30
SATURATION_WINDOW = 3


@dataclass(frozen=True)
class Choice:
    parent: TrialRecord
    role: Role
    why: str  # best | repair | ancestor | baseline
    saturation: str = ""


class Policy:
    """Seeded, thread-safe choices over a lineage snapshot."""

    def __init__(self, roles: list[Role], seed: int = 0) -> None:
        if not roles:
            raise ValueError("a policy needs at least one role")
        self.roles = roles
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._claimed_repairs: set[str] = set()
        self._last_role: str | None = None

    @staticmethod
    def decide(store, recipe, trial: TrialRecord, measurer=None, echo=None,
               allow_failed_baseline: bool = True) -> TrialRecord:
        """Keep or discard a measured trial, confirming it first when it looks better; recorded on the run."""
        from mlflow_autoresearch.loop._decision import decide_trial

        return decide_trial(store, recipe, trial, measurer=measurer, echo=echo,
                            allow_failed_baseline=allow_failed_baseline)

    def choose(self, lineage: Lineage) -> Choice:
        with self._lock:
            parent, why = self._parent(lineage)
            role = self._role(lineage, parent, why)
            self._last_role = role.name
            return Choice(parent, role, why, self._saturation(lineage, role))

    # ----- parent -----------------------------------------------------------
    def repair_candidates(self, lineage: Lineage) -> list[TrialRecord]:
        """Recent failures of a kept parent, with no child yet: worth one repair each."""
        out = []
        for t in lineage.finished[-RECENT:]:
            if t.outcome not in REPAIRABLE or t.run_id in self._claimed_repairs or lineage.children(t.run_id):
                continue
            parent = lineage.by_id.get(t.parent_id) if t.parent_id else None
            if parent is None or not parent.kept:
                continue
            if t.outcome is Outcome.GATE_FAILED and not t.near_miss:
                continue
            out.append(t)
        return out

    def _parent(self, lineage: Lineage) -> tuple[TrialRecord, str]:
        best = lineage.best
        if best is None:
            base = lineage.baseline
            if base is None:
                raise ValueError("no baseline in the lineage")
            return base, "baseline"
        repairs = self.repair_candidates(lineage)
        r = self._rng.random()
        if repairs and r < REPAIR_SHARE:
            # Near misses first: they are the cheapest wins.
            repairs.sort(key=lambda t: (not t.near_miss, -(t.end_time or 0)))
            pick = repairs[0]
            self._claimed_repairs.add(pick.run_id)
            return pick, "repair"
        ancestors = [t for t in lineage.kept[1:4] if t.run_id != best.run_id]
        if ancestors and r > 1 - ANCESTOR_SHARE:
            return self._rng.choice(ancestors), "ancestor"
        return best, "best"

    # ----- role -------------------------------------------------------------
    def yields(self, lineage: Lineage) -> dict[str, float]:
        """Per role: (1 + 2 * kept) / (1 + tried) over the recent trials."""
        recent = lineage.finished[-RECENT:]
        tried = Counter(t.specialist for t in recent)
        kept = Counter(t.specialist for t in recent if t.decision == "keep")
        return {r.name: (1 + 2 * kept[r.name]) / (1 + tried[r.name]) for r in self.roles}

    def _role(self, lineage: Lineage, parent: TrialRecord, why: str) -> Role:
        if why == "repair" and parent.specialist in {r.name for r in self.roles}:
            # The role that made the failure knows it best; it repairs half the time.
            if self._rng.random() < 0.5:
                return next(r for r in self.roles if r.name == parent.specialist)
        weights = self.yields(lineage)
        candidates = [r for r in self.roles if r.name != self._last_role] or self.roles
        return self._rng.choices(candidates, weights=[weights[r.name] for r in candidates], k=1)[0]

    @staticmethod
    def _saturation(lineage: Lineage, role: Role) -> str:
        mine = [t for t in lineage.finished if t.specialist == role.name][-SATURATION_WINDOW:]
        if len(mine) < SATURATION_WINDOW or any(t.decision == "keep" for t in mine):
            return ""
        noise = lineage.noise()
        gains = [abs(g) for t in mine if (g := lineage.direction.gain(t.score, lineage.parent_score(t))) is not None]
        if all(g <= max(noise, 1e-12) for g in gains):
            return (f"Saturation note: your last {SATURATION_WINDOW} trials moved the score less than the noise "
                    f"(±{noise:.3g}) or failed. Try a bigger or different kind of change.")
        return ""
