"""The ``slurm`` MLflow project backend: one run of an entry point is one ``sbatch`` job.

Registered under MLflow's ``mlflow.project_backend`` entry-point group (setup.cfg),
so with this package installed::

    mlflow run . -e evaluate --backend slurm --backend-config slurm.json -P trial=<run id>

``run`` returns as soon as sbatch has accepted the job; the returned
:class:`SlurmSubmittedRun` polls the job's state (``wait``, ``get_status``),
cancels it with ``scancel`` (``cancel``) and, when the job has ended,
attaches its stdout and stderr to the MLflow run under ``logs/``.

The job runs the entry point's command in the project folder with
``MLFLOW_RUN_ID``, ``MLFLOW_TRACKING_URI`` and ``MLFLOW_EXPERIMENT_ID`` set,
after the config's ``setup`` lines (``module load …``, ``source venv/bin/activate``);
MLflow's own environment managers (conda, virtualenv, docker) are not used on
the node.  The job is named ``mlflow-<run id>``, so a process that lost its
SubmittedRun (a loop killed and started again) finds it again with
:func:`find_job`, and it is never requeued (``--no-requeue``): a requeued
evaluation would run twice.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import tempfile
import time
from pathlib import Path
from typing import Any

from mlflow.entities import RunStatus, RunTag
from mlflow.projects.backend.abstract_backend import AbstractBackend
from mlflow.projects.submitted_run import SubmittedRun
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mlflow_autoresearch._errors import HarnessError, UsageError
from mlflow_autoresearch.slurm import _jobs

logger = logging.getLogger(__name__)

JOB_TAG, STDOUT_TAG, STDERR_TAG = "slurm.job_id", "slurm.stdout", "slurm.stderr"
LOG_LIMIT = 1 << 20  # bytes of each stream attached to the run (the tail)
#: keys MLflow itself adds to every backend config (mlflow/projects/__init__.py::_run)
MLFLOW_KEYS = ("ENV_MANAGER", "SYNCHRONOUS", "DOCKER_ARGS", "STORAGE_DIR", "build_image", "docker_auth",
               "_mlflow_local_backend_run_id")


class SlurmConfig(BaseModel):
    """The ``--backend-config`` JSON of the slurm backend.  Unknown keys are refused."""

    model_config = ConfigDict(extra="forbid")

    partition: str | None = Field(default=None, description="sbatch --partition")
    account: str | None = Field(default=None, description="sbatch --account")
    qos: str | None = Field(default=None, description="sbatch --qos")
    time: str | None = Field(default=None, description="sbatch --time (minutes, or [D-]HH:MM:SS) "
                             "[the loop: the recipe's limits plus time_margin_seconds; mlflow run: 60]")
    time_margin_seconds: float = Field(default=300, ge=0, description="added to the recipe's limits (the loop)")
    cpus: int = Field(default=1, ge=1, description="sbatch --cpus-per-task")
    mem: str | None = Field(default=None, description="sbatch --mem, e.g. 16G [the loop: the recipe's memory_gb + 25%]")
    gpus: int = Field(default=0, ge=0, description="GPUs per job, as --gres=gpu:N")
    gres: str | None = Field(default=None, description="sbatch --gres verbatim (e.g. gpu:a100:1); overrides gpus")
    job_dir: str = Field(default="~/.cache/mlflow-autoresearch/slurm",
                         description="batch scripts and stdout/stderr; on a cluster a folder the nodes share")
    setup: list[str] = Field(default_factory=list, description="shell lines run before the command")
    sbatch_args: list[str] = Field(default_factory=list, description="extra sbatch flags, verbatim")
    poll_seconds: float = Field(default=2.0, gt=0, le=300)
    job_attaches_logs: bool = Field(default=True, description="the job's last step attaches its stdout/stderr to "
                                    "the run (costs an `import mlflow` per job; the loop attaches them itself)")
    run_id: str | None = Field(default=None, description="attach the job to this existing run (the loop sets it)")


def parse_config(raw: dict | str | None, source: str = "--backend-config") -> SlurmConfig:
    """Validate a backend config (a dict, or the path of a .json file); errors name the key and the file."""
    if isinstance(raw, str):
        source = raw
        try:
            raw = json.loads(Path(raw).read_text())
        except (OSError, ValueError) as e:
            raise UsageError(f"{source}: cannot read the slurm backend config: {e}") from None
    values = {k: v for k, v in (raw or {}).items() if k not in MLFLOW_KEYS}
    try:
        return SlurmConfig(**values)
    except ValidationError as e:
        lines = [f"{source}: invalid slurm backend config"]
        for err in e.errors():
            key = ".".join(str(x) for x in err["loc"])
            lines.append(f"  {key}: {err['msg']}" + (" (known keys: " + ", ".join(SlurmConfig.model_fields) + ")"
                                                      if err["type"] == "extra_forbidden" else ""))
        raise UsageError("\n".join(lines)) from None


def job_name(run_id: str) -> str:
    return f"mlflow-{run_id}"


def render_script(config: SlurmConfig, *, command: str, work_dir: str, run_env: dict[str, str], name: str,
                  stdout: Path, stderr: Path) -> str:
    """The batch script: #SBATCH lines from the config, the run's environment, setup lines, the command."""
    opts = [f"--job-name={name}", f"--output={stdout}", f"--error={stderr}", f"--chdir={work_dir}",
            "--no-requeue", "--nodes=1", "--ntasks=1", f"--cpus-per-task={config.cpus}",
            f"--time={config.time or '60'}"]
    for flag, value in (("partition", config.partition), ("account", config.account), ("qos", config.qos),
                        ("mem", config.mem)):
        if value:
            opts.append(f"--{flag}={value}")
    if config.gres or config.gpus:
        opts.append(f"--gres={config.gres or f'gpu:{config.gpus}'}")
    opts += config.sbatch_args
    lines = ["#!/bin/bash", *(f"#SBATCH {o}" for o in opts),
             "# written by mlflow_autoresearch.slurm for one MLflow run", ""]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in run_env.items()]
    lines += [*config.setup, f"cd {shlex.quote(work_dir)}"]
    if not config.job_attaches_logs:
        return "\n".join([*lines, f"exec {command}", ""])
    lines += [command, "status=$?",
              "# attach this job's output to the run now (a waiting submitter attaches it again at the end)",
              f"python -c {shlex.quote(ATTACH_PY)} {shlex.quote(str(stdout))} {shlex.quote(str(stderr))} "
              ">/dev/null 2>&1 || true", "exit $status", ""]
    return "\n".join(lines)


