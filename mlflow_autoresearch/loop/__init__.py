"""The propose-measure-revise loop."""

from mlflow_autoresearch.loop._loop import Loop, LoopResult, read_steering, run_loop
from mlflow_autoresearch.loop._policy import Choice, Policy

__all__ = ["Choice", "Loop", "LoopResult", "Policy", "read_steering", "run_loop"]
