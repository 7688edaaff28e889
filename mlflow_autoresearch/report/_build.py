"""Build the report of an experiment, and log it as a summary run of that experiment."""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from mlflow_autoresearch import schema as S
from mlflow_autoresearch._errors import StoreError
from mlflow_autoresearch.lineage import LineageStore, TrialRecord
from mlflow_autoresearch.recipe import Recipe
from mlflow_autoresearch.report._facts import Facts, compute, infer_goal

logger = logging.getLogger(__name__)

HTML_NAME = "report.html"
SUMMARY_NAME = "summary.json"
ARTIFACT_DIR = "report"


@dataclass(frozen=True)
class ReportPaths:
    """What :func:`build_report` wrote: the page, one PNG per plot, and the numbers as JSON."""

    html: Path
    images: dict[str, Path]
    summary: Path


def build_report(
    source: LineageStore | Iterable[TrialRecord],
    out_dir: str | Path,
    *,
    goal: str | None = None,
    title: str | None = None,
    ui_url: str | None = None,
    experiment_id: str | None = None,
    tracking_uri: str | None = None,
) -> ReportPaths:
    """Render the report of one experiment into ``out_dir`` (created if needed; files there are replaced).

    ``source``: a lineage store (its trials are read once, and the repairs'
    diffs are read from it) or trial records.  ``goal``: ``minimize`` or
    ``maximize``; when omitted it comes from the recipe named on the runs, else
    from the direction the kept scores moved in.  Trial links point into the
    MLflow UI at ``ui_url``, or at the tracking URI when that is an ``http(s)``
    server; otherwise the page shows run ids.  Safe to call while a loop runs:
    it reads a snapshot.
    """
    from mlflow_autoresearch.report._html import REPAIRS_SHOWN, Links, render
    from mlflow_autoresearch.report._plots import PLOTS

    store = source if isinstance(source, LineageStore) else None
    trials = store.trials() if store is not None else list(source)
    if goal is None:
        goal = infer_goal(trials)
        if goal is None:
            goal = "minimize"
            if any(t.kept for t in trials):
                logger.warning("report: cannot tell whether %s is minimized or maximized; assuming minimize "
                               "(pass goal / --goal)", _metric(trials))
    experiment = store.experiment_name if store is not None else ""
    facts = compute(trials, goal, experiment)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images = {name: draw(facts, out / f"{name}.png") for name, draw in PLOTS.items()}
    diffs: dict[str, str] = {}
    if store is not None:
        for r in facts.repairs[-REPAIRS_SHOWN:]:
            diffs[r.repair.run_id] = store.read_artifact(r.repair.run_id, S.PATCH) or ""
    uri = tracking_uri or getattr(store, "tracking_uri", None)
    links = Links.for_tracking_uri(uri, experiment_id or getattr(store, "experiment_id", None), ui_url)
    page = render(facts, images, links, title=title or f"Auto-research report: {experiment or facts.metric}",
                  tracking_uri=uri, diffs=diffs)
    html_path = out / HTML_NAME
    html_path.write_text(page, encoding="utf-8")
    summary_path = out / SUMMARY_NAME
    summary_path.write_text(json.dumps(summary(facts), indent=2), encoding="utf-8")
    return ReportPaths(html=html_path, images=images, summary=summary_path)


def _metric(trials: Iterable[TrialRecord]) -> str:
    return next((t.tags[S.SCORE_NAME] for t in trials if t.tags.get(S.SCORE_NAME)), "the score")


def summary(f: Facts) -> dict:
    """The report's headline numbers, for machines (``summary.json`` and the summary run's metrics)."""
    return {
        "experiment": f.experiment,
        "metric": f.metric,
        "goal": f.goal,
        "trials": len(f.trials),
        "finished": len(f.finished),
        "kept_improvements": len(f.improvements),
        "outcomes": f.outcome_totals,
        "best": None if f.best is None else {"trial": f.best.short, "run_id": f.best.run_id, "score": f.best.score},
        "baseline": None if f.baseline is None else {"run_id": f.baseline.run_id, "score": f.baseline.score},
        "relative_gain": f.relative_gain,
        "llm_cost_usd": f.total_dollars,
        "llm_tokens_in": f.total_tokens[0],
        "llm_tokens_out": f.total_tokens[1],
        "gpu_seconds": f.total_gpu_seconds,  # the key stays for readers of summary.json; see "device"
        "device": f.device,  # GPU, CPU, or compute (trials recorded before the device tag)
        "confirm_seconds": sum(float(t.metrics.get("confirm_seconds", 0.0) or 0.0) for t in f.trials),
        "noise": f.lineage.noise_model.describe(),
        "usd_per_improvement": f.dollars_per_improvement,
        "gpu_seconds_per_improvement": f.gpu_seconds_per_improvement,
        "specialists": [{"name": s.name, "trials": s.total, "kept": s.kept, "outcomes": s.outcomes}
                        for s in f.specialists],
        "repairs": [{"failure": r.failure.short, "repair": r.repair.short} for r in f.repairs],
    }


