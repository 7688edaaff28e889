"""One point of a sweep: set the knob values, evaluate through the evaluator, record it, tell Optuna.

Failed points (crashed, timed out, gate missed) return the worst value, so TPE
learns to avoid their region; only a fault of the harness (or Ctrl-C) raises,
leaving the point FAIL in the study to be evaluated again.

Pruning happens after the fact: the evaluator reports a script's ``name:
value`` lines once a seed has ended, so the prune metric's history (of the
first seed) is reported step by step and the point is PRUNED at the first step
where the pruner says so: the decision a live pruner would take, without the
compute it would save.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow_autoresearch import schema as S
from mlflow_autoresearch._errors import UsageError
from mlflow_autoresearch.outcome import Outcome
from mlflow_autoresearch.recipe import Knob, Recipe
from mlflow_autoresearch.sweep._callback import RUN_ID_ATTR, SWEEP_STATE, MlflowPointLogger
from mlflow_autoresearch.sweep._knobs import format_value, set_knobs
from mlflow_autoresearch.sweep._storage import OWNER, owner

if TYPE_CHECKING:
    import optuna

    from mlflow_autoresearch.evaluator import Evaluation

SOURCE = "source"  # user attribute: "parent" on the swept trial's own point
VALUES = "values"  # user attribute: the literals written into the code
OUTCOME = "outcome"
REASON = "reason"
PRUNED_AT = "pruned_at_step"


def finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)


@dataclass(frozen=True)
class SweepPoint:
    """One evaluated point of a study.  Immutable."""

    number: int  # the Optuna trial number
    values: Mapping[str, float]  # knob name -> the value written into the code
    state: str  # COMPLETE | PRUNED | FAIL | RUNNING | WAITING
    value: float | None  # the score, or the worst value for a failed point; None unless COMPLETE
    outcome: str | None  # the evaluator's outcome word
    reason: str = ""
    run_id: str | None = None  # the nested MLflow run

    @property
    def passed(self) -> bool:
        return self.state == "COMPLETE" and self.outcome == Outcome.OK.value and finite(self.value)


def as_point(t: Any) -> SweepPoint:
    """A SweepPoint from an Optuna FrozenTrial."""
    ua = t.user_attrs
    return SweepPoint(number=t.number, values=dict(ua.get(VALUES) or t.params), state=t.state.name,
                      value=t.value if t.state.name == "COMPLETE" else None, outcome=ua.get(OUTCOME),
                      reason=ua.get(REASON, ""), run_id=ua.get(RUN_ID_ATTR))


def distribution(k: Knob) -> Any:
    from optuna.distributions import FloatDistribution, IntDistribution

    if k.integer:
        return IntDistribution(math.ceil(k.low), math.floor(k.high), log=k.log)
    return FloatDistribution(k.low, k.high, log=k.log)


def prune_target(prune_metric: str | None, recipe: Recipe) -> tuple[str, int]:
    """``name[:minimize|maximize]`` -> (name, +1 when it goes the score's way, else -1)."""
    if not prune_metric:
        return recipe.metric.name, 1
    metric, _, goal = prune_metric.partition(":")
    if goal and goal not in ("minimize", "maximize"):
        raise UsageError(f"prune metric {prune_metric!r}: the goal after ':' must be minimize or maximize")
    return metric, (1 if not goal or goal == recipe.metric.goal else -1)


class PointObjective:
    """The Optuna objective of one sweep.  Calls run one after another (one study, one process)."""

    def __init__(self, *, recipe: Recipe, files: Mapping[str, bytes], knobs: list[Knob], logger: MlflowPointLogger,
                 worst: float, prune_metric: str | None = None, seeds: int | None = None,
                 extra_env: dict[str, str] | None = None, say: Callable[[str], None] = lambda m: None) -> None:
        self.recipe, self.files, self.knobs, self.logger = recipe, files, knobs, logger
        self.worst, self.seeds, self.extra_env, self.say = worst, seeds, extra_env, say
        self.prune_name, self.prune_sign = prune_target(prune_metric, recipe)

    def __call__(self, t: optuna.Trial) -> float:
        from mlflow_autoresearch.evaluator import evaluate_code
        from mlflow_autoresearch.lineage import write_snapshot
        from mlflow_autoresearch.trial import make_patch

        literals = {}
        for k in self.knobs:
            d = distribution(k)
            raw = t.suggest_int(k.name, d.low, d.high, log=k.log) if k.integer else \
                t.suggest_float(k.name, k.low, k.high, log=k.log)
            literals[k.name] = format_value(raw, k.integer)
        t.set_user_attr(OWNER, owner())
        t.set_user_attr(VALUES, {n: float(v) for n, v in literals.items()})
        code = set_knobs(self.files, literals, self.knobs)
        client = self.logger.client
        run_id = self.logger.start(t.number, literals, tags={S.RECIPE: self.recipe.name})
        t.set_user_attr(RUN_ID_ATTR, run_id)
        self.say(f"point {t.number}: " + ", ".join(f"{n}={v}" for n, v in literals.items()))
        try:
            with tempfile.TemporaryDirectory(prefix="autoresearch-sweep-") as tmp:
                code_dir = Path(tmp) / "code"
                write_snapshot(code, code_dir)
                ev = evaluate_code(self.recipe, code_dir, seeds=self.seeds, extra_env=self.extra_env,
                                   progress=lambda m: self.say(f"point {t.number}: {m}"),
                                   keep_logs_in=Path(tmp) / "logs")
                log_point(client, run_id, ev, make_patch(self.files, code))
        except BaseException as e:
            # Not the point's fault (harness error, Ctrl-C): FAIL in the study, evaluated again next run.
            client.set_tag(run_id, SWEEP_STATE, "FAIL")
            client.set_terminated(run_id, "KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
            raise
        t.set_user_attr(OUTCOME, ev.outcome.value)
        t.set_user_attr(REASON, ev.reason[:500])
        score = "—" if ev.score is None else f"{ev.score:.5g}"
        self.say(f"point {t.number}: {ev.outcome.value}, {self.recipe.metric.name} {score}")
        if ev.outcome is not Outcome.OK or not finite(ev.score):
            return self.worst
        self._replay_pruner(t, ev)
        return float(ev.score)

    def _replay_pruner(self, t: optuna.Trial, ev: Evaluation) -> None:
        """Report the first seed's curve step by step; PRUNED where a live pruner would have stopped."""
        import optuna

        history = ev.histories.get(self.prune_name) or []
        if len(history) < 2:
            return
        for step, value in enumerate(history):
            if not math.isfinite(value):
                continue
            t.report(self.prune_sign * value, step)
            if t.should_prune():
                t.set_user_attr(PRUNED_AT, step)
                raise optuna.TrialPruned(f"{self.prune_name} = {value:.5g} at step {step} is behind the median "
                                         "of earlier points")


def log_point(client: Any, run_id: str, ev: Evaluation, patch: str) -> None:
    """The evaluator's facts on the point's run: metrics (with curves), outcome, logs, the knob diff."""
    from mlflow.entities import Metric, RunTag

    ts = int(time.time() * 1000)
    metrics = [Metric(k, float(v), ts, 0) for k, v in ev.metrics.items() if math.isfinite(v)]
    for k, values in ev.histories.items():
        if len(values) > 1:
            metrics += [Metric(k, float(v), ts, i) for i, v in enumerate(values) if math.isfinite(v)]
    tags = [RunTag(S.OUTCOME, ev.outcome.value), RunTag(S.REASON, S.clip(ev.reason, 1000)),
            RunTag(S.NEAR_MISS, "true" if ev.near_miss else "false")]
    client.log_batch(run_id, tags=tags)
    for i in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[i : i + 1000])
    client.log_text(run_id, patch, S.PATCH)
    client.log_text(run_id, json.dumps(ev.to_dict(), indent=2), S.FEEDBACK_JSON)
    for path in ev.logs.values():
        if Path(path).exists():
            client.log_artifact(run_id, str(path), S.LOGS_DIR)
