"""The evaluator: runs one trial under hard limits and reports facts."""

from mlflow_autoresearch.evaluator._core import Evaluation, GateResult, check_code, evaluate_code
from mlflow_autoresearch.evaluator._sandbox import (
    ProcessLimits,
    ProcessResult,
    Workspace,
    check_trial_interpreter,
    sandbox_level,
)

__all__ = [
    "Evaluation",
    "GateResult",
    "ProcessLimits",
    "ProcessResult",
    "Workspace",
    "check_trial_interpreter",
    "check_code",
    "evaluate_code",
    "sandbox_level",
]
