"""Sweeps: Optuna studies over the numeric knobs of an accepted trial.

Importing this package is cheap: Optuna and MLflow are imported when a sweep runs.
"""

from mlflow_autoresearch.sweep._callback import (
    SWEEP_POINT,
    SWEEP_POINT_KIND,
    SWEEP_STATE,
    SWEEP_STUDY,
    SWEPT_TRIAL,
    MlflowPointLogger,
)
from mlflow_autoresearch.sweep._cli import parse_knob, sweep_command
from mlflow_autoresearch.sweep._knobs import check_knobs, current_values, format_value, set_knobs
from mlflow_autoresearch.sweep._point import SweepPoint
from mlflow_autoresearch.sweep._storage import STORAGE_ENV, default_storage, resolve_storage
from mlflow_autoresearch.sweep._sweep import SweepResult, default_study_name, run_sweep

__all__ = [
    "STORAGE_ENV",
    "SWEEP_POINT",
    "SWEEP_POINT_KIND",
    "SWEEP_STATE",
    "SWEEP_STUDY",
    "SWEPT_TRIAL",
    "MlflowPointLogger",
    "SweepPoint",
    "SweepResult",
    "check_knobs",
    "current_values",
    "default_storage",
    "default_study_name",
    "format_value",
    "parse_knob",
    "resolve_storage",
    "run_sweep",
    "set_knobs",
    "sweep_command",
]
