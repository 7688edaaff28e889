"""The narrow storage interface of the lineage, shared by both implementations."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from pathlib import Path

from mlflow_autoresearch import schema as S
from mlflow_autoresearch._errors import StoreError
from mlflow_autoresearch.lineage._record import Snapshot, TrialDraft, TrialRecord

# The facts of a finished trial: once it has ended, no store changes these.
FACT_TAGS = frozenset({S.TRIAL, S.OUTCOME, S.DECISION, S.FEEDBACK, S.NEAR_MISS, S.CODE_SHA, S.PARENT, S.SCORE_NAME,
                       S.FACTS, S.EVIDENCE})


class LineageStore(abc.ABC):
    """All trials of one experiment.

    Implementations are safe to use from several threads, and several stores
    (processes, machines) may share one experiment: trial numbers are claimed
    atomically, and :meth:`trials` sees every store's trials after a sync.

    A finished trial is immutable: :meth:`record_result` on it, or
    :meth:`set_tags` touching one of :data:`FACT_TAGS`, raises StoreError.
    The one exception is the keep decision, which the policy writes once,
    after the evaluator has recorded the facts and ended the run
    (:meth:`record_decision`).
    Re-scoring records a new trial.  Tag values too long for a tag are
    clipped with a marker and kept whole as the artifact ``tags/<key>.txt``.
    """

    experiment_name: str

    @abc.abstractmethod
    def create_trial(self, draft: TrialDraft) -> TrialRecord:
        """Record a new RUNNING trial with its code and patch; claims a unique number."""

    @abc.abstractmethod
    def record_result(
        self,
        run_id: str,
        *,
        tags: Mapping[str, str],
        metrics: Mapping[str, float],
        artifacts: Mapping[str, str],
        files: Mapping[str, Path] | None = None,
        status: str = "FINISHED",
        step_metrics: Mapping[str, list[float]] | None = None,
    ) -> TrialRecord:
        """Write the evaluation's facts and the decision, then end the run.

        ``artifacts`` maps artifact paths to text, ``files`` to local files
        (logs).  Everything is written before the run ends, so a reader that
        sees it finished sees all of it.
        """

    @abc.abstractmethod
    def record_decision(self, run_id: str, tags: Mapping[str, str], artifacts: Mapping[str, str],
                        metrics: Mapping[str, float] | None = None) -> TrialRecord:
        """Write the decision tags (:data:`~mlflow_autoresearch.schema.DECISION_TAGS`) of a measured trial, once.

        ``metrics``: what the decision cost (``confirm_seconds``, ``confirm_runs``).

        Raises StoreError when the trial has no outcome yet or already has a
        decision.  Readers that sync incrementally see the change (the run's
        end time moves to now).
        """

    @abc.abstractmethod
    def create_measurement(self, of: TrialRecord, parent: TrialRecord, *, seed: int, role: str) -> str:
        """A RUNNING confirmation run nested under ``parent`` that measures the code of ``of``; its run id."""

    @abc.abstractmethod
    def record_measurement(self, run_id: str, *, tags: Mapping[str, str], metrics: Mapping[str, float],
                           files: Mapping[str, Path] | None = None, status: str = "FINISHED") -> None:
        """The facts of a confirmation run; ends it."""

    @abc.abstractmethod
    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        """Update tags of a trial (lease renewals, takeovers)."""

    @abc.abstractmethod
    def trials(self) -> list[TrialRecord]:
        """Every trial, ordered by number, after syncing what changed since the last call."""

    @abc.abstractmethod
    def get(self, run_id: str) -> TrialRecord:
        """One trial, fresh from the store.  Raises StoreError when unknown."""

    @abc.abstractmethod
    def code(self, run_id: str) -> dict[str, bytes]:
        """The trial's ``code/`` snapshot."""

    @abc.abstractmethod
    def read_artifact(self, run_id: str, path: str) -> str | None:
        """A text artifact of the trial, or None when it has none at that path."""

    @abc.abstractmethod
    def claim(self, key: str, owner: str) -> bool:
        """Atomically claim ``key`` for ``owner``; True when this owner holds it.

        Claiming a key already held by the same owner returns True again.
        """

    def check_write_access(self) -> None:
        """Raise PermissionDenied, naming the user and the fix, unless this store may write trials.

        Call it before starting any trial.  Stores without permissions always pass.
        """
        return None

    def download_code(self, run_id: str, dest: Path) -> Path:
        write_snapshot(self.code(run_id), dest)
        return dest


def check_decision(rec: TrialRecord, tags: Mapping[str, str]) -> None:
    """Refuse a decision for a trial that has none to receive (see :meth:`LineageStore.record_decision`)."""
    unknown = set(tags) - set(S.DECISION_TAGS)
    if unknown:
        raise StoreError(f"record_decision writes only decision tags, not {sorted(unknown)}")
    if rec.outcome is None:
        raise StoreError(f"trial {rec.name or rec.run_id} has no outcome yet: the evaluator records facts first")
    if rec.decision is not None:
        raise StoreError(f"trial {rec.name or rec.run_id} already has the decision {rec.decision!r}; a decision is "
                         "written once")


def measurement_tags(of: TrialRecord, parent: TrialRecord, seed: int, role: str) -> dict[str, str]:
    tags = {S.KIND: "confirm", S.PARENT_RUN: parent.run_id, S.MEASURES: of.run_id, S.SEED: str(seed),
            S.CONFIRM_ROLE: role, S.CODE_SHA: of.code_sha256, S.SCORE_NAME: of.tags.get(S.SCORE_NAME, "")}
    for key in (S.RECIPE_DIR, S.PROFILE):  # where the evaluate entry point finds the recipe
        if parent.tags.get(key):
            tags[key] = parent.tags[key]
    return tags


def measurement_name(of: TrialRecord, parent: TrialRecord, seed: int, role: str) -> str:
    return f"{parent.short}-confirm-{role}-{of.short}-seed{seed}"


def refuse_finished(name: str, run_id: str, status: str) -> None:
    raise StoreError(f"trial {name or run_id} ({run_id}) already ended ({status}); a finished trial is "
                     "immutable: record a new trial to re-score its code")


def write_snapshot(files: Snapshot, dest: Path) -> None:
    for rel, data in files.items():
        p = dest / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


def read_snapshot(root: Path, rels: list[str] | None = None) -> dict[str, bytes]:
    if rels is None:
        rels = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    return {rel: (root / rel).read_bytes() for rel in rels}
