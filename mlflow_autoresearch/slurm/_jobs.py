"""SLURM's command-line clients, wrapped: submit, look up, cancel.

Every call goes through ``sbatch``, ``squeue``, ``sacct`` and ``scancel`` as a
user would type them, so whatever ``SLURM_CONF`` (or the machine's
``/etc/slurm``) names is the cluster.  A job's state comes from ``squeue``
while slurmctld remembers it (``MinJobAge``, 5 minutes by default, after the
end), then from ``sacct`` where the cluster keeps accounting.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import time

from mlflow_autoresearch._errors import HarnessError, UsageError

logger = logging.getLogger(__name__)

PENDING = frozenset({"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD",
                     "POWER_UP_NODE"})
ACTIVE = frozenset({"RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "RESIZING", "SIGNALING", "STAGE_OUT"})
ALIVE = PENDING | ACTIVE
#: a state nobody can read any more: the job left squeue and the cluster keeps no accounting
GONE = "GONE"
CALL_SECONDS = 60


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise UsageError(f"`{name}` is not on PATH: the slurm backend needs SLURM's client commands "
                         "(Debian/Ubuntu: apt-get install slurm-client; on a cluster: a login node)")
    return found


def _call(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run([_tool(args[0]), *args[1:]], capture_output=True, text=True, env=env,
                              timeout=CALL_SECONDS, check=False)
    except subprocess.TimeoutExpired as e:
        raise HarnessError(f"`{' '.join(args)}` did not answer in {CALL_SECONDS} s (is slurmctld up?)") from e


def submit(script: str, env: dict[str, str] | None = None) -> str:
    """``sbatch --parsable SCRIPT``; returns the job id.  Raises HarnessError with sbatch's own words."""
    out = _call(["sbatch", "--parsable", script], env)
    job = out.stdout.strip().split(";")[0]
    if out.returncode != 0 or not job.isdigit():
        raise HarnessError(f"sbatch refused the job ({out.returncode}): {(out.stderr or out.stdout).strip()[-800:]}")
    return job


def state(job_id: str) -> str:
    """The job's state word (``PENDING``, ``RUNNING``, ``COMPLETED``, ``TIMEOUT`` …), or GONE.

    Raises HarnessError when slurmctld does not answer (the caller polls again).
    """
    out = _call(["squeue", "-h", "-j", job_id, "--states=all", "-o", "%T"])
    if out.returncode == 0 and out.stdout.strip():
        return out.stdout.split()[0]
    if out.returncode != 0 and "Invalid job id" not in out.stderr:
        raise HarnessError(f"squeue failed for job {job_id}: {out.stderr.strip()[-300:]}")
    if shutil.which("sacct"):
        acct = subprocess.run(["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State"], capture_output=True,
                              text=True, timeout=CALL_SECONDS, check=False)
        words = acct.stdout.split()
        if acct.returncode == 0 and words:
            return words[0]  # "CANCELLED by 0" -> CANCELLED
    return GONE


def find(name: str) -> list[tuple[str, str]]:
    """Jobs slurmctld knows by this ``--job-name`` (any state it still remembers): ``[(id, state)]``."""
    out = _call(["squeue", "-h", "--states=all", "-n", name, "-o", "%i %T"])
    if out.returncode != 0:
        raise HarnessError(f"squeue failed looking for job {name!r}: {out.stderr.strip()[-300:]}")
    return [(line.split()[0], line.split()[1]) for line in out.stdout.splitlines() if len(line.split()) >= 2]


def cancel(job_id: str, wait_seconds: float = 30.0) -> str:
    """``scancel`` the job and wait (bounded) until slurmctld no longer counts it as alive; returns its state."""
    out = _call(["scancel", job_id])
    if out.returncode != 0 and "Invalid job id" not in out.stderr:
        logger.warning("scancel %s failed: %s", job_id, out.stderr.strip()[-300:])
    deadline = time.monotonic() + wait_seconds
    current = "UNKNOWN"
    while time.monotonic() < deadline:
        try:
            current = state(job_id)
        except HarnessError as e:
            logger.debug("%s", e)
        if current not in ALIVE:
            return current
        time.sleep(0.5)
    return current
