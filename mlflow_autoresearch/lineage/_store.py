"""The narrow storage interface of the lineage, shared by both implementations."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from pathlib import Path

from mlflow_autoresearch import schema as S
from mlflow_autoresearch._errors import StoreError
from mlflow_autoresearch.lineage._record import Snapshot, TrialDraft, TrialRecord

# The facts of a finished trial: once it has ended, no store changes these.
FACT_TAGS = frozenset({S.TRIAL, S.OUTCOME, S.DECISION, S.FEEDBACK, S.NEAR_MISS, S.CODE_SHA, S.PARENT, S.SCORE_NAME})


class LineageStore(abc.ABC):
    """All trials of one experiment.

    Implementations are safe to use from several threads, and several stores
    (processes, machines) may share one experiment: trial numbers are claimed
    atomically, and :meth:`trials` sees every store's trials after a sync.

    A finished trial is immutable: :meth:`record_result` on it, or
    :meth:`set_tags` touching one of :data:`FACT_TAGS`, raises StoreError.
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
