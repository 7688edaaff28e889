"""Our own Optuna-to-MLflow callback: one nested MLflow run per Optuna trial.

``optuna_integration.mlflow.MLflowCallback`` is deprecated (removal due in
Optuna 6) and logs through the fluent API's global active run; this one uses
an explicit :class:`~mlflow.tracking.MlflowClient`, so it is safe beside other
runs of the same process and nests every point under the swept trial.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

from mlflow_autoresearch import schema as S

if TYPE_CHECKING:
    import optuna
    from mlflow.tracking import MlflowClient
    from optuna.trial import FrozenTrial

logger = logging.getLogger(__name__)

SWEEP_POINT_KIND = "sweep_point"
SWEEP_STUDY = S.PREFIX + "sweep_study"  # on points and on the trial a sweep submits
SWEEP_POINT = S.PREFIX + "sweep_point"  # the Optuna trial number
SWEEP_STATE = S.PREFIX + "sweep_state"  # COMPLETE | PRUNED | FAIL | INTERRUPTED
SWEPT_TRIAL = S.PREFIX + "swept_trial"  # run id of the accepted trial the sweep tunes
RUN_ID_ATTR = "mlflow_run_id"  # Optuna user attribute: the point's MLflow run
OBJECTIVE = "sweep_objective"  # the value Optuna saw (absent when infinite: a failed point)


class MlflowPointLogger:
    """Logs each Optuna trial as an MLflow run nested under ``parent_run_id``.

    Two ways in.  :meth:`start` opens a point's run when it begins (a long
    point shows as RUNNING in the UI) and the objective logs its facts there;
    then, called by Optuna after the trial ends, the instance records the
    final state and value and ends the run.  A trial that has no run yet
    (any other objective) gets one with its params and value.  :meth:`abandon`
    ends the run of a point whose process died.  Safe from several threads.
    """

    def __init__(self, client: MlflowClient, experiment_id: str, parent_run_id: str, *,
                 study_name: str, run_prefix: str = "sweep") -> None:
        self.client = client
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.study_name = study_name
        self.run_prefix = run_prefix

    def start(self, number: int, params: Mapping[str, str], tags: Mapping[str, str] | None = None) -> str:
        """Create the RUNNING nested run of point ``number``; returns its run id."""
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"{self.run_prefix}-p{number:03d}",
            tags={
                S.PARENT_RUN: self.parent_run_id,
                S.KIND: SWEEP_POINT_KIND,
                SWEEP_STUDY: self.study_name,
                SWEEP_POINT: str(number),
                SWEPT_TRIAL: self.parent_run_id,
                **(tags or {}),
            },
        )
        run_id = run.info.run_id
        from mlflow.entities import Param

        self.client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])
        return run_id

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        run_id = trial.user_attrs.get(RUN_ID_ATTR)
        if run_id is None:
            run_id = self.start(trial.number, {k: repr(v) for k, v in trial.params.items()})
        state = trial.state.name
        self.client.set_tag(run_id, SWEEP_STATE, state)
        if state == "COMPLETE" and trial.value is not None and math.isfinite(trial.value):
            self.client.log_metric(run_id, OBJECTIVE, trial.value)
        for step, value in sorted(trial.intermediate_values.items()):
            if math.isfinite(value):
                self.client.log_metric(run_id, "sweep_intermediate", value, step=step)
        self.client.set_terminated(run_id, "FAILED" if state == "FAIL" else "FINISHED")

    def abandon(self, trial: FrozenTrial) -> None:
        """End the run of a point whose process died (status KILLED); it will be evaluated again."""
        run_id = trial.user_attrs.get(RUN_ID_ATTR)
        if run_id is None:
            return
        try:
            self.client.set_tag(run_id, SWEEP_STATE, "INTERRUPTED")
            self.client.set_terminated(run_id, "KILLED")
        except Exception as e:  # the run may be gone; the point is queued again either way
            logger.warning("could not mark the run %s of interrupted point %d: %s", run_id, trial.number, e)