def log_report(
    store: LineageStore,
    recipe: Recipe | None = None,
    *,
    goal: str | None = None,
    title: str | None = None,
    ui_url: str | None = None,
    run_name: str | None = None,
) -> str | None:
    """Build the report and log it as the artifacts (``report/``) of a new summary run in the store's experiment.

    ``recipe`` (or ``goal``) gives the score's direction; without either it
    is inferred as :func:`build_report` does.  The run is tagged
    ``autoresearch.kind=summary`` (the lineage never reads it as a trial),
    named ``report-<date>-<time>``, carries the headline numbers as metrics
    and a markdown note, and is finished before this returns.  Returns its run id, or None for a store that is not an MLflow
    experiment (the in-memory store).  Raises StoreError when the tracking
    store refuses the writes.
    """
    from mlflow.exceptions import MlflowException

    if goal is None and recipe is not None:
        goal = recipe.metric.goal
    client = getattr(store, "client", None)
    experiment_id = getattr(store, "experiment_id", None)
    if client is None or experiment_id is None:
        logger.debug("log_report: %s is not an MLflow store; nothing logged", type(store).__name__)
        return None
    with tempfile.TemporaryDirectory(prefix="autoresearch-report-") as tmp:
        paths = build_report(store, tmp, goal=goal, title=title, ui_url=ui_url)
        numbers = json.loads(paths.summary.read_text())
        name = run_name or f"report-{datetime.now():%Y%m%d-%H%M%S}"
        tags = {S.KIND: "summary", S.NOTE: _note(numbers)}
        recipe = next((t.tags.get(S.RECIPE) for t in store.trials() if t.tags.get(S.RECIPE)), None)
        if recipe:
            tags[S.RECIPE] = recipe
        metrics = {k: float(numbers[k]) for k in ("trials", "kept_improvements", "llm_cost_usd", "llm_tokens_in",
                                                    "llm_tokens_out", "gpu_seconds")}
        if numbers["best"] is not None and numbers["best"]["score"] is not None:
            metrics[f"best_{numbers['metric']}"] = float(numbers["best"]["score"])
        try:
            run = client.create_run(experiment_id, run_name=name, tags=tags)
            run_id = run.info.run_id
            ts = int(time.time() * 1000)
            for k, v in metrics.items():
                client.log_metric(run_id, k, v, timestamp=ts)
            client.log_artifacts(run_id, tmp, ARTIFACT_DIR)
            client.set_terminated(run_id)
        except MlflowException as e:
            raise StoreError(f"logging the report of {store.experiment_name!r} failed: {e}") from None
    logger.debug("report logged to run %s (%s/%s)", run_id, ARTIFACT_DIR, HTML_NAME)
    return run_id


def _note(n: dict) -> str:
    best = n["best"]
    lines = [f"### Report of {n['experiment']}",
             f"**Trials:** {n['trials']} ({n['kept_improvements']} kept improvements)  "]
    if best:
        lines.append(f"**Best {n['metric']}:** {best['score']:.5g} ({best['trial']}, run `{best['run_id']}`)  ")
    if n["relative_gain"] is not None:
        lines.append(f"**Gain over the baseline:** {100 * n['relative_gain']:+.1f}%  ")
    lines.append(f"**Spend:** ${n['llm_cost_usd']:.2f} LLM, {n['gpu_seconds']:,.1f} {n['device']}-seconds  ")
    lines += ["", f"Open `{ARTIFACT_DIR}/{HTML_NAME}` under Artifacts for the plots, the lineage tree and the "
              "leaderboard."]
    return S.clip("\n".join(lines))
