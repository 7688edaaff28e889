"""An in-memory lineage store: tests, benchmarks, and a reference for the MLflow one."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path

from mlflow_autoresearch import schema as S
from mlflow_autoresearch._errors import StoreError
from mlflow_autoresearch.lineage._record import TrialDraft, TrialRecord, record_from_parts
from mlflow_autoresearch.lineage._store import (
    FACT_TAGS,
    LineageStore,
    check_decision,
    measurement_name,
    measurement_tags,
    refuse_finished,
)
from mlflow_autoresearch.lineage._tags import split_long_tags, trial_tags

__all__ = ["InMemoryStore", "trial_tags"]


class _Run:
    __slots__ = ("run_id", "name", "status", "start", "end", "tags", "metrics", "artifacts")

    def __init__(self, run_id: str, name: str) -> None:
        self.run_id, self.name, self.status = run_id, name, "RUNNING"
        self.start, self.end = int(time.time() * 1000), None
        self.tags: dict[str, str] = {}
        self.metrics: dict[str, float] = {}
        self.artifacts: dict[str, bytes] = {}


class InMemoryStore(LineageStore):
    """Holds everything in dicts under one lock.  Shared by threads, not processes."""

    def __init__(self, experiment_name: str = "memory") -> None:
        self.experiment_name = experiment_name
        self._lock = threading.Lock()
        self._runs: dict[str, _Run] = {}
        self._claims: dict[str, str] = {}
        self._next = 0

    def create_trial(self, draft: TrialDraft) -> TrialRecord:
        with self._lock:
            number = self._next
            self._next += 1
            run = _Run(uuid.uuid4().hex, S.run_name(number, draft.specialist, draft.hypothesis))
            self._put_tags(run, trial_tags(draft, number))
            run.metrics.update(draft.metrics)
            for rel, data in draft.files.items():
                run.artifacts[f"{S.CODE_DIR}/{rel}"] = bytes(data)
            run.artifacts[S.PATCH] = draft.patch.encode()
            for path, text in draft.artifacts.items():
                run.artifacts[path] = text.encode()
            self._runs[run.run_id] = run
            return self._record(run)

    def record_result(self, run_id, *, tags, metrics, artifacts, files=None, status="FINISHED", step_metrics=None):
        with self._lock:
            run = self._run(run_id)
            if run.status != "RUNNING":
                refuse_finished(run.name, run_id, run.status)
            self._put_tags(run, tags)
            run.metrics.update(metrics)
            for key, values in (step_metrics or {}).items():  # as MLflow: a run shows a series' last value
                if values:
                    run.metrics[key] = float(values[-1])
            for path, text in artifacts.items():
                run.artifacts[path] = text.encode()
            for path, local in (files or {}).items():
                run.artifacts[path] = Path(local).read_bytes()
            run.status, run.end = status, int(time.time() * 1000)
            return self._record(run)

    def record_decision(self, run_id, tags, artifacts, metrics=None):
        with self._lock:
            run = self._run(run_id)
            check_decision(self._record(run), tags)
            self._put_tags(run, tags)
            run.metrics.update(metrics or {})
            for path, text in artifacts.items():
                run.artifacts[path] = text.encode()
            run.end = int(time.time() * 1000)
            return self._record(run)

    def create_measurement(self, of, parent, *, seed, role):
        with self._lock:
            run = _Run(uuid.uuid4().hex, measurement_name(of, parent, seed, role))
            run.tags.update(measurement_tags(of, parent, seed, role))
            self._runs[run.run_id] = run
            return run.run_id

    def record_measurement(self, run_id, *, tags, metrics, files=None, status="FINISHED"):
        with self._lock:
            run = self._run(run_id)
            if run.status != "RUNNING":
                refuse_finished(run.name, run_id, run.status)
            self._put_tags(run, tags)
            run.metrics.update(metrics)
            for path, local in (files or {}).items():
                run.artifacts[path] = Path(local).read_bytes()
            run.status, run.end = status, int(time.time() * 1000)

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        with self._lock:
            run = self._run(run_id)
            if run.status != "RUNNING" and FACT_TAGS.intersection(tags):
                refuse_finished(run.name, run_id, run.status)
            self._put_tags(run, tags)

    def trials(self) -> list[TrialRecord]:
        with self._lock:
            return sorted((self._record(r) for r in self._runs.values() if r.tags.get(S.KIND) == "trial"),
                          key=lambda t: t.number)

    def get(self, run_id: str) -> TrialRecord:
        with self._lock:
            return self._record(self._run(run_id))

    def code(self, run_id: str) -> dict[str, bytes]:
        prefix = S.CODE_DIR + "/"
        with self._lock:
            arts = self._run(run_id).artifacts
            return {k[len(prefix):]: v for k, v in arts.items() if k.startswith(prefix)}

    def read_artifact(self, run_id: str, path: str) -> str | None:
        with self._lock:
            data = self._run(run_id).artifacts.get(path)
        return None if data is None else data.decode(errors="replace")

    def claim(self, key: str, owner: str) -> bool:
        with self._lock:
            return self._claims.setdefault(key, owner) == owner

    @staticmethod
    def _put_tags(run: _Run, tags: Mapping[str, str]) -> None:
        short, full = split_long_tags(tags)
        run.tags.update(short)
        for path, text in full.items():
            run.artifacts[path] = text.encode()

    def _run(self, run_id: str) -> _Run:
        try:
            return self._runs[run_id]
        except KeyError:
            raise StoreError(f"no trial with run id {run_id!r} in {self.experiment_name!r}") from None

    @staticmethod
    def _record(run: _Run) -> TrialRecord:
        return record_from_parts(run.run_id, run.name, run.status, run.start, run.end, run.tags, run.metrics)
