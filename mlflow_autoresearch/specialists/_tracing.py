"""Model calls traced into MLflow and linked to the trial run.

How a proposal's trace finds its trial (decided here, see also docs):

- :func:`proposal_trace` wraps one proposal session in a root span
  (``propose <role>``, type AGENT) in the lineage store's experiment.
  ``mlflow.anthropic.autolog`` (enabled once per process) records every
  ``messages.create`` as a CHAT_MODEL child span, so **one proposal is one
  trace**; its id is ``Proposal.trace_id``.
- The loop creates the trial run *after* the proposal, so it calls
  :func:`link_trace` with ``proposal.trace_id`` and the new run id; MLflow
  records the link, and ``mlflow.search_traces(run_id=...)`` finds the trace.
- When the run already exists (``ProposalContext.trace_run_id``), the trace
  carries it as ``mlflow.sourceRun`` from the start; no link is needed.

Traces are written only when the store is an MLflow store on the same
tracking URI as ``mlflow``'s own (else there is nothing to link to); for
other stores the session runs with tracing off in its thread, even if
autolog was enabled by someone else.  Tracing never fails a proposal: its
errors are logged and the proposal goes on.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import Any

from mlflow_autoresearch import schema as S
from mlflow_autoresearch.specialists._base import ProposalContext

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_autolog_on: bool | None = None  # None: not tried yet
_warned: set[str] = set()


def enable_autolog() -> bool:
    """Turn on ``mlflow.anthropic.autolog`` once per process.  False when it is not available."""
    global _autolog_on
    with _lock:
        if _autolog_on is None:
            try:
                import mlflow.anthropic

                mlflow.anthropic.autolog(log_traces=True, silent=True)
                _autolog_on = True
            except Exception as e:  # an optional integration: tracing is off, proposing goes on
                logger.warning("mlflow.anthropic.autolog is not available (%s): model calls are not traced", e)
                _autolog_on = False
        return _autolog_on


def _warn_once(key: str, msg: str, *args: Any) -> None:
    with _lock:
        if key in _warned:
            return
        _warned.add(key)
    logger.warning(msg, *args)


def _experiment(ctx: ProposalContext) -> str | None:
    """The store's experiment id when traces can go there, else None."""
    import mlflow

    experiment_id = getattr(ctx.store, "experiment_id", None)
    store_uri = getattr(ctx.store, "tracking_uri", None)
    if experiment_id is None or store_uri is None:
        return None
    if store_uri != mlflow.get_tracking_uri():
        _warn_once(f"uri:{store_uri}", "model calls are not traced: the lineage store is on %s but mlflow's tracking "
                   "URI is %s (call mlflow.set_tracking_uri)", store_uri, mlflow.get_tracking_uri())
        return None
    return str(experiment_id)


class TraceHandle:
    """The trace of one proposal session (``trace_id`` is None when nothing is traced)."""

    def __init__(self, span: Any = None) -> None:
        self.span = span
        self.trace_id: str | None = None
        if span is not None:
            tid = getattr(span, "trace_id", None)
            self.trace_id = tid if tid and "NO_OP" not in tid else None

    def finish(self, outputs: dict[str, Any]) -> None:
        if self.span is not None and self.trace_id is not None:
            try:
                self.span.set_outputs(outputs)
            except Exception as e:
                logger.debug("could not set trace outputs: %s", e)


@contextlib.contextmanager
def proposal_trace(ctx: ProposalContext, enabled: bool = True) -> Iterator[TraceHandle]:
    """Run a proposal session inside its own trace (or with tracing off in this thread)."""
    import mlflow

    experiment_id = _experiment(ctx) if enabled else None
    if experiment_id is None or not enable_autolog():
        with mlflow.tracing.context(enabled=False):
            yield TraceHandle()
        return
    from mlflow.entities import SpanType
    from mlflow.entities.trace_location import MlflowExperimentLocation

    tags = {S.SPECIALIST: ctx.role.name, S.RECIPE: ctx.recipe.name, S.PARENT: ctx.parent.run_id}
    attributes = {"role": ctx.role.name, "parent": ctx.parent.name, "recipe": ctx.recipe.name}
    with mlflow.tracing.context(tags=tags), \
            mlflow.start_span(name=f"propose {ctx.role.name}", span_type=SpanType.AGENT, attributes=attributes,
                              trace_destination=MlflowExperimentLocation(experiment_id),
                              run_id=ctx.trace_run_id) as span:
        span.set_inputs({"role": ctx.role.name, "parent": ctx.parent.name,
                         "parent_feedback": ctx.parent.feedback[:2000], "steering": ctx.steering})
        yield TraceHandle(span)


def link_trace(trace_id: str | None, run_id: str, tracking_uri: str | None = None) -> bool:
    """Link a proposal's trace to its trial run, once the run exists.

    Waits for the trace's asynchronous export first.  Returns False (and
    logs why) when there is no trace or the link failed; never raises.
    """
    if not trace_id:
        return False
    try:
        import mlflow
        from mlflow import MlflowClient

        mlflow.get_trace(trace_id, silent=True, flush=True)
        MlflowClient(tracking_uri).link_traces_to_run([trace_id], run_id)
        return True
    except Exception as e:
        logger.warning("could not link trace %s to run %s: %s", trace_id, run_id, e)
        return False
