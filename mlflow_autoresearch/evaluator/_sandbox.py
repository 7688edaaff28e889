"""The evaluator's side of containment: environment, identity, working folders.

The supervisor script (``_supervisor.py``) does the watching and killing; this
module builds what it needs and reads back its report.  Thread-safe: every
call works on its own folders and processes.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import pwd
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from mlflow_autoresearch._errors import HarnessError

logger = logging.getLogger(__name__)

SUPERVISOR = Path(__file__).with_name("_supervisor.py")

# An allow-list: nothing else of the evaluator's environment reaches a trial.
# Model API keys, cloud credentials and tracking credentials are never here.
SAFE_ENV = (
    "PATH",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "CUDA_VISIBLE_DEVICES",
    "NVIDIA_VISIBLE_DEVICES",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "OPENBLAS_CORETYPE",
    "OPENBLAS_L2_SIZE",
    "AUTORESEARCH_DATA_DIR",  # where recipes cache their datasets (a path, never a secret)
)
SANDBOX_USER_ENV = "AUTORESEARCH_SANDBOX_USER"
# The recipes' dataset cache: $AUTORESEARCH_DATA_DIR, else this.  Trials see it read-only, even
# when it lies under /tmp or /var/tmp, which are otherwise private to each trial.
DEFAULT_DATA_DIR = "/var/tmp/autoresearch-data"


def data_dirs() -> list[str]:
    """Existing dataset cache folders to show trials (read-only), as real paths."""
    found = []
    for p in (os.environ.get("AUTORESEARCH_DATA_DIR"), DEFAULT_DATA_DIR):
        if p and os.path.isdir(p) and os.path.realpath(p) not in found:
            found.append(os.path.realpath(p))
    return found


@dataclass(frozen=True)
class ProcessLimits:
    wall_seconds: float
    memory_bytes: int | None = None
    processes: int = 256
    open_files: int = 1024
    file_bytes: int = 4 * 1024**3
    disk_bytes: int = 8 * 1024**3
    output_bytes: int = 256 * 1024
    grace_seconds: float = 3.0
    network: bool = False


@dataclass(frozen=True)
class ProcessResult:
    """What the supervisor saw.  ``wall_seconds`` is the evaluator's clock."""

    returncode: int
    wall_seconds: float
    timed_out: bool
    limit: str | None  # memory | processes | disk | stopped | supervisor
    peak_rss_bytes: int
    leftover: int  # processes still alive after the command exited, then killed
    stdout_path: Path
    stderr_path: Path
    stdout_bytes: int
    stderr_bytes: int
    truncated: bool
    notes: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out and self.limit is None

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


_IDENTITY_CACHE: dict[str, tuple[int, int] | None] = {}


def sandbox_identity() -> tuple[int, int] | None:
    """(uid, gid) to run trials as, or None to keep the current user.

    As root, trials run unprivileged, provided ``nobody`` can run this
    interpreter; otherwise a warning says why containment is weaker.  Each
    :class:`Workspace` then leases its own uid (group ``nobody``'s); setting
    ``$AUTORESEARCH_SANDBOX_USER`` runs every trial as that named user instead,
    and an empty string keeps root.  This returns the base identity.
    """
    if os.geteuid() != 0:
        return None
    name = os.environ.get(SANDBOX_USER_ENV, "nobody")
    if name in _IDENTITY_CACHE:
        return _IDENTITY_CACHE[name]
    identity = None
    if name:
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            raise HarnessError(f"sandbox user {name!r} does not exist; create it or set {SANDBOX_USER_ENV}") from None
        identity = (pw.pw_uid, pw.pw_gid)
        if not _can_run_as(identity):
            logger.warning(
                "trials run as root, not as %r: that user cannot run %s. Grant it traverse rights on the "
                "interpreter's folders (for a Python under /root: chmod o+x /root) for the stronger sandbox.",
                name, sys.executable,
            )
            identity = None
    _IDENTITY_CACHE[name] = identity
    return identity


# Per-evaluation sandbox uids (no passwd entry): trials cannot signal, trace or read each other, and
# RLIMIT_NPROC counts one trial's processes only.  Leased with flock, so a crashed evaluator frees its uid.
UID_BASE = 1_900_000_000
UID_SLOTS = 4096


