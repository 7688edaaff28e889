"""The lineage in an MLflow tracking store (local SQLite or a team's server).

Syncs incrementally: after the first full fetch, each :meth:`MlflowStore.trials`
call asks only for the trials still RUNNING and those that ended since the
newest timestamp it has seen (less a slack for clock skew and late writers),
so a view of 10,000 trials costs two small queries.  A new trial is RUNNING
when it becomes visible, so the first query finds it; once it ends, the
second does.

Trial numbers are claimed on a *ledger run*: ``log_param`` refuses to change
a param's value, which the database enforces with a primary key, so logging
``n/42 = <run id>`` is an atomic compare-and-set that any number of loops on
any number of machines can race on.  No lock server.

Faults: every request goes through MLflow's HTTP client, which retries
connection errors and 408/429/5xx answers with exponential backoff
(``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, default 7, and
``MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR``, default 2: about four minutes in
all), so a restarted server costs waiting, not an error; :mod:`._retry` adds a few
retries for what MLflow does not retry (an answer broken off midway).  Every write here is
idempotent under such a retry (tags, artifacts, a param logged again with the
same value) except ``create_run``: a retried create can leave a second run.
Each new run therefore carries a random draft token; after creating it the
store deletes any other run with the same token.  A placeholder run only
becomes a trial (tag ``autoresearch.kind = trial``) after its number is
claimed, so a duplicate can never appear in the lineage.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException, RestException
from mlflow.tracking import MlflowClient

from mlflow_autoresearch import schema as S
from mlflow_autoresearch._errors import PermissionDenied, StoreError
from mlflow_autoresearch.lineage._record import TrialDraft, TrialRecord, record_from_parts
from mlflow_autoresearch.lineage._retry import RetryingClient, is_transient
from mlflow_autoresearch.lineage._store import (
    FACT_TAGS,
    LineageStore,
    check_decision,
    measurement_name,
    measurement_tags,
    refuse_finished,
    write_snapshot,
)
from mlflow_autoresearch.lineage._tags import split_long_tags, trial_tags

logger = logging.getLogger(__name__)

SLACK_MS = 120_000  # re-read runs that ended this much before the newest seen: clock skew, late writers
PAGE = 10_000
DRAFT = S.PREFIX + "draft"  # random token on a new run: finds the duplicate a retried create_run may leave
WRITE_CHECK = S.PREFIX + "write_check"  # ledger tag written by check_write_access
RUN_NAME_TAG = "mlflow.runName"  # setting it renames the run
# MLflow's UI opens an experiment in its GenAI view unless this tag says it is model training
# (the UI's own values: genai_development, custom_model_development, ...).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
_TRIALS = f"tags.`{S.KIND}` = 'trial'"


class _NoArtifact(StoreError):
    """The run has no artifact at that path (as opposed to: the server did not answer)."""


# A local SQLite store is one SQLAlchemy pool per process (5 connections + 10 overflow), and one MLflow
# call may hold two connections (create_run reads the experiment in a nested session): 15 or more
# threads creating runs at once wait on each other until the pool times out (30 s).  The loop has
# slots + proposals_ahead threads writing, so calls to one SQLite file are bounded here; SQLite
# serializes writers anyway.
SQLITE_CALLS_AT_ONCE = 6
_GATES: dict[str, threading.BoundedSemaphore] = {}
_GATES_LOCK = threading.Lock()


def _sqlite_gate(uri: str) -> threading.BoundedSemaphore | None:
    if not uri.startswith("sqlite:"):
        return None
    with _GATES_LOCK:
        return _GATES.setdefault(uri, threading.BoundedSemaphore(SQLITE_CALLS_AT_ONCE))


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI (None for a server, or an in-memory database)."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix) or ":memory:" in uri:
        return None
    return Path(uri[len(prefix):].split("?", 1)[0])


@contextlib.contextmanager
def _schema_lock(db: Path):
    """Hold an exclusive ``flock`` on ``<db>.lock`` (beside the database) while MLflow opens it.

    Opening a new SQLite store runs MLflow's schema migrations, which are not safe to run twice at
    once: a second process starting on the same new file then dies in alembic
    (``duplicate column name: step``).  Processes that open the store here take turns; the
    second finds the tables made and only checks them.  No lock (a warning) when the folder
    cannot hold the lock file: a read-only store needs no migration.
    """
    try:
        fh = open(f"{db}.lock", "a")  # noqa: SIM115 -- held for the block
    except OSError as e:
        logger.debug("no schema lock for %s: %s", db, e)
        yield
        return
    with fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def open_client(tracking_uri: str | None = None) -> MlflowClient:
    """An ``MlflowClient`` of ``tracking_uri``; a local SQLite store is created (migrated) under a file lock.

    Safe for several processes creating the same new store at once.  The store is created once
    per process (MLflow caches it by URI), so later calls cost no lock wait worth noting.
    """
    import mlflow

    uri = tracking_uri or mlflow.get_tracking_uri()
    db = sqlite_path(uri)
    if db is None or not db.parent.is_dir():
        return MlflowClient(uri)
    with _schema_lock(db):
        return MlflowClient(uri)


def _error_code(e: MlflowException) -> str:
    return getattr(e, "error_code", "") or ""


def _user() -> str | None:
    from mlflow.utils.credentials import read_mlflow_creds

    return read_mlflow_creds().username or None


def _denied(e: MlflowException) -> bool:
    head = str(e)[:200]
    return _error_code(e) in ("PERMISSION_DENIED", "UNAUTHENTICATED") or " 403 " in head or " 401 " in head


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
        client = open_client(tracking_uri)
        self.client = RetryingClient(client, gate=_sqlite_gate(client.tracking_uri))
        self.tracking_uri = self.client.tracking_uri
        self.experiment_id = self._experiment(create, experiment_tags or {})
        self._lock = threading.Lock()
        self._cache: dict[str, TrialRecord] = {}
        self._watermark: int | None = None
        self._ledger_id: str | None = None
        self._max_number = -1
        self.last_sync_rows = 0  # runs the last sync fetched (benchmarks, diagnostics)

    def _translate(self, e: MlflowException, doing: str) -> StoreError:
        if not _denied(e):
            return StoreError(f"{doing} failed: {e}")
        user = _user()
        who = f"user {user!r}" if user else "an anonymous client (MLFLOW_TRACKING_USERNAME is not set)"
        if _error_code(e) == "UNAUTHENTICATED" or " 401 " in str(e)[:200]:
            fix = ("Set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to a valid user of "
                   f"{self.tracking_uri}.")
        else:
            fix = (f"Ask an admin to grant EDIT on experiment {self.experiment_name!r} to {user or 'your user'} "
                   "(MLflow UI, or mlflow.server.get_app_client('basic-auth', tracking_uri=...)"
                   ".grant_user_permission(...)), or set MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD "
                   "to a user who may write there.")
        return PermissionDenied(f"the tracking server at {self.tracking_uri} refused {doing} by {who} "
                                f"({_error_code(e) or 'permission denied'}). {fix}")

    # ----- experiment and ledger ----------------------------------------
    def _experiment(self, create: bool, tags: Mapping[str, str]) -> str:
        try:
            exp = self.client.get_experiment_by_name(self.experiment_name)
            if exp is not None:
                if exp.lifecycle_stage == "deleted":
                    raise StoreError(f"experiment {self.experiment_name!r} is deleted; restore it or pick another name")
                if create and EXPERIMENT_KIND_TAG not in exp.tags:  # made before this tag was set
                    self._mark_kind(exp.experiment_id)
                return exp.experiment_id
            if not create:
                raise StoreError(f"no experiment named {self.experiment_name!r} at {self.tracking_uri}")
            try:
                exp_id = self.client.create_experiment(self.experiment_name,
                                                       tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND, **tags})
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
            raise self._translate(e, f"opening experiment {self.experiment_name!r}") from None

    def _mark_kind(self, experiment_id: str) -> None:
        try:
            self.client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        except MlflowException as e:  # e.g. read-only access: the UI then only opens another view
            logger.debug("could not tag experiment %s as model training: %s", experiment_id, e)

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

    def check_write_access(self) -> None:
        """Write a tag on the experiment's ledger run: the permission that creating and numbering trials needs.

        Raises PermissionDenied naming the user and the fix.  One or two requests.
        """
        try:
            ledger = self._ledger()
            self.client.set_tag(ledger, WRITE_CHECK, f"{_user() or 'anonymous'} {time.strftime('%Y-%m-%dT%H:%M:%S')}")
        except MlflowException as e:
            raise self._translate(e, f"writing to experiment {self.experiment_name!r}") from None

    def claim(self, key: str, owner: str) -> bool:
        try:
            self.client.log_param(self._ledger(), key, owner)
            return True
        except MlflowException as e:
            if "Changing param values is not allowed" in str(e) or "already logged" in str(e):
                return False  # held by another owner; any other error (a bad key, a fault) raises
            raise self._translate(e, f"claiming {key!r}") from None

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
            token = uuid.uuid4().hex
            run = self.client.create_run(self.experiment_id, run_name="t----",
                                         tags={S.WORKER: draft.worker, DRAFT: token})
            run_id = run.info.run_id
            self._drop_duplicates(token, run_id, run.info.start_time)
            with tempfile.TemporaryDirectory() as tmp:
                write_snapshot(draft.files, Path(tmp))
                self.client.log_artifacts(run_id, tmp, S.CODE_DIR)
            self.client.log_text(run_id, draft.patch, S.PATCH)
            for path, text in draft.artifacts.items():
                self.client.log_text(run_id, text, path)
            tags = trial_tags(draft, -1)
            kind, _ = tags.pop(S.KIND), tags.pop(S.TRIAL)
            self._log_batch(run_id, tags, dict(draft.metrics))
            # The number is claimed last, and one request then names the run, numbers it and makes
            # it visible (kind=trial): a loop killed in between leaves a gap in the numbers (a
            # claimed number is never reused), never a half-made trial.
            number = self._claim_number(run_id)
            name = S.run_name(number, draft.specialist, draft.hypothesis)
            self.client.log_batch(run_id, tags=[RunTag(RUN_NAME_TAG, name), RunTag(S.TRIAL, str(number)),
                                                RunTag(S.KIND, kind)])
            return self.get(run_id)
        except MlflowException as e:
            raise self._translate(e, "creating a trial run") from None

    def _drop_duplicates(self, token: str, keep: str, start_time: int) -> None:
        """Delete runs a retried ``create_run`` left with the same draft token (no number, never trials).

        A retry resends the same request, so a duplicate has the same start time: an attribute
        filter (cheap) and the token compared here, not a tag filter (a join over every run's tags).
        """
        for run in self._search(f"attributes.start_time = {start_time}"):
            if run.data.tags.get(DRAFT) == token and run.info.run_id != keep:
                logger.warning("deleting run %s: a duplicate of %s left by a retried request", run.info.run_id, keep)
                try:
                    self.client.delete_run(run.info.run_id)
                except MlflowException as e:  # e.g. no delete permission: it stays an unnumbered placeholder
                    logger.warning("could not delete the duplicate run %s: %s", run.info.run_id, e)

    def _log_batch(self, run_id: str, tags: Mapping[str, str], metrics: Mapping[str, float],
                   steps: Mapping[str, list[float]] | None = None) -> None:
        ts = int(time.time() * 1000)
        short, full = split_long_tags(tags)
        for path, text in full.items():  # the whole text first, so a clipped tag always has it
            self.client.log_text(run_id, text, path)
        tag_list = [RunTag(k, v) for k, v in short.items()]
        metric_list = [Metric(k, float(v), ts, 0) for k, v in metrics.items()]
        for k, values in (steps or {}).items():
            metric_list += [Metric(k, float(v), ts, i) for i, v in enumerate(values)]
        for i in range(0, len(tag_list), 100):
            self.client.log_batch(run_id, tags=tag_list[i : i + 100])
        for i in range(0, len(metric_list), 1000):
            self.client.log_batch(run_id, metrics=metric_list[i : i + 1000])

    def record_result(self, run_id, *, tags, metrics, artifacts, files=None, status="FINISHED", step_metrics=None):
        try:
            info = self.client.get_run(run_id).info
            if info.status != "RUNNING":
                refuse_finished(info.run_name, run_id, info.status)
            for path, text in artifacts.items():
                self.client.log_text(run_id, text, path)
            if files:
                self._log_files(run_id, files)
            self._log_batch(run_id, tags, metrics, step_metrics)
            self.client.set_terminated(run_id, status)
            return self.get(run_id)
        except MlflowException as e:
            if _error_code(e) == "RESOURCE_DOES_NOT_EXIST":
                raise StoreError(f"no run {run_id!r} at {self.tracking_uri}") from None
            raise self._translate(e, f"recording the result of {run_id}") from None

    def _log_files(self, run_id: str, files: Mapping[str, Path]) -> None:
        """Each local file at its artifact path (the file's own name may differ)."""
        with tempfile.TemporaryDirectory() as tmp:
            for path, local in files.items():
                dest = Path(tmp) / path
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(local, dest)
            self.client.log_artifacts(run_id, tmp)

    def record_decision(self, run_id, tags, artifacts, metrics=None):
        try:
            run = self.client.get_run(run_id)
            check_decision(self._to_record(run), tags)
            for path, text in artifacts.items():
                self.client.log_text(run_id, text, path)
            self._log_batch(run_id, tags, dict(metrics or {}))
            # A new end time, so that incremental syncs (end_time >= watermark) see the decision.
            self.client.set_terminated(run_id, run.info.status, end_time=int(time.time() * 1000))
            return self.get(run_id)
        except MlflowException as e:
            raise self._translate(e, f"recording the decision on {run_id}") from None

    def create_measurement(self, of, parent, *, seed, role):
        try:
            run = self.client.create_run(self.experiment_id, run_name=measurement_name(of, parent, seed, role),
                                         tags=measurement_tags(of, parent, seed, role))
            return run.info.run_id
        except MlflowException as e:
            raise self._translate(e, "creating a confirmation run") from None

    def record_measurement(self, run_id, *, tags, metrics, files=None, status="FINISHED"):
        try:
            if files:
                self._log_files(run_id, files)
            self._log_batch(run_id, tags, metrics)
            self.client.set_terminated(run_id, status)
        except MlflowException as e:
            raise self._translate(e, f"recording the confirmation run {run_id}") from None

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        try:
            if FACT_TAGS.intersection(tags):
                info = self.client.get_run(run_id).info
                if info.status != "RUNNING":
                    refuse_finished(info.run_name, run_id, info.status)
            self._log_batch(run_id, tags, {})
        except MlflowException as e:
            raise self._translate(e, f"tagging {run_id}") from None

    def log_params(self, run_id: str, params: Mapping[str, str]) -> None:
        items = [Param(k, S.clip(str(v), 6000)) for k, v in params.items()]
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
        """Fetch what changed since the last sync; returns how many runs came back.

        First call: every trial.  Later calls: the RUNNING trials and those
        that ended after the watermark less :data:`SLACK_MS`.
        """
        started = int(time.time() * 1000)
        try:
            if self._watermark is None:
                runs = self._search(_TRIALS)
                if self._ledger_id is None:  # read, never create: readers sync too
                    self._ledger_id = self.client.get_experiment(self.experiment_id).tags.get(S.LEDGER_TAG)
            else:
                # Attribute filters only: a tag filter joins every run's tags (about 100 ms at
                # 10,000 runs on SQLite, against 10 ms); the few non-trial runs are dropped below.
                # The ledger is left out by id: it holds one param per trial ever numbered.
                since = self._watermark - SLACK_MS
                skip = f" AND attributes.run_id NOT IN ('{self._ledger_id}')" if self._ledger_id else ""
                runs = self._search("attributes.status = 'RUNNING'" + skip)
                runs += self._search(f"attributes.end_time >= {since}" + skip)
        except MlflowException as e:
            raise self._translate(e, "reading the lineage") from None
        with self._lock:
            mark = max(self._watermark or 0, started)  # what ends later has a later end_time (less skew)
            for run in runs:
                if run.data.tags.get(S.KIND) != "trial":
                    continue
                rec = self._to_record(run)
                self._cache[rec.run_id] = rec
                self._max_number = max(self._max_number, rec.number)
                mark = max(mark, run.info.end_time or 0)
            self._watermark = mark
            self.last_sync_rows = len(runs)
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
            raise self._translate(e, f"reading run {run_id}") from None
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
            except _NoArtifact:
                return None
            p = Path(local)
            return p.read_text(errors="replace") if p.is_file() else None

    def _download(self, run_id: str, path: str, dst: str) -> str:
        try:
            return self.client.download_artifacts(run_id, path, dst)
        except (MlflowException, OSError) as e:
            if isinstance(e, RestException) and _denied(e):
                raise self._translate(e, f"downloading {path}") from None
            if is_transient(e):  # the server did not answer: not the same as "no such file"
                raise StoreError(f"downloading {path!r} of run {run_id} failed: {e}") from None
            raise _NoArtifact(f"run {run_id} has no artifact {path!r}: {e}") from None

    @staticmethod
    def _to_record(run) -> TrialRecord:
        info = run.info
        return record_from_parts(
            info.run_id, info.run_name or "", info.status, info.start_time or 0, info.end_time,
            run.data.tags, run.data.metrics,
        )