ATTACH_PY = """\
import os, shutil, sys, tempfile
from mlflow.tracking import MlflowClient
tmp = tempfile.mkdtemp()
for src, ext in zip(sys.argv[1:], ("out", "err")):
    dest = os.path.join(tmp, "slurm-%s.%s" % (os.environ["SLURM_JOB_ID"], ext))
    shutil.copyfile(src, dest)
    MlflowClient().log_artifact(os.environ["MLFLOW_RUN_ID"], dest, "logs")
shutil.rmtree(tmp)
"""


_STATUS = {**{s: RunStatus.SCHEDULED for s in _jobs.PENDING}, **{s: RunStatus.RUNNING for s in _jobs.ACTIVE},
           "COMPLETED": RunStatus.FINISHED, "CANCELLED": RunStatus.KILLED, "PREEMPTED": RunStatus.KILLED}


def run_status(slurm_state: str) -> int:
    """MLflow's RunStatus for a SLURM state: waiting SCHEDULED, running RUNNING, COMPLETED FINISHED,
    CANCELLED/PREEMPTED KILLED, and every other end (FAILED, TIMEOUT, OUT_OF_MEMORY, NODE_FAIL …) FAILED."""
    return _STATUS.get(slurm_state, RunStatus.FAILED)


class SlurmSubmittedRun(SubmittedRun):
    """One sbatch job of one MLflow run.  Thread-safe enough for one waiter plus one canceller."""

    def __init__(self, run_id: str, job_id: str, *, tracking_uri: str | None = None, stdout: str | None = None,
                 stderr: str | None = None, poll_seconds: float = 2.0) -> None:
        super().__init__()
        self._run_id, self.job_id = run_id, job_id
        self.tracking_uri, self.poll_seconds = tracking_uri, poll_seconds
        self.stdout, self.stderr = stdout, stderr
        self.state = "PENDING"
        self.cancelled = False
        self._logs_attached = False

    @property
    def run_id(self) -> str:
        return self._run_id

    @property
    def timed_out(self) -> bool:
        """The job ran past its ``--time`` and SLURM ended it."""
        return self.state in ("TIMEOUT", "DEADLINE")

    def refresh(self) -> str:
        try:
            self.state = _jobs.state(self.job_id)
        except HarnessError as e:  # slurmctld busy: keep the last state, ask again at the next poll
            logger.warning("%s", e)
        return self.state

    def wait(self) -> bool:
        """Block until the job has ended; attach its logs; True when it COMPLETED (exit code 0)."""
        while self.refresh() in _jobs.ALIVE:
            time.sleep(self.poll_seconds)
        self.attach_logs()
        return self.state == "COMPLETED"

    def get_status(self) -> str:
        return RunStatus.to_string(run_status(self.refresh()))

    def cancel(self) -> None:
        """``scancel`` the job and wait until SLURM has ended it."""
        self.cancelled = True
        self.state = _jobs.cancel(self.job_id)

    def attach_logs(self) -> None:
        """Log the job's stdout and stderr (their last MiB) to the run as ``logs/slurm-<job>.out|err``, once."""
        if self._logs_attached:
            return
        from mlflow.tracking import MlflowClient

        client = MlflowClient(self.tracking_uri)
        with tempfile.TemporaryDirectory(prefix="slurm-logs-") as tmp:
            for src, suffix in ((self.stdout, "out"), (self.stderr, "err")):
                if not src:
                    continue
                path = Path(src)
                try:
                    size = path.stat().st_size
                    with path.open("rb") as f:
                        f.seek(max(size - LOG_LIMIT, 0))
                        data = f.read()
                except OSError as e:
                    logger.warning("job %s: its %s (%s) cannot be read here (%s); on a cluster, job_dir must be "
                                   "a folder this machine shares with the nodes", self.job_id, suffix, src, e)
                    continue
                dest = Path(tmp) / f"slurm-{self.job_id}.{suffix}"
                dest.write_bytes(data)
                try:
                    client.log_artifact(self.run_id, str(dest), "logs")
                except Exception as e:  # the run's result is already recorded; logs are a convenience
                    logger.warning("job %s: could not attach %s to run %s: %s", self.job_id, dest.name,
                                   self.run_id, e)
        self._logs_attached = True


