"""The numbers a report shows, computed once from a snapshot of the lineage.

Everything here is pure: :class:`Facts` is built from trial records and never
touches a store, so the plots and the page are functions of it alone.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from mlflow_autoresearch import schema as S
from mlflow_autoresearch.lineage import Lineage, TrialRecord
from mlflow_autoresearch.outcome import Outcome

logger = logging.getLogger(__name__)

BASELINE = "baseline"


def dollars(t: TrialRecord) -> float:
    """LLM spend of the proposal behind ``t`` (0 for the offline playbook and manual trials)."""
    return float(t.metrics.get("llm_cost_usd", 0.0) or 0.0)


def tokens(t: TrialRecord) -> tuple[int, int]:
    return int(t.metrics.get("llm_tokens_in", 0) or 0), int(t.metrics.get("llm_tokens_out", 0) or 0)


def gpu_seconds(t: TrialRecord) -> float:
    """Accelerator time of the evaluation: ``train_seconds`` (per seed, evaluator clock) times ``seeds``.

    Trials that stopped before a seed finished have no ``train_seconds`` and count 0.
    """
    ts = t.metrics.get("train_seconds")
    if ts is None or math.isnan(ts):
        return 0.0
    seeds = t.metrics.get("seeds", 1.0) or 1.0
    # The paired confirmation ran on the same slot: its seconds are this trial's too.
    return float(ts) * float(seeds) + float(t.metrics.get("confirm_seconds", 0.0) or 0.0)


def outcome_word(t: TrialRecord) -> str:
    return t.outcome.value if t.outcome else t.status.lower()


@dataclass(frozen=True)
class Improvement:
    """A kept trial and what it took to get there since the previous improvement."""

    trial: TrialRecord
    previous: TrialRecord | None  # the best before it
    gain: float | None  # positive when better, in the metric's units
    trials_spent: int  # trials numbered after the previous improvement, up to and including this one
    dollars: float
    gpu_seconds: float
    tokens_in: int
    tokens_out: int


@dataclass(frozen=True)
class SpecialistStats:
    name: str
    outcomes: dict[str, int]  # outcome word -> count; "ok" split into kept and the rest by ``kept``
    kept: int
    total: int

    @property
    def keep_rate(self) -> float:
        return self.kept / self.total if self.total else 0.0


@dataclass(frozen=True)
class Repair:
    """A failed trial (not ``ok``) and a child of it that was kept."""

    failure: TrialRecord
    repair: TrialRecord


@dataclass(frozen=True)
class BestPoint:
    """The best score right after ``trial`` was decided."""

    trial: TrialRecord
    seconds: float  # since the first trial started
    best: float | None


@dataclass
class Facts:
    """What the report says about one experiment.  Built by :func:`compute`; read-only by convention."""

    lineage: Lineage
    goal: str
    metric: str
    experiment: str
    trials: list[TrialRecord]  # every trial, by number
    finished: list[TrialRecord]
    best: TrialRecord | None
    baseline: TrialRecord | None
    best_path: list[TrialRecord]
    by_number: list[BestPoint]
    by_time: list[BestPoint]
    improvements: list[Improvement]
    specialists: list[SpecialistStats]
    repairs: list[Repair]
    total_dollars: float
    total_gpu_seconds: float
    total_tokens: tuple[int, int]
    outcome_totals: dict[str, int] = field(default_factory=dict)
    start_ms: int = 0

    @property
    def device(self) -> str:
        """``GPU`` when any trial ran on a GPU, ``CPU`` when every recorded one ran on the CPU, else ``compute``.

        From the evaluator's ``autoresearch.device`` tag; trials recorded before
        it existed say nothing, and a report of only those says ``compute``.
        """
        seen = {t.tags.get(S.DEVICE, "").split(":")[0] for t in self.trials} - {""}
        if "gpu" in seen:
            return "GPU"
        return "CPU" if seen == {"cpu"} else "compute"

    @property
    def device_seconds(self) -> str:
        """The unit of the report's compute spend: ``GPU-seconds``, ``CPU-seconds`` or ``compute-seconds``."""
        return f"{self.device}-seconds"

    @property
    def dollars_per_improvement(self) -> float | None:
        return self.total_dollars / len(self.improvements) if self.improvements else None

    @property
    def gpu_seconds_per_improvement(self) -> float | None:
        return self.total_gpu_seconds / len(self.improvements) if self.improvements else None

    @property
    def relative_gain(self) -> float | None:
        """Best against baseline as a fraction of the baseline (positive when better)."""
        b, best = self.baseline, self.best
        if b is None or best is None or b.score in (None, 0) or best.score is None:
            return None
        gain = self.lineage.direction.gain(best.score, b.score)
        return None if gain is None else gain / abs(b.score)


