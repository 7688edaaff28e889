"""Arms side by side: best-so-far at equal trial budgets and equal compute, keep rate, failure mix, dollars.

:func:`collect` reads each experiment into an :class:`ArmRun`; :func:`compare`
groups the runs by arm (the experiment tag ``autoresearch.arm``, else the
experiment's name), cuts every run at the same trial budget (the smallest
any run has) and at the same compute (the least evaluator-seconds any run
spent), and :func:`write_report` writes the PNG plots, ``compare.md``,
``compare.html`` and ``compare.json``.

Budget trials are the trials a loop's budget counts: not the baseline, not a
refused duplicate, not a harness error.  Compute is the evaluator's
``total_seconds`` of each evaluated trial (the baseline's included, so that
every run starts at the compute its baseline took), plus the seconds of the
confirmation seeds its keep decision ran (``confirm_seconds``); a trial
refused before evaluation costs none.  Best-so-far is the score of the best
kept trial (each keep beat the best before it under the keep rule), starting
at the baseline's score.
"""

from __future__ import annotations

import html
import json
import math
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from mlflow_autoresearch import schema as S
from mlflow_autoresearch.lineage import Lineage, MlflowStore, TrialRecord
from mlflow_autoresearch.research._arms import ARM_TAG, LOOP_SEED_TAG
from mlflow_autoresearch.research._dedup import DUPLICATE_OF
from mlflow_autoresearch.research._lessons import counted


def compute_seconds(t: TrialRecord) -> float:
    """The evaluator-seconds a trial cost: its evaluation, plus the confirmation seeds of its keep decision."""
    v = t.metrics.get("total_seconds")
    if v is None or math.isnan(v):
        v = t.metrics.get("train_seconds", 0.0) * (t.metrics.get("seeds", 1.0) or 1.0)
    confirm = t.metrics.get("confirm_seconds", 0.0) or 0.0
    return (0.0 if v is None or math.isnan(v) else float(v)) + (0.0 if math.isnan(confirm) else float(confirm))


@dataclass(frozen=True)
class ArmRun:
    """One experiment (one loop seed of one arm), reduced to what a comparison needs."""

    experiment: str
    arm: str
    seed: str
    baseline: float | None
    scores: tuple[float | None, ...]  # best-so-far after 0, 1, ... budget trials
    seconds: tuple[float, ...]  # cumulative compute after 0, 1, ... budget trials
    kept: int
    outcomes: Counter
    duplicates: int
    dollars: float
    score_name: str = ""

    @property
    def trials(self) -> int:
        return len(self.scores) - 1

    def best_at(self, n: int) -> float | None:
        return self.scores[min(n, self.trials)]

    def best_within(self, seconds: float) -> float | None:
        best = self.scores[0]
        for s, sec in zip(self.scores, self.seconds, strict=True):
            if sec <= seconds + 1e-9:
                best = s
        return best


def reduce(experiment: str, trials: list[TrialRecord], goal: str, arm: str = "", seed: str = "") -> ArmRun:
    lineage = Lineage(sorted(trials, key=lambda t: t.number), goal)
    d = lineage.direction
    base = lineage.baseline
    best = base.score if base is not None and base.kept else None
    used = compute_seconds(base) if base is not None else 0.0
    scores, seconds = [best], [used]
    budget = counted(lineage)
    for t in budget:
        used += compute_seconds(t)
        if t.decision == "keep" and t.score is not None and (best is None or d.better(t.score, best)):
            best = t.score
        scores.append(best)
        seconds.append(used)
    return ArmRun(experiment=experiment, arm=arm or experiment, seed=seed,
                  baseline=base.score if base is not None else None, scores=tuple(scores), seconds=tuple(seconds),
                  kept=sum(t.decision == "keep" for t in budget),
                  outcomes=Counter(t.outcome.value for t in budget if t.outcome),
                  duplicates=sum(1 for t in lineage.trials if t.tags.get(DUPLICATE_OF)),
                  dollars=sum(float(t.metrics.get("llm_cost_usd", 0.0) or 0.0) for t in lineage.trials),
                  score_name=(base.tags.get(S.SCORE_NAME, "") if base is not None else ""))


def collect(tracking_uri: str, names: list[str], goal: str) -> list[ArmRun]:
    """Every named experiment as an :class:`ArmRun` (the store's errors name a missing one)."""
    runs = []
    for name in names:
        store = MlflowStore(name, tracking_uri, create=False)
        tags = store.client.get_experiment(store.experiment_id).tags
        runs.append(reduce(name, store.trials(), goal, tags.get(ARM_TAG, name), tags.get(LOOP_SEED_TAG, "")))
    return runs