def find_job(run_id: str, *, tracking_uri: str | None = None, poll_seconds: float = 2.0,
             alive_only: bool = True) -> SlurmSubmittedRun | None:
    """The newest job slurmctld knows for this run (``alive_only``: still queued or running), or None."""
    jobs = _jobs.find(job_name(run_id))
    if alive_only:
        jobs = [j for j in jobs if j[1] in _jobs.ALIVE]
    if not jobs:
        return None
    job_id, current = max(jobs, key=lambda j: int(j[0]))
    from mlflow.tracking import MlflowClient

    tags = {}
    try:
        tags = MlflowClient(tracking_uri).get_run(run_id).data.tags
    except Exception as e:
        logger.debug("run %s: no tags (%s)", run_id, e)
    found = SlurmSubmittedRun(run_id, job_id, tracking_uri=tracking_uri, stdout=tags.get(STDOUT_TAG),
                              stderr=tags.get(STDERR_TAG), poll_seconds=poll_seconds)
    found.state = current
    return found


class SlurmBackend(AbstractBackend):
    """MLflow's plug-in interface: ``run`` submits and returns at once."""

    def run(self, project_uri: str, entry_point: str, params: dict, version: str | None,
            backend_config: dict[str, Any], tracking_uri: str, experiment_id: str) -> SlurmSubmittedRun:
        from mlflow.projects.utils import (
            fetch_and_validate_project,
            get_entry_point_command,
            get_or_create_run,
            get_run_env_vars,
            load_project,
        )
        from mlflow.tracking import MlflowClient

        config = parse_config(backend_config)
        work_dir = fetch_and_validate_project(project_uri, version, entry_point, params)
        project = load_project(work_dir)
        if project.docker_env:
            raise UsageError(f"{project_uri}: the slurm backend runs commands on the node; a docker_env "
                             "project needs the kubernetes backend (or an MLproject without docker_env)")
        manager = backend_config.get("ENV_MANAGER")
        if manager not in (None, "local"):
            logger.warning("slurm backend: --env-manager %s is not used; the job runs in the environment its "
                           "`setup` lines make", manager)
        run_id = config.run_id or backend_config.get("_mlflow_local_backend_run_id")
        active = get_or_create_run(run_id, project_uri, experiment_id, work_dir, version, entry_point, params)
        run_id = active.info.run_id
        command = " ".join(get_entry_point_command(project, entry_point, params, backend_config.get("STORAGE_DIR")))
        env = {**get_run_env_vars(run_id, experiment_id), "MLFLOW_TRACKING_URI": tracking_uri}
        folder = Path(os.path.expanduser(config.job_dir)).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        stamp = f"{run_id}-{time.time_ns() % 10**12}"
        stdout, stderr = folder / f"{stamp}.out", folder / f"{stamp}.err"
        script = folder / f"{stamp}.sbatch"
        script.write_text(render_script(config, command=command, work_dir=str(Path(work_dir).resolve()),
                                        run_env=env, name=job_name(run_id), stdout=stdout, stderr=stderr))
        job_id = _jobs.submit(str(script))
        logger.info("run %s: SLURM job %s (%s)", run_id, job_id, script)
        tags = {JOB_TAG: job_id, STDOUT_TAG: str(stdout), STDERR_TAG: str(stderr)}
        MlflowClient(tracking_uri).log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        return SlurmSubmittedRun(run_id, job_id, tracking_uri=tracking_uri, stdout=str(stdout), stderr=str(stderr),
                                 poll_seconds=config.poll_seconds)


def slurm_backend_builder() -> SlurmBackend:
    """The entry point MLflow's backend loader calls (``mlflow.project_backend: slurm``)."""
    return SlurmBackend()