def infer_goal(trials: Sequence[TrialRecord]) -> str | None:
    """The score's direction as the recorded decisions imply it, or None when they cannot tell.

    First the recipe named on the runs (``autoresearch.recipe_dir``), then the
    kept trials: each keep beat the best before it, so their scores move in
    the goal's direction.
    """
    from mlflow_autoresearch._errors import RecipeError
    from mlflow_autoresearch.recipe import load_recipe

    for t in trials:
        folder = t.tags.get(S.RECIPE_DIR)
        if folder:
            try:
                return load_recipe(folder, t.tags.get(S.PROFILE)).metric.goal
            except (RecipeError, OSError) as e:
                logger.debug("recipe of %s not readable for its goal: %s", t.short, e)
            break
    kept = [t for t in sorted(trials, key=lambda t: t.end_time or 0) if t.kept and t.score is not None]
    ups = sum(1 for a, b in zip(kept, kept[1:], strict=False) if b.score > a.score)
    downs = sum(1 for a, b in zip(kept, kept[1:], strict=False) if b.score < a.score)
    if ups == downs:
        return None
    return "maximize" if ups > downs else "minimize"


def compute(trials: Sequence[TrialRecord], goal: str, experiment: str = "") -> Facts:
    """Every number of the report, from the trial records of one experiment."""
    lineage = Lineage(trials, goal)
    d = lineage.direction
    ordered = sorted(lineage.trials, key=lambda t: t.number)
    finished = [t for t in ordered if t.finished]
    metric = next((t.tags[S.SCORE_NAME] for t in ordered if t.tags.get(S.SCORE_NAME)), "score")
    start_ms = min((t.start_time for t in ordered if t.start_time), default=0)

    by_number: list[BestPoint] = []
    best: TrialRecord | None = None
    for t in finished:
        if t.kept and (best is None or d.key(t.score) > d.key(best.score)):
            best = t
        by_number.append(BestPoint(t, ((t.end_time or t.start_time) - start_ms) / 1000, best.score if best else None))

    by_time: list[BestPoint] = []
    best = None
    for t in sorted(finished, key=lambda t: t.end_time or t.start_time):
        if t.kept and (best is None or d.key(t.score) > d.key(best.score)):
            best = t
        by_time.append(BestPoint(t, ((t.end_time or t.start_time) - start_ms) / 1000, best.score if best else None))

    improvements: list[Improvement] = []
    best = None
    spent: list[TrialRecord] = []
    for t in finished:
        spent.append(t)
        if t.decision == BASELINE and t.kept:
            best = t if best is None or d.key(t.score) > d.key(best.score) else best
            spent = []
            continue
        if t.decision == "keep" and t.kept:
            tin = sum(tokens(x)[0] for x in spent)
            tout = sum(tokens(x)[1] for x in spent)
            improvements.append(Improvement(
                trial=t, previous=best, gain=d.gain(t.score, best.score) if best else None,
                trials_spent=len(spent), dollars=sum(dollars(x) for x in spent),
                gpu_seconds=sum(gpu_seconds(x) for x in spent), tokens_in=tin, tokens_out=tout))
            if best is None or d.key(t.score) > d.key(best.score):
                best = t
            spent = []

    stats: dict[str, Counter] = {}
    for t in finished:
        if t.specialist == BASELINE:
            continue
        c = stats.setdefault(t.specialist or "?", Counter())
        c[outcome_word(t)] += 1
        c["__kept"] += 1 if (t.kept and t.decision == "keep") else 0
    specialists = [
        SpecialistStats(name, {k: v for k, v in c.items() if not k.startswith("__")}, c["__kept"],
                        sum(v for k, v in c.items() if not k.startswith("__")))
        for name, c in sorted(stats.items())
    ]

    repairs = []
    for t in finished:
        if t.outcome is not Outcome.OK:
            for child in lineage.children(t.run_id):
                if child.kept:
                    repairs.append(Repair(t, child))

    tin = sum(tokens(t)[0] for t in ordered)
    tout = sum(tokens(t)[1] for t in ordered)
    return Facts(
        lineage=lineage, goal=goal, metric=metric, experiment=experiment, trials=ordered, finished=finished,
        best=lineage.best, baseline=lineage.baseline, best_path=lineage.path_to(lineage.best),
        by_number=by_number, by_time=by_time, improvements=improvements, specialists=specialists,
        repairs=repairs, total_dollars=sum(dollars(t) for t in ordered),
        total_gpu_seconds=sum(gpu_seconds(t) for t in ordered), total_tokens=(tin, tout),
        outcome_totals=dict(Counter(outcome_word(t) for t in finished)), start_ms=start_ms,
    )