class UidLease:
    """One uid from the sandbox range, held (by an flock) until :meth:`release`.

    Used as root when ``$AUTORESEARCH_SANDBOX_USER`` is not set: the trial
    gets this uid and the group of ``nobody``.  Any process left with the uid
    (from an evaluator that crashed) is killed when the lease is taken.
    """

    def __init__(self) -> None:
        folder = _lock_folder()
        start = int.from_bytes(os.urandom(2), "little") % UID_SLOTS
        for i in range(UID_SLOTS):
            uid = UID_BASE + (start + i) % UID_SLOTS
            fd = os.open(folder / str(uid), os.O_CREAT | os.O_RDWR, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self.uid, self._fd = uid, fd
            kill_processes_of(uid)
            return
        raise HarnessError(f"all {UID_SLOTS} sandbox uids are in use")

    def release(self) -> None:
        if self._fd is not None:
            kill_processes_of(self.uid)
            os.close(self._fd)
            self._fd = None


def _lock_folder() -> Path:
    """A folder only root can write (a squatter could otherwise hold every uid's lock)."""
    for candidate in (Path("/run/autoresearch-uids"), Path(tempfile.gettempdir()) / "autoresearch-uids-root"):
        try:
            candidate.mkdir(mode=0o700, exist_ok=True)
            st = candidate.lstat()
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode) and st.st_uid == 0 and not st.st_mode & 0o022:
            return candidate
    raise HarnessError("no root-owned folder for the sandbox uid locks (/run/autoresearch-uids)")


def kill_processes_of(uid: int) -> int:
    """SIGKILL every process running as ``uid``; returns how many there were."""
    n = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.stat(f"/proc/{name}").st_uid == uid:
                os.kill(int(name), signal.SIGKILL)
                n += 1
        except OSError:
            continue
    return n


def sandbox_level() -> str:
    """``user`` when trials run as a separate unprivileged user, else ``same-user``."""
    return "user" if sandbox_identity() else "same-user"