def _stats(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    out = {"n": len(values), "mean": statistics.fmean(values), "min": min(values), "max": max(values),
           "values": values}
    out["sd"] = statistics.stdev(values) if len(values) > 1 else 0.0
    return out


@dataclass
class Comparison:
    goal: str
    runs: list[ArmRun]
    budget: int  # trials every run reached
    seconds: float  # compute every run reached
    arms: dict[str, dict] = field(default_factory=dict)


def compare(runs: list[ArmRun], goal: str) -> Comparison:
    """Group by arm and cut at the common budgets."""
    if not runs:
        raise ValueError("nothing to compare")
    budget = min(r.trials for r in runs)
    seconds = min(r.seconds[-1] for r in runs)
    groups: dict[str, list[ArmRun]] = defaultdict(list)
    for r in runs:
        groups[r.arm].append(r)
    cmp = Comparison(goal, runs, budget, seconds)
    for arm, rs in groups.items():
        at_n = [r.best_at(budget) for r in rs]
        at_s = [r.best_within(seconds) for r in rs]
        ratio = [b / r.baseline for b, r in zip(at_n, rs, strict=True) if b is not None and r.baseline]
        tried = sum(min(r.trials, budget) for r in rs)
        outcomes: Counter = Counter()
        for r in rs:
            outcomes.update(r.outcomes)
        cmp.arms[arm] = {
            "experiments": [r.experiment for r in rs], "seeds": [r.seed for r in rs],
            "best_at_budget": _stats([v for v in at_n if v is not None]),
            "best_at_seconds": _stats([v for v in at_s if v is not None]),
            "best_over_baseline": _stats(ratio),
            "baseline": _stats([r.baseline for r in rs if r.baseline is not None]),
            "kept": sum(r.kept for r in rs), "trials": sum(r.trials for r in rs), "tried_within_budget": tried,
            "keep_rate": sum(r.kept for r in rs) / max(sum(r.trials for r in rs), 1),
            "outcomes": dict(outcomes), "duplicates_refused": sum(r.duplicates for r in rs),
            "dollars": sum(r.dollars for r in rs), "compute_seconds": sum(r.seconds[-1] for r in rs),
        }
    return cmp


# ----- writing --------------------------------------------------------------------------------
def _fmt(s: dict, digits: int = 4) -> str:
    if not s.get("n"):
        return "—"
    text = f"{s['mean']:.{digits}g}"
    if s["n"] > 1:
        text += f" ± {s['sd']:.2g}"
    return text + f" ({', '.join(f'{v:.{digits}g}' for v in s['values'])})"


def markdown(cmp: Comparison, title: str = "Arms compared") -> str:
    name = next((r.score_name for r in cmp.runs if r.score_name), "score")
    lines = [f"# {title}", "",
             f"Score: `{name}` ({cmp.goal}). {len(cmp.runs)} experiments in {len(cmp.arms)} arms. "
             f"Equal budgets: **{cmp.budget} trials** (the fewest any run has) and **{cmp.seconds:.0f} "
             "evaluator-seconds** (the least compute any run spent, its baseline included). "
             "Values: mean ± sd over the loop seeds, then each seed's value.", "",
             f"| arm | seeds | best at {cmp.budget} trials | best / own baseline | best within {cmp.seconds:.0f} s "
             "| baseline | keep rate | refused duplicates | dollars |",
             "|---|---|---|---|---|---|---|---|---|"]
    for arm, a in cmp.arms.items():
        lines.append(f"| {arm} | {len(a['experiments'])} | {_fmt(a['best_at_budget'])} | "
                     f"{_fmt(a['best_over_baseline'], 3)} | {_fmt(a['best_at_seconds'])} | {_fmt(a['baseline'])} | "
                     f"{a['kept']}/{a['trials']} ({a['keep_rate']:.0%}) | {a['duplicates_refused']} | "
                     f"${a['dollars']:.2f} |")
    words = sorted({k for a in cmp.arms.values() for k in a["outcomes"]})
    lines += ["", "Failure mix (outcomes of budget trials, all seeds):", "",
              "| arm | " + " | ".join(words) + " |", "|---" * (len(words) + 1) + "|"]
    for arm, a in cmp.arms.items():
        lines.append(f"| {arm} | " + " | ".join(str(a["outcomes"].get(w, 0)) for w in words) + " |")
    lines += ["", "Experiments: " + "; ".join(f"{arm}: {', '.join(a['experiments'])}" for arm, a in cmp.arms.items()),
              "", "![best so far over each run's baseline](best_over_baseline.png)", "",
              "![best so far by trials](best_by_trials.png)", "",
              "![best so far by compute](best_by_seconds.png)", "", "![failure mix](failure_mix.png)", ""]
    return "\n".join(lines)


def _html(md: str, title: str) -> str:
    """A plain page from the markdown this module writes (tables, paragraphs, images)."""
    body, table = [], []

    def flush():
        if table:
            rows = [r for r in table if not set(r.replace("|", "").strip()) <= {"-"}]
            cells = [[html.escape(c.strip()) for c in r.strip().strip("|").split("|")] for r in rows]
            body.append("<table><tr>" + "".join(f"<th>{c}</th>" for c in cells[0]) + "</tr>" + "".join(
                "<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in cells[1:]) + "</table>")
            table.clear()

    for line in md.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush()
        if line.startswith("# "):
            body.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("!["):
            alt, src = line[2:].split("](", 1)
            body.append(f'<p><img src="{html.escape(src.rstrip(")"))}" alt="{html.escape(alt)}"></p>')
        elif line.strip():
            body.append(f"<p>{html.escape(line).replace('**', '')}</p>")
    flush()
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px 8px;font-size:14px}img{max-width:100%}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>")


def write_report(cmp: Comparison, out: Path, title: str = "Arms compared") -> Path:
    """Write the plots, compare.md, compare.html and compare.json into ``out``; the markdown's path."""
    from mlflow_autoresearch.research._compare_plots import plot_all

    out.mkdir(parents=True, exist_ok=True)
    plot_all(cmp, out)
    md = markdown(cmp, title)
    (out / "compare.md").write_text(md)
    (out / "compare.html").write_text(_html(md, title))
    data = {"goal": cmp.goal, "budget_trials": cmp.budget, "budget_seconds": cmp.seconds, "arms": cmp.arms,
            "runs": [{"experiment": r.experiment, "arm": r.arm, "seed": r.seed, "baseline": r.baseline,
                      "best_so_far": list(r.scores), "seconds": list(r.seconds), "duplicates": r.duplicates}
                     for r in cmp.runs]}
    (out / "compare.json").write_text(json.dumps(data, indent=2, default=float))
    return out / "compare.md"
