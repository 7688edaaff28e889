"""The propose-measure-revise loop."""

from mlflow_autoresearch.loop._decision import decide_trial, evaluate_and_decide, measure_in_process
from mlflow_autoresearch.loop._loop import Loop, LoopResult, read_steering, run_loop
from mlflow_autoresearch.loop._policy import Choice, Policy

__all__ = ["Choice", "Loop", "LoopResult", "Policy", "decide_trial", "evaluate_and_decide", "measure_in_process",
           "read_steering", "run_loop"]