def _can_run_as(identity: tuple[int, int]) -> bool:
    uid, gid = identity

    def drop() -> None:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)

    try:
        r = subprocess.run([sys.executable, "-I", "-c", "import encodings"], preexec_fn=drop, cwd="/",
                           capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return False
    return r.returncode == 0


def scrubbed_env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: os.environ[k] for k in SAFE_ENV if k in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    # The interpreter's own folder first, so `python` means the evaluator's Python.
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    env.update(
        USER="trial",  # the sandbox uid has no passwd entry: getpass.getuser() reads these first
        LOGNAME="trial",
        HOME=str(home),
        TMPDIR=str(home / "tmp"),
        PYTHONUNBUFFERED="1",
        PYTHONDONTWRITEBYTECODE="1",
        MPLCONFIGDIR=str(home / "tmp"),
    )
    if extra:
        env.update(extra)
    return env


def command_argv(command: str) -> list[str]:
    """Split a recipe command; a leading ``python``/``python3`` is this interpreter."""
    argv = shlex.split(command)
    if not argv:
        raise HarnessError("empty command")
    if argv[0] in ("python", "python3"):
        argv[0] = sys.executable
    return argv


class Workspace:
    """A private root for one evaluation: per-seed working folders, logs, a pristine copy.

    The root is traversable but not listable by others; working folders are
    owned by the sandbox user; everything else stays owned by the evaluator.
    """

    def __init__(self, base: str | None = None) -> None:
        self.identity = sandbox_identity()
        self._lease: UidLease | None = None
        if self.identity is not None and SANDBOX_USER_ENV not in os.environ:
            self._lease = UidLease()
            self.identity = (self._lease.uid, self.identity[1])
        self.root = Path(tempfile.mkdtemp(prefix="autoresearch-", dir=base))
        os.chmod(self.root, 0o711)
        self.logs = self.root / "logs"
        self.logs.mkdir()

    def workdir(self, name: str) -> Path:
        """A fresh folder for one step, handed to the sandbox user.

        Its name is unpredictable, so a trial (in same-user mode, where it can
        write the workspace root) cannot create the next step's folder first.
        """
        d = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.root))
        os.chmod(d, 0o755)
        (d / "tmp").mkdir()
        self.give(d)
        return d

    def give(self, path: Path) -> None:
        """Hand a folder (recursively) to the sandbox user."""
        if self.identity is None:
            return
        uid, gid = self.identity
        os.chown(path, uid, gid)
        for dirpath, dirnames, filenames in os.walk(path):
            for n in dirnames + filenames:
                os.chown(os.path.join(dirpath, n), uid, gid, follow_symlinks=False)

    def readonly(self, name: str) -> Path:
        """A folder the trial can read but not change."""
        d = self.root / name
        d.mkdir()
        os.chmod(d, 0o755)
        return d

    def run(
        self,
        name: str,
        argv: list[str],
        cwd: Path,
        env: dict[str, str],
        limits: ProcessLimits,
    ) -> ProcessResult:
        """Run ``argv`` under the supervisor; never raises for the trial's faults."""
        spec = {
            "argv": argv,
            "cwd": str(cwd),
            "env": env,
            "wall_seconds": limits.wall_seconds,
            "network": limits.network,
            "uid": self.identity[0] if self.identity else None,
            "gid": self.identity[1] if self.identity else None,
            "stdout_path": str(self.logs / f"{name}.stdout.txt"),
            "stderr_path": str(self.logs / f"{name}.stderr.txt"),
            "pid_path": str(self.logs / f"{name}.pid"),
            "bind": os.path.realpath(self.root),
            "binds_ro": data_dirs(),
            "limits": {
                "memory_bytes": limits.memory_bytes,
                "processes": limits.processes,
                "open_files": limits.open_files,
                "file_bytes": limits.file_bytes,
                "disk_bytes": limits.disk_bytes,
                "output_bytes": limits.output_bytes,
                "grace_seconds": limits.grace_seconds,
            },
        }
        started = time.monotonic()
        sup = subprocess.Popen(
            [sys.executable, "-I", str(SUPERVISOR)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            # The supervisor is the trial's parent: its /proc/<pid>/environ must hold no secrets either.
            env={k: os.environ[k] for k in ("PATH", "LANG") if k in os.environ},
        )
        try:
            out, err = sup.communicate(json.dumps(spec).encode(), timeout=limits.wall_seconds + limits.grace_seconds + 60)
        except subprocess.TimeoutExpired:
            sup.kill()
            sup.communicate()
            raise HarnessError(f"supervisor for {name!r} did not return") from None
        except BaseException:
            # Interrupted (Ctrl-C, SIGTERM): let the supervisor end the trial tree.
            sup.terminate()
            try:
                sup.communicate(timeout=limits.grace_seconds + 10)
            except subprocess.TimeoutExpired:
                sup.kill()
            raise
        if sup.returncode < 0:
            # Killed by a signal we did not send: in same-user mode the trial itself can do that.
            return self._supervisor_killed(spec, -sup.returncode, time.monotonic() - started)
        if sup.returncode != 0:
            raise HarnessError(f"supervisor for {name!r} failed ({sup.returncode}): {err.decode(errors='replace')[-2000:]}")
        r = json.loads(out)
        return ProcessResult(
            returncode=r["returncode"],
            wall_seconds=r["wall_seconds"],
            timed_out=r["timed_out"],
            limit=r["limit"],
            peak_rss_bytes=r["peak_rss_bytes"],
            leftover=r["leftover"],
            stdout_path=Path(spec["stdout_path"]),
            stderr_path=Path(spec["stderr_path"]),
            stdout_bytes=r["stdout_bytes"],
            stderr_bytes=r["stderr_bytes"],
            truncated=r["truncated"],
            notes=tuple(r["notes"]),
        )

    @staticmethod
    def _supervisor_killed(spec: dict, signum: int, wall: float) -> ProcessResult:
        """The supervisor died mid-run: end the trial's process group and report it as the trial's fault.

        Its first process already got SIGKILL (``PR_SET_PDEATHSIG``); processes
        that left the group and outlived the supervisor cannot be found here.
        """
        try:
            pgid = int(Path(spec["pid_path"]).read_text())
            os.killpg(pgid, signal.SIGKILL)
        except (OSError, ValueError):
            pass
        for key in ("stdout_path", "stderr_path"):
            p = Path(spec[key])
            if not p.exists():
                p.write_bytes(b"")
        logger.warning("the supervisor of a trial was killed by signal %d; the trial is reported as crashed", signum)
        return ProcessResult(returncode=-signum, wall_seconds=wall, timed_out=False, limit="supervisor",
                             peak_rss_bytes=0, leftover=0, stdout_path=Path(spec["stdout_path"]),
                             stderr_path=Path(spec["stderr_path"]), stdout_bytes=0, stderr_bytes=0,
                             truncated=False, notes=("supervisor-killed",))

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        if self._lease is not None:
            self._lease.release()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
