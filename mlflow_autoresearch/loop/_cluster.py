"""The loop's side of the ``slurm`` backend: a job's resources from the recipe, a trial's job found
again after a restart, and the outcome of a job that SLURM ended before the evaluator could report.

A trial is never submitted twice while a job for it is queued or running:
before submitting, the loop asks slurmctld for a live job named after the
trial's run (``mlflow-<run id>``) and waits on that one instead.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

from mlflow_autoresearch import schema as S
from mlflow_autoresearch._errors import UsageError
from mlflow_autoresearch.lineage import LineageStore, TrialRecord
from mlflow_autoresearch.outcome import Decision, Outcome
from mlflow_autoresearch.recipe import Recipe

logger = logging.getLogger(__name__)


def evaluation_seconds(recipe: Recipe) -> float:
    """The longest an evaluation of ``recipe`` may take under its own limits (all seeds, preflight, grace)."""
    lim = recipe.limits
    per_seed = lim.train_seconds + lim.eval_seconds + 2 * lim.grace_seconds
    budget = (lim.preflight_seconds if recipe.preflight else 0.0) + recipe.seeds * per_seed
    if lim.total_seconds:
        budget = min(budget, lim.total_seconds + 2 * lim.grace_seconds)
    return budget


def load_user_config(path: str | None) -> dict:
    if not path:
        return {}
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise UsageError(f"--backend-config {path}: cannot read it as JSON: {e}") from None
    if not isinstance(raw, dict):
        raise UsageError(f"--backend-config {path}: expected a JSON object of sbatch settings")
    return raw


def job_config(recipe: Recipe, user: dict, run_id: str) -> dict:
    """The backend config for one trial's job: the user's settings, with ``time`` (the recipe's limits
    plus ``time_margin_seconds``) and ``mem`` (the recipe's ``memory_gb`` plus a quarter) where not given."""
    from mlflow_autoresearch.slurm import parse_config

    config = parse_config(user)  # refuses unknown keys, naming them
    raw = {"job_attaches_logs": False, **user, "run_id": run_id}  # the loop attaches them when the job ends
    if config.time is None:
        raw["time"] = str(max(1, math.ceil((evaluation_seconds(recipe) + config.time_margin_seconds) / 60)))
    if config.mem is None and recipe.limits.memory_gb:
        raw["mem"] = f"{math.ceil(recipe.limits.memory_gb * 1.25 * 1024)}M"
    return raw


def live_job(run_id: str, tracking_uri: str, poll_seconds: float = 2.0):
    """The trial's job while it is queued or running (a ``SlurmSubmittedRun``), else None."""
    from mlflow_autoresearch.slurm import find_job

    return find_job(run_id, tracking_uri=tracking_uri, poll_seconds=poll_seconds)


def record_time_limit(store: LineageStore, recipe: Recipe, trial: TrialRecord, job) -> TrialRecord:
    """SLURM ended the job at its ``--time``: the trial ran out of time (``timed_out``), not a harness fault."""
    reason = (f"the SLURM job {job.job_id} ran past its time limit and SLURM ended it ({job.state}) before the "
              "evaluator reported; give the recipe's limits less work or the backend config a larger `time`")
    feedback = f"outcome: {Outcome.TIMED_OUT.value} — {reason}"
    logger.warning("%s: %s", trial.short, reason)
    return store.record_result(trial.run_id, tags={
        S.OUTCOME: Outcome.TIMED_OUT.value, S.DECISION: Decision.DISCARD.value, S.REASON: S.clip(reason, 1000),
        S.FEEDBACK: S.clip(feedback, S.FEEDBACK_TAG_LIMIT), S.NEAR_MISS: "false",
        S.SCORE_NAME: recipe.metric.name, S.NOTE: f"### {trial.name}\n**Hypothesis:** {trial.hypothesis}  \n**Outcome:** `timed_out`\n\n{reason}",
    }, metrics={}, artifacts={S.FEEDBACK_JSON: json.dumps({"outcome": Outcome.TIMED_OUT.value, "reason": reason,
                                                           "slurm_job": job.job_id, "slurm_state": job.state})})
