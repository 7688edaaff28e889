"""The lineage: every trial of one experiment, and the views agents read."""

from mlflow_autoresearch.lineage._memory import InMemoryStore
from mlflow_autoresearch.lineage._mlflow import MlflowStore
from mlflow_autoresearch.lineage._record import Snapshot, TrialDraft, TrialRecord, code_digest
from mlflow_autoresearch.lineage._resolve import ResolvedTrial, match_trial, parse_ref, resolve_trial
from mlflow_autoresearch.lineage._store import LineageStore, read_snapshot, write_snapshot
from mlflow_autoresearch.lineage._views import Lineage, query_trial

__all__ = [
    "InMemoryStore",
    "Lineage",
    "LineageStore",
    "MlflowStore",
    "ResolvedTrial",
    "Snapshot",
    "TrialDraft",
    "TrialRecord",
    "code_digest",
    "query_trial",
    "match_trial",
    "parse_ref",
    "read_snapshot",
    "resolve_trial",
    "write_snapshot",
]
