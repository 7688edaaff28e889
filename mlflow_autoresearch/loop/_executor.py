"""Submitting evaluations: through ``mlflow.projects.run`` (any MLflow project
backend) or in this process, plus the leases that make resuming safe.

A lease tag ``autoresearch.lease_until = host:pid:token|epoch`` says who is
evaluating a RUNNING trial and until when.  The evaluating process renews it;
a trial whose lease expired, or whose owner process on this host is gone,
is stale and may be taken over (claimed once, through the ledger).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
import uuid
from pathlib import Path

from mlflow_autoresearch import schema as S
from mlflow_autoresearch._errors import HarnessError
from mlflow_autoresearch.lineage import LineageStore, TrialRecord
from mlflow_autoresearch.loop import _cluster
from mlflow_autoresearch.recipe import Recipe

logger = logging.getLogger(__name__)

HOST = socket.gethostname()
EVALUATE_MLPROJECT = """\
name: mlflow-autoresearch-evaluator
entry_points:
  evaluate:
    parameters:
      trial: {type: string}
      recipe: {type: string, default: ""}
    command: "python -m mlflow_autoresearch.cli evaluate --trial {trial} --recipe {recipe} --facts-only"
"""
# What a quiet evaluation's processes print: warnings and errors only.  MLflow's INFO lines
# (mlflow.projects: "=== Running command ...", "=== Run ... succeeded ==="), its "View run ... at"
# print, and the evaluate command's own progress and run id line are left out.
QUIET_ENV = {"MLFLOW_LOGGING_LEVEL": "WARNING", "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
             "AUTORESEARCH_QUIET": "1"}


def new_owner(pid: int | None = None) -> str:
    return f"{HOST}:{os.getpid() if pid is None else pid}:{uuid.uuid4().hex[:8]}"


def lease_value(owner: str, seconds: float) -> str:
    return f"{owner}|{time.time() + seconds:.0f}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lease_is_stale(trial: TrialRecord, now: float | None = None) -> bool:
    """True when nobody is evaluating this RUNNING trial any more."""
    value = trial.tags.get(S.LEASE, "")
    try:
        owner, until = value.rsplit("|", 1)
        host, pid, _ = owner.split(":", 2)
        expired = float(until) < (now or time.time())
    except ValueError:
        return True
    if expired:
        return True
    # pid 0: a hand-off lease (the loop submitted the trial to an evaluator process): expiry only.
    return host == HOST and int(pid) > 0 and not _pid_alive(int(pid))


class LeaseKeeper:
    """Renews the leases of trials this process is working on, from one thread."""

    def __init__(self, store: LineageStore, owner: str, seconds: float) -> None:
        self.store, self.owner, self.seconds = store, owner, seconds
        self._held: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="autoresearch-leases", daemon=True)
        self._thread.start()

    def hold(self, run_id: str) -> None:
        with self._lock:
            self._held.add(run_id)
        self.store.set_tags(run_id, {S.LEASE: lease_value(self.owner, self.seconds)})

    def release(self, run_id: str, expire: bool = False) -> None:
        with self._lock:
            self._held.discard(run_id)
        if expire:  # let a resumed loop take it over at once
            self.store.set_tags(run_id, {S.LEASE: f"{self.owner}|0"})

    def _run(self) -> None:
        while not self._stop.wait(self.seconds / 3):
            with self._lock:
                held = list(self._held)
            for run_id in held:
                try:
                    self.store.set_tags(run_id, {S.LEASE: lease_value(self.owner, self.seconds)})
                except Exception as e:  # a missed renewal is retried next round
                    logger.warning("could not renew the lease of %s: %s", run_id, e)

    def close(self) -> None:
        self._stop.set()


class Evaluations:
    """Runs evaluations for the loop; thread-safe; one call per slot at a time."""

    def __init__(self, store: LineageStore, recipe: Recipe, *, tracking_uri: str, experiment_id: str | None,
                 in_process: bool, backend: str = "local", backend_config: str | None = None,
                 project_uri: str | None = None, leases: LeaseKeeper | None = None, quiet: bool = True) -> None:
        self.store, self.recipe = store, recipe
        self.tracking_uri, self.experiment_id = tracking_uri, experiment_id
        self.in_process, self.backend, self.backend_config = in_process, backend, backend_config
        self.project_uri = project_uri
        self.leases = leases
        # Local evaluations print to this terminal: quiet unless -v.  A cluster job's log keeps everything.
        self.quiet = quiet and backend == "local"
        self._submit_lock = threading.Lock()
        self._active: dict[str, object] = {}
        self._adopted: dict[str, object] = {}  # run id -> a SLURM job found queued or running at resume
        self._slurm_config = _cluster.load_user_config(backend_config) if backend == "slurm" and not in_process else {}

    @property
    def on_cluster(self) -> bool:
        return self.backend == "slurm" and not self.in_process

    def adopt(self, trial: TrialRecord) -> str | None:
        """At resume: when ``trial`` is still a queued or running job, remember it (run() waits on it
        instead of submitting again) and say which job; else None."""
        if not self.on_cluster:
            return None
        job = _cluster.live_job(trial.run_id, self.tracking_uri)
        if job is None:
            return None
        self._adopted[trial.run_id] = job
        return f"SLURM job {job.job_id} ({job.state.lower()})"

    def _project(self) -> str:
        if self.project_uri:
            return self.project_uri
        folder = Path.home() / ".cache" / "mlflow-autoresearch" / "evaluate-project"
        folder.mkdir(parents=True, exist_ok=True)
        mlproject = folder / "MLproject"
        if not mlproject.exists() or mlproject.read_text() != EVALUATE_MLPROJECT:
            mlproject.write_text(EVALUATE_MLPROJECT)
        self.project_uri = str(folder)
        return self.project_uri

    def run(self, trial: TrialRecord, gpu: str | None) -> TrialRecord:
        """Evaluate ``trial`` on the slot ``gpu`` and return its finished record."""
        if self.in_process:
            from mlflow_autoresearch.trial import evaluate_trial

            env = {"CUDA_VISIBLE_DEVICES": gpu} if gpu is not None else None
            if self.leases:
                self.leases.hold(trial.run_id)
            try:
                return evaluate_trial(self.store, trial.run_id, recipe=self.recipe, extra_env=env)
            finally:
                if self.leases:
                    self.leases.release(trial.run_id)
        if self.leases:
            # Hand the lease to the evaluator process, which renews it with its own pid; until it
            # does, only expiry makes the trial stale (so a loop killed now cannot cause a double run).
            self.leases.release(trial.run_id)
            self.store.set_tags(trial.run_id, {S.LEASE: lease_value(new_owner(pid=0), self.leases.seconds)})

        submitted = self._start(trial.run_id, gpu)
        ok = self._wait(trial.run_id, submitted)
        record = self.store.get(trial.run_id)
        if record.outcome is None and getattr(submitted, "timed_out", False):
            record = _cluster.record_time_limit(self.store, self.recipe, trial, submitted)
        if record.outcome is None:
            if getattr(submitted, "cancelled", False) and self.leases:
                self.leases.release(trial.run_id, expire=True)  # stopped by us: the next loop re-evaluates it
            raise HarnessError(f"evaluation of {trial.short} ended ({'ok' if ok else 'failed'}) without a result")
        return record

    def _submit(self, run_id: str, gpu: str | None) -> bool:
        """Run the ``evaluate`` entry point for ``run_id`` through the project backend; wait for it."""
        return self._wait(run_id, self._start(run_id, gpu))

    def _start(self, run_id: str, gpu: str | None):
        """Submit ``run_id``'s evaluation (or find its job still queued or running); a SubmittedRun."""
        import mlflow.projects

        submitted = self._adopted.pop(run_id, None)
        if submitted is None and self.on_cluster:  # never a second job while one is queued or running
            submitted = _cluster.live_job(run_id, self.tracking_uri)
        if submitted is not None:
            self._active[run_id] = submitted
            return submitted
        config = _cluster.job_config(self.recipe, self._slurm_config, run_id) if self.on_cluster \
            else self.backend_config
        with self._submit_lock:  # the child inherits os.environ at submission: pin the slot's GPU
            quiet = QUIET_ENV if self.quiet else {}
            saved = {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "MLFLOW_TRACKING_URI", "PATH", *quiet)}
            try:
                os.environ.update(quiet)
                os.environ["MLFLOW_TRACKING_URI"] = self.tracking_uri
                # Asynchronous local runs start the `mlflow` command: make it this environment's.
                os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
                if gpu is not None:
                    os.environ["CUDA_VISIBLE_DEVICES"] = gpu
                mlflow.set_tracking_uri(self.tracking_uri)
                submitted = mlflow.projects.run(
                    self._project(), entry_point="evaluate",
                    parameters={"trial": run_id, "recipe": str(self.recipe.root)},
                    experiment_id=self.experiment_id, run_id=run_id, backend=self.backend,
                    backend_config=config, env_manager="local", synchronous=False,
                )
            finally:
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
            self._active[run_id] = submitted
        return submitted

    def _wait(self, run_id: str, submitted) -> bool:
        """Wait for the submitted evaluation; one abandoned while waiting (an error, an interrupt) is cancelled."""
        ended = False
        try:
            ok = submitted.wait()
            ended = True
            return ok
        finally:
            self._active.pop(run_id, None)
            if not ended:
                self._cancel(submitted)

    def measurer(self, gpu: str | None):
        """Confirmation seeds on the slot ``gpu``: in this process, or each through the project backend."""
        from mlflow_autoresearch.loop._decision import measure_in_process

        env = {"CUDA_VISIBLE_DEVICES": gpu} if gpu is not None else None
        if self.in_process:
            return measure_in_process(self.store, self.recipe, env)

        def measurer(of: TrialRecord, parent: TrialRecord, seed: int, role: str) -> float | None:
            from mlflow_autoresearch.outcome import Outcome

            run_id = self.store.create_measurement(of, parent, seed=seed, role=role)
            ok = self._submit(run_id, gpu)
            rec = self.store.get(run_id)
            if rec.outcome is None:  # the entry point itself failed: not the trial's fault
                raise HarnessError(f"confirmation run {run_id} of {parent.short} ended ({'ok' if ok else 'failed'}) "
                                   "without a result")
            return rec.score if rec.outcome in (Outcome.OK, Outcome.GATE_FAILED) else None

        return measurer

    @staticmethod
    def _cancel(submitted) -> None:
        try:
            submitted.cancel()
        except Exception as e:
            logger.warning("could not cancel an evaluation: %s", e)

    def cancel_all(self) -> None:
        """Cancel every evaluation in flight (local processes killed, SLURM jobs scancelled)."""
        for submitted in [*self._active.values(), *self._adopted.values()]:
            self._cancel(submitted)
