"""The lineage in an MLflow tracking store (local SQLite or a team's server).

Syncs incrementally: after the first full fetch, each :meth:`trials` call asks
only for runs started or ended since the newest timestamp it has seen (with a
slack for clock skew), so a view of 10,000 trials costs two small queries.

Trial numbers are claimed on a *ledger run*: ``log_param`` refuses to change
a param's value, which the database enforces with a primary key, so logging
``n/42 = <run id>`` is an atomic compare-and-set that any number of loops on
any number of machines can race on.  No lock server.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException, RestException
from mlflow.tracking import MlflowClient

from mlflow_autoresearch import schema as S
from mlflow_autoresearch._errors import PermissionDenied, StoreError
from mlflow_autoresearch.lineage._memory import trial_tags
from mlflow_autoresearch.lineage._record import TrialDraft, TrialRecord, record_from_parts
from mlflow_autoresearch.lineage._store import LineageStore, write_snapshot

logger = logging.getLogger(__name__)

SLACK_MS = 120_000  # re-read runs this much older than the newest seen: clock skew, late writers
PAGE = 10_000
_TRIALS = f"tags.`{S.KIND}` = 'trial'"


def _error_code(e: MlflowException) -> str:
    return getattr(e, "error_code", "") or ""


def _translate(e: MlflowException, doing: str) -> StoreError:
    code = _error_code(e)
    if code in ("PERMISSION_DENIED", "UNAUTHENTICATED") or "403" in str(e)[:200] or "401" in str(e)[:200]:
        return PermissionDenied(
            f"the tracking server refused {doing}: {code or 'permission denied'}. Check "
            "MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD and that this user may edit the experiment."
        )
    return StoreError(f"{doing} failed: {e}")


class MlflowStore(LineageStore):
    """Trials as MLflow runs of one experiment.  Thread-safe."""

    def __init__(
        self,
        experiment_name: str,
        tracking_uri: str | None = None,
        *,
        create: bool = True,
        experiment_tags: Mapping[str, str] | None = None,
    ) -> None:
        self.experiment_name = experiment_name
        self.client = MlflowClient(tracking_uri)
        self.tracking_uri = self.client.tracking_uri
        self.experiment_id = self._experiment(create, experiment_tags or {})
        self._lock = threading.Lock()
        self._cache: dict[str, TrialRecord] = {}
        self._watermark: int | None = None
        self._ledger_id: str | None = None
        self._max_number = -1

    # ----- experiment and ledger ----------------------------------------
    def _experiment(self, create: bool, tags: Mapping[str, str]) -> str:
        try:
            exp = self.client.get_experiment_by_name(self.experiment_name)
            if exp is not None:
                if exp.lifecycle_stage == "deleted":
                    raise StoreError(f"experiment {self.experiment_name!r} is deleted; restore it or pick another name")
                return exp.experiment_id
            if not create:
                raise StoreError(f"no experiment named {self.experiment_name!r} at {self.tracking_uri}")
            try:
                exp_id = self.client.create_experiment(self.experiment_name, tags=dict(tags))
            except MlflowException as e:
                if _error_code(e) != "RESOURCE_ALREADY_EXISTS":
                    raise
                return self.client.get_experiment_by_name(self.experiment_name).experiment_id
            # The creator of the experiment creates its ledger: one winner, by the name's uniqueness.
            ledger = self.client.create_run(exp_id, run_name=".autoresearch-ledger", tags={S.KIND: "ledger"})
            self.client.set_terminated(ledger.info.run_id)
            self.client.set_experiment_tag(exp_id, S.LEDGER_TAG, ledger.info.run_id)
            return exp_id
        except MlflowException as e:
            raise _translate(e, f"opening experiment {self.experiment_name!r}") from None

    def _ledger(self) -> str:
        if self._ledger_id:
            return self._ledger_id
        deadline = time.monotonic() + 15
        while True:
            tag = self.client.get_experiment(self.experiment_id).tags.get(S.LEDGER_TAG)
            if tag:
                self._ledger_id = tag
                return tag
            if time.monotonic() > deadline:
                break
            time.sleep(0.5)  # the experiment's creator is about to set it
        # An experiment made by hand: create a ledger; if two loops race here, the tag's last value wins.
        ledger = self.client.create_run(self.experiment_id, run_name=".autoresearch-ledger", tags={S.KIND: "ledger"})
        self.client.set_terminated(ledger.info.run_id)
        self.client.set_experiment_tag(self.experiment_id, S.LEDGER_TAG, ledger.info.run_id)
        time.sleep(1.0)
        self._ledger_id = self.client.get_experiment(self.experiment_id).tags[S.LEDGER_TAG]
        return self._ledger_id

    def claim(self, key: str, owner: str) -> bool:
        try:
            self.client.log_param(self._ledger(), key, owner)
            return True
        except MlflowException as e:
            if _error_code(e) == "INVALID_PARAMETER_VALUE" or "Changing param values is not allowed" in str(e):
                return False
            raise _translate(e, f"claiming {key!r}") from None

    def _claim_number(self, run_id: str) -> int:
        with self._lock:
            n = self._max_number + 1
        while not self.claim(f"n/{n}", run_id):
            n += 1
        with self._lock:
            self._max_number = max(self._max_number, n)
        return n

    # ----- writes ---------------------------------------------------------
    def create_trial(self, draft: TrialDraft) -> TrialRecord:
        try:
            if self._max_number < 0:
                self.trials()  # learn the highest number so claims start near it
            run = self.client.create_run(self.experiment_id, run_name="t----", tags={S.WORKER: draft.worker})
            run_id = run.info.run_id
            number = self._claim_number(run_id)
            tags = trial_tags(draft, number)
            name = S.run_name(number, draft.specialist, draft.hypothesis)
            self.client.update_run(run_id, name=name)
            with tempfile.TemporaryDirectory() as tmp:
                write_snapshot(draft.files, Path(tmp))
                self.client.log_artifacts(run_id, tmp, S.CODE_DIR)
            self.client.log_text(run_id, draft.patch, S.PATCH)
            for path, text in draft.artifacts.items():
                self.client.log_text(run_id, text, path)
            self._log_batch(run_id, tags, dict(draft.metrics))
            # kind=trial last: until then the run is invisible to the lineage.
            self.client.set_tag(run_id, S.KIND, "trial")
            return self.get(run_id)
        except MlflowException as e:
            raise _translate(e, "creating a trial run") from None

    def _log_batch(self, run_id: str, tags: Mapping[str, str], metrics: Mapping[str, float],
                   steps: Mapping[str, list[float]] | None = None) -> None:
        ts = int(time.time() * 1000)
        tag_list = [RunTag(k, S.clip(str(v))) for k, v in tags.items()]
        metric_list = [Metric(k, float(v), ts, 0) for k, v in metrics.items()]
        for k, values in (steps or {}).items():
            metric_list += [Metric(k, float(v), ts, i) for i, v in enumerate(values)]
        for i in range(0, max(len(tag_list), 1), 100):
            chunk = tag_list[i : i + 100]
            if chunk:
                self.client.log_batch(run_id, tags=chunk)
        for i in range(0, len(metric_list), 1000):
            self.client.log_batch(run_id, metrics=metric_list[i : i + 1000])

    def record_result(self, run_id, *, tags, metrics, artifacts, files=None, status="FINISHED", step_metrics=None):
        try:
            self._log_batch(run_id, tags, metrics, step_metrics)
            for path, text in artifacts.items():
                self.client.log_text(run_id, text, path)
            for path, local in (files or {}).items():
                self.client.log_artifact(run_id, str(local), str(Path(path).parent) if "/" in path else None)
            if tags.get(S.NOTE):
                self.client.set_tag(run_id, S.NOTE, S.clip(tags[S.NOTE]))
            self.client.set_terminated(run_id, status)
            return self.get(run_id)
        except MlflowException as e:
            raise _translate(e, f"recording the result of {run_id}") from None

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        try:
            self._log_batch(run_id, tags, {})
        except MlflowException as e:
            raise _translate(e, f"tagging {run_id}") from None

    def log_params(self, run_id: str, params: Mapping[str, str]) -> None:
        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i : i + 100])

    # ----- reads ----------------------------------------------------------
    def _search(self, filter_string: str) -> list:
        runs, token = [], None
        while True:
            page = self.client.search_runs([self.experiment_id], filter_string, max_results=PAGE, page_token=token)
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def sync(self) -> int:
        """Fetch what changed since the last sync; returns how many runs came back."""
        try:
            if self._watermark is None:
                runs = self._search(_TRIALS)
            else:
                since = self._watermark - SLACK_MS
                runs = self._search(f"{_TRIALS} AND attributes.start_time >= {since}")
                runs += self._search(f"{_TRIALS} AND attributes.end_time >= {since}")
        except MlflowException as e:
            raise _translate(e, "reading the lineage") from None
        with self._lock:
            mark = self._watermark or 0
            for run in runs:
                rec = self._to_record(run)
                self._cache[rec.run_id] = rec
                self._max_number = max(self._max_number, rec.number)
                mark = max(mark, run.info.start_time or 0, run.info.end_time or 0)
            self._watermark = mark
        return len(runs)

    def trials(self) -> list[TrialRecord]:
        self.sync()
        with self._lock:
            return sorted(self._cache.values(), key=lambda t: (t.number, t.start_time))

    def get(self, run_id: str) -> TrialRecord:
        try:
            run = self.client.get_run(run_id)
        except MlflowException as e:
            if _error_code(e) == "RESOURCE_DOES_NOT_EXIST":
                raise StoreError(f"no run {run_id!r} at {self.tracking_uri}") from None
            raise _translate(e, f"reading run {run_id}") from None
        rec = self._to_record(run)
        if rec.tags.get(S.KIND) == "trial":
            with self._lock:
                self._cache[run_id] = rec
        return rec

    def code(self, run_id: str) -> dict[str, bytes]:
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(self._download(run_id, S.CODE_DIR, tmp))
            return {p.relative_to(local).as_posix(): p.read_bytes() for p in local.rglob("*") if p.is_file()}

    def read_artifact(self, run_id: str, path: str) -> str | None:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                local = self._download(run_id, path, tmp)
            except StoreError:
                return None
            p = Path(local)
            return p.read_text(errors="replace") if p.is_file() else None

    def _download(self, run_id: str, path: str, dst: str) -> str:
        try:
            return self.client.download_artifacts(run_id, path, dst)
        except (MlflowException, OSError) as e:
            if isinstance(e, RestException) and _error_code(e) in ("PERMISSION_DENIED", "UNAUTHENTICATED"):
                raise _translate(e, f"downloading {path}") from None
            raise StoreError(f"run {run_id} has no artifact {path!r}: {e}") from None

    @staticmethod
    def _to_record(run) -> TrialRecord:
        info = run.info
        return record_from_parts(
            info.run_id, info.run_name or "", info.status, info.start_time or 0, info.end_time,
            run.data.tags, run.data.metrics,
        )
