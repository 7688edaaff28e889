"""The run ``mlflow run . -e autoresearch`` makes for the loop itself: the loop's session run, not an empty one.

MLflow Projects create one run for the entry point before the command starts,
in the experiment given to ``mlflow run`` (``Default`` unless
``--experiment-name``), and pass its id in ``MLFLOW_RUN_ID``.  The loop's
trials live in their own experiment, and a run cannot move between
experiments, so the loop tags that run as its session (kind ``session``),
names the experiment of its trials in a note, and logs what it did when it
stops.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from mlflow.exceptions import MlflowException

from mlflow_autoresearch import schema as S

if TYPE_CHECKING:
    from mlflow_autoresearch.loop._loop import LoopResult

logger = logging.getLogger(__name__)

SESSION_EXPERIMENT = S.PREFIX + "session_experiment"
SESSION_EXPERIMENT_ID = S.PREFIX + "session_experiment_id"


def project_run_id() -> str | None:
    """The run MLflow Projects made for this process, if any."""
    return os.environ.get("MLFLOW_RUN_ID") or None


def mark_session_run(client, experiment_name: str, experiment_id: str, recipe: str, worker: str) -> str | None:
    """Tag the entry point's run as this loop's session; returns its id (None when there is none).

    A run that already is something of ours (a trial, a ledger) is left alone.
    """
    run_id = project_run_id()
    if run_id is None:
        return None
    try:
        run = client.get_run(run_id)
        if run.data.tags.get(S.KIND) not in (None, "session"):
            return None
        note = (f"Session run of an autoresearch loop (recipe {recipe}, worker {worker}). The trials are runs of "
                f"experiment **{experiment_name}** (id {experiment_id}); open that experiment for them, or run "
                f"`autoresearch ui --experiment {experiment_name}`.")
        for key, value in {S.KIND: "session", SESSION_EXPERIMENT: experiment_name,
                           SESSION_EXPERIMENT_ID: experiment_id, S.NOTE: note}.items():
            client.set_tag(run_id, key, value)
        return run_id
    except MlflowException as e:  # the session run is a convenience; the loop does not depend on it
        logger.debug("could not tag the project run %s: %s", run_id, e)
        return None


def close_session_run(client, run_id: str | None, result: LoopResult) -> None:
    """Log the loop's totals on its session run."""
    if run_id is None:
        return
    try:
        client.set_tag(run_id, S.PREFIX + "stop_reason", result.stop_reason[:500])
        client.log_metric(run_id, "trials", result.trials)
        client.log_metric(run_id, "llm_cost_usd", result.dollars)
        client.log_metric(run_id, "slot_utilization", result.utilization)
        if result.best is not None:
            client.set_tag(run_id, S.PREFIX + "best", f"{result.best.short} {result.best.run_id}")
            if result.best.score is not None:
                client.log_metric(run_id, "best_score", result.best.score)
    except MlflowException as e:
        logger.debug("could not log the loop's totals on %s: %s", run_id, e)
