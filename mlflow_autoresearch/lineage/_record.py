"""Immutable records of trials, as every part of the plugin reads them."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from mlflow_autoresearch.outcome import Outcome

Snapshot = Mapping[str, bytes]  # relative path -> file content


def code_digest(files: Snapshot) -> str:
    """sha256 over the sorted (path, content) pairs: equal code, equal digest."""
    h = hashlib.sha256()
    for rel in sorted(files):
        data = files[rel]
        h.update(rel.encode() + b"\0" + len(data).to_bytes(8, "big") + data)
    return h.hexdigest()


@dataclass(frozen=True)
class TrialDraft:
    """What the loop knows about a trial before it is evaluated."""

    files: Snapshot
    specialist: str
    hypothesis: str
    parent_id: str | None = None
    expected_effect: str = ""
    backend: str = "offline"
    worker: str = "default"
    patch: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)
    artifacts: Mapping[str, str] = field(default_factory=dict)  # path -> text (proposal, transcript)
    metrics: Mapping[str, float] = field(default_factory=dict)  # e.g. llm_cost_usd


@dataclass(frozen=True)
class TrialRecord:
    """A trial as the lineage sees it.  Finished trials never change."""

    run_id: str
    number: int
    name: str
    specialist: str
    hypothesis: str
    parent_id: str | None
    status: str  # RUNNING | FINISHED | FAILED | KILLED
    start_time: int  # ms since epoch
    end_time: int | None = None
    outcome: Outcome | None = None
    decision: str | None = None
    reason: str = ""
    feedback: str = ""
    score: float | None = None
    near_miss: bool = False
    worker: str = "default"
    backend: str = "offline"
    code_sha256: str = ""
    metrics: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    tags: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def finished(self) -> bool:
        return self.outcome is not None and self.decision is not None

    @property
    def kept(self) -> bool:
        """Kept (or the baseline), passed its gates, and not demoted since."""
        return self.decision in ("keep", "baseline") and self.outcome is Outcome.OK and not self.demoted

    @property
    def measured(self) -> bool:
        """The evaluator has recorded the facts; the decision may still be pending."""
        return self.outcome is not None

    @property
    def demoted(self) -> str:
        """Why a kept trial lost its place under re-measurement ('' when it did not)."""
        from mlflow_autoresearch import schema as S

        return self.tags.get(S.DEMOTED, "")

    @property
    def evidence(self) -> dict:
        """What the keep decision rests on (``{}`` before the decision or for old trials)."""
        import json

        from mlflow_autoresearch import schema as S

        raw = self.tags.get(S.EVIDENCE)
        if not raw:
            return {}
        try:
            value = json.loads(raw)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}

    def seed_values(self, name: str | None = None) -> list[float]:
        """The per-seed values of the score (or of metric ``name``) from the trial's own evaluation."""
        from mlflow_autoresearch import schema as S

        name = name or self.tags.get(S.SCORE_NAME, "")
        out, i = [], 0
        while f"{name}.seed{i}" in self.metrics:
            out.append(float(self.metrics[f"{name}.seed{i}"]))
            i += 1
        if not out and self.score is not None and name == self.tags.get(S.SCORE_NAME):
            out = [float(self.score)]
        return out

    @property
    def short(self) -> str:
        return f"t{self.number:04d}"


def record_from_parts(
    run_id: str,
    name: str,
    status: str,
    start_time: int,
    end_time: int | None,
    tags: Mapping[str, str],
    metrics: Mapping[str, float],
) -> TrialRecord:
    """Build a record from a run's tags and metrics (the MLflow schema)."""
    from mlflow_autoresearch import schema as S

    outcome = tags.get(S.OUTCOME)
    score_name = tags.get(S.SCORE_NAME)
    try:
        number = int(tags.get(S.TRIAL, "-1"))
    except ValueError:
        number = -1
    return TrialRecord(
        run_id=run_id,
        number=number,
        name=name,
        specialist=tags.get(S.SPECIALIST, ""),
        hypothesis=tags.get(S.HYPOTHESIS, ""),
        parent_id=tags.get(S.PARENT) or None,
        status=status,
        start_time=start_time,
        end_time=end_time,
        outcome=Outcome(outcome) if outcome in Outcome._value2member_map_ else None,
        decision=tags.get(S.DECISION),
        reason=tags.get(S.REASON, ""),
        feedback=tags.get(S.FEEDBACK, ""),
        score=metrics.get(score_name) if score_name else None,
        near_miss=tags.get(S.NEAR_MISS) == "true",
        worker=tags.get(S.WORKER, "default"),
        backend=tags.get(S.BACKEND, ""),
        code_sha256=tags.get(S.CODE_SHA, ""),
        metrics=MappingProxyType(dict(metrics)),
        tags=MappingProxyType(dict(tags)),
    )
