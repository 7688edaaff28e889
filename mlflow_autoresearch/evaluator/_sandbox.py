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
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from mlflow_autoresearch._errors import HarnessError, SandboxError

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
# "0" turns the per-trial cgroup off (to exercise the sweep that stands in where the kernel offers none).
CGROUP_ENV = "AUTORESEARCH_CGROUP"
# The recipes' dataset cache: $AUTORESEARCH_DATA_DIR, else this.  Trials see it read-only, even
# when it lies under /tmp or /var/tmp, which are otherwise private to each trial.
DEFAULT_DATA_DIR = "/var/tmp/autoresearch-data"


def data_dirs() -> list[str]:
    """Existing dataset cache folders, as real paths ($AUTORESEARCH_DATA_DIR first)."""
    found = []
    for p in (os.environ.get("AUTORESEARCH_DATA_DIR"), DEFAULT_DATA_DIR):
        if p and os.path.isdir(p) and os.path.realpath(p) not in found:
            found.append(os.path.realpath(p))
    return found


@dataclass(frozen=True)
class View:
    """What one step sees of the machine besides its working folder (see ``_supervisor._private_mounts``).

    ``binds_ro``: paths shown read-only at the same path; ``covers``: folders
    hidden behind an empty read-only tmpfs; ``masks``: paths made empty (sealed
    evaluation data); ``local_binds``: ``(source, target)`` read-only binds.
    """

    binds_ro: tuple[str, ...] = ()
    covers: tuple[str, ...] = ()
    masks: tuple[str, ...] = ()
    local_binds: tuple[tuple[str, str], ...] = ()


def hidden_homes() -> list[str]:
    """Homes a trial never sees: root's, and the evaluator's own (credentials, tracking stores, caches)."""
    homes = ["/root"]
    home = os.path.realpath(os.path.expanduser("~"))
    if home not in ("/", *homes) and os.path.isdir(home):
        homes.append(home)
    return [h for h in homes if os.path.isdir(h)]


def interpreter_paths() -> list[str]:
    """Folders the interpreter needs: its prefixes and every folder on ``sys.path`` (real paths, minimal).

    Bound read-only into each trial's namespace wherever a private tmp or a
    hidden home would hide them: a venv under /tmp, pyenv under /root, conda
    under $HOME all keep working under the trial uid.
    """
    cands = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
             os.path.dirname(sys.executable), os.path.dirname(os.path.realpath(sys.executable))}
    cands.update(p for p in sys.path if p and os.path.isabs(p))
    for name, mod in list(sys.modules.items()):  # setuptools' editable installs map packages to source folders
        mapping = getattr(mod, "MAPPING", None) if name.startswith("__editable__") else None
        if isinstance(mapping, dict):
            cands.update(os.path.dirname(str(v)) for v in mapping.values())
    real = sorted({os.path.realpath(c) for c in cands if c and os.path.isdir(c)})
    out: list[str] = []
    for r in real:
        if not any((r + "/").startswith(o.rstrip("/") + "/") for o in out):
            out.append(r)
    return out


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
    cpu_seconds: float = 0.0  # user+sys of the whole process tree (cgroup cpu.stat, else reaped children)
    survivors: int = 0  # processes still alive after the final sweep (the step then fails)
    stdout_path: Path = Path(os.devnull)
    stderr_path: Path = Path(os.devnull)
    stdout_bytes: int = 0
    stderr_bytes: int = 0
    truncated: bool = False
    notes: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out and self.limit is None

    def stdout(self) -> str:
        return read_bounded(self.stdout_path)

    def stderr(self) -> str:
        return read_bounded(self.stderr_path)


_IDENTITY_CACHE: dict[str, tuple[int, int] | None] = {}


def sandbox_identity() -> tuple[int, int] | None:
    """(uid, gid) to run trials as, or None to keep the current user.

    As root, trials never run as root: each :class:`Workspace` leases its own
    uids (group ``nobody``'s), and :func:`check_trial_interpreter` proves,
    inside the same namespaces, that they can run this interpreter before any
    trial does (else a :class:`HarnessError` names the fix).  Setting
    ``$AUTORESEARCH_SANDBOX_USER`` runs every trial as that named user instead;
    an empty value keeps root, an explicit opt-out for debugging the evaluator
    itself, never for a model's code.  This returns the base identity.
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
        if pw.pw_uid == 0:
            raise HarnessError(f"sandbox user {name!r} is root; name an unprivileged user in {SANDBOX_USER_ENV}")
        identity = (pw.pw_uid, pw.pw_gid)
    else:
        logger.warning("trials run as root: %s is set and empty, which is for debugging the evaluator only, "
                       "never for a model's code", SANDBOX_USER_ENV)
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


_CHECKED: set[tuple] = set()
_CHECK_PY = "import encodings, json, os, sys; print(json.dumps([sys.prefix, sys.base_prefix, sys.version, os.getuid()]))"


def check_trial_interpreter(workspace: Workspace | None = None) -> None:
    """Prove that a trial can start this interpreter, inside the sandbox, as the trial uid.

    Runs ``python -c ...`` through the real supervisor with the same uid,
    namespaces and mounts a trial gets (the check that matters: a check outside
    the namespace passes where the trial then fails, e.g. a venv under the
    private /tmp).  Cached per process once it passed.  ``autoresearch doctor``
    calls it; every evaluation calls it before its first step.

    Raises:
        SandboxError: (a HarnessError, exit code 2) the trial uid cannot run the interpreter; the message
            names the interpreter, what failed and the fix.  Never falls back
            to running trials with more rights.
    """
    key = (sys.executable, os.geteuid(), os.environ.get(SANDBOX_USER_ENV), tuple(interpreter_paths()))
    if key in _CHECKED:
        return
    own = workspace is None
    ws = workspace or Workspace()
    try:
        home = ws.workdir("check")
        r = ws.run("interpreter-check", [sys.executable, "-c", _CHECK_PY], home, scrubbed_env(home),
                   ProcessLimits(wall_seconds=60, processes=32))
        out = r.stdout().strip().splitlines()
        err = r.stderr().strip()
        uid = ws.identity[0] if ws.identity else os.geteuid()
        try:
            *seen, seen_uid = json.loads(out[-1]) if out else (None, None, None, None)
        except ValueError:
            seen, seen_uid = [], None
        # The same interpreter, not merely one: a libpython the uid cannot reach makes the loader fall
        # back to the system's, which then runs with another standard library.
        if r.returncode != 0 or seen != [sys.prefix, sys.base_prefix, sys.version] or (ws.identity and seen_uid != uid):
            fatal = [n[6:] for n in r.notes if n.startswith("fatal:")]
            why = "; ".join(fatal) or (err.splitlines()[-1] if err else f"exit code {r.returncode}")
            raise SandboxError(
                f"the sandbox's trial uid {uid} cannot run {sys.executable} inside the sandbox ({why}). "
                f"Fix: make the interpreter's folders readable and traversable by other users "
                f"(e.g. chmod o+rx on {sys.prefix} and chmod o+x on each folder above it), or run the evaluator "
                f"from an interpreter installed under /usr or /opt. Trials never fall back to running as "
                f"{'root' if os.geteuid() == 0 else 'you'} outside the sandbox.")
    finally:
        if own:
            ws.cleanup()
    _CHECKED.add(key)


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
    """A private root for one evaluation: per-step working folders, logs, a pristine copy.

    The root is traversable but not listable by others.  As root, training
    steps run as one leased uid and protected evaluation steps as a second one:
    training can never write what the evaluation reads.  Everything else stays
    owned by the evaluator.
    """

    def __init__(self, base: str | None = None) -> None:
        self.identity = sandbox_identity()
        self.eval_identity = self.identity
        self._leases: list[UidLease] = []
        if self.identity is not None and SANDBOX_USER_ENV not in os.environ:
            train, evaluate = UidLease(), UidLease()
            self._leases = [train, evaluate]
            self.eval_identity = (evaluate.uid, self.identity[1])
            self.identity = (train.uid, self.identity[1])
        self.root = Path(tempfile.mkdtemp(prefix="autoresearch-", dir=base))
        os.chmod(self.root, 0o711)
        self.logs = self.root / "logs"
        self.logs.mkdir()

    @property
    def leased(self) -> bool:
        """Whether the uids are this evaluation's own (so every process of them may be killed)."""
        return bool(self._leases)

    def workdir(self, name: str, *, for_eval: bool = False) -> Path:
        """A fresh folder for one step, handed to the step's user.

        Its name is unpredictable, so a trial (in same-user mode, where it can
        write the workspace root) cannot create the next step's folder first.
        """
        d = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.root))
        os.chmod(d, 0o755)
        (d / "tmp").mkdir()
        self.give(d, for_eval=for_eval)
        return d

    def give(self, path: Path, *, for_eval: bool = False) -> None:
        """Hand a folder (recursively) to the step's user."""
        identity = self.eval_identity if for_eval else self.identity
        if identity is None:
            return
        uid, gid = identity
        os.chown(path, uid, gid)
        for dirpath, dirnames, filenames in os.walk(path):
            for n in dirnames + filenames:
                os.chown(os.path.join(dirpath, n), uid, gid, follow_symlinks=False)

    def take_back(self, path: Path) -> None:
        """Make a finished step's folder the evaluator's alone: no later step of any uid can read or write it."""
        if self.identity is not None:
            os.chown(path, 0, 0, follow_symlinks=False)
        os.chmod(path, 0o700, follow_symlinks=False)

    def readonly(self, name: str) -> Path:
        """A folder the trial can read but not change."""
        d = self.root / name
        d.mkdir()
        os.chmod(d, 0o755)
        return d

    def kill_all(self, *, for_eval: bool = False) -> int:
        """Kill every process of a leased step uid, until none is left; how many there were."""
        identity = self.eval_identity if for_eval else self.identity
        if not self.leased or identity is None:
            return 0
        total = 0
        for _ in range(200):
            n = kill_processes_of(identity[0])
            total += n
            if n == 0:
                return total
            time.sleep(0.01)
        raise HarnessError(f"processes of the sandbox uid {identity[0]} survive SIGKILL")

    def run(
        self,
        name: str,
        argv: list[str],
        cwd: Path,
        env: dict[str, str],
        limits: ProcessLimits,
        *,
        view: View | None = None,
        for_eval: bool = False,
    ) -> ProcessResult:
        """Run ``argv`` under the supervisor; never raises for the trial's faults."""
        view = view or View()
        identity = self.eval_identity if for_eval else self.identity
        covers = [*hidden_homes(), *view.covers]
        # Every folder of the interpreter, read-only: shown where a private tmp or a hidden home would hide
        # it, and never writable (a sitecustomize.py planted in your venv would run in the protected step).
        binds = interpreter_paths() + list(view.binds_ro)
        spec = {
            "argv": argv,
            "cwd": str(cwd),
            "env": env,
            "wall_seconds": limits.wall_seconds,
            "network": limits.network,
            "uid": identity[0] if identity else None,
            "gid": identity[1] if identity else None,
            "sweep_uid": self.leased,
            "cgroup": os.environ.get(CGROUP_ENV, "1") != "0",
            "stdout_path": str(self.logs / f"{name}.stdout.txt"),
            "stderr_path": str(self.logs / f"{name}.stderr.txt"),
            "pid_path": str(self.logs / f"{name}.pid"),
            "bind": os.path.realpath(self.root),
            "binds_ro": binds,
            "covers": covers,
            "masks": list(view.masks),
            "local_binds": [list(b) for b in view.local_binds],
            "disk_paths": [os.path.realpath(self.root)],
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
            cpu_seconds=float(r.get("cpu_seconds") or 0.0),
            survivors=int(r.get("survivors") or 0),
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
        """Kill what is left of the leased uids, then remove every folder (however deep)."""
        for lease in self._leases:
            kill_processes_of(lease.uid)
        try:
            remove_tree(self.root)
        except OSError as e:
            logger.warning("could not remove the workspace %s: %s", self.root, e)
        for lease in self._leases:
            lease.release()
        self._leases = []

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def remove_tree(root: Path | str) -> None:
    """Remove a folder tree a trial made: no recursion limit, no path length limit, no symlink followed.

    Walks down with directory file descriptors (one open at a time), so a chain
    of folders 100,000 deep is removed like a shallow one; folders the trial
    made unreadable are made readable first (as their owner).
    """
    root = os.fspath(root)
    try:
        st = os.lstat(root)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(root)
        return
    names: list[str] = []  # the path from root down to the current folder
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        while True:
            sub = None
            with os.scandir(fd) as it:
                for e in it:
                    if e.is_dir(follow_symlinks=False):
                        sub = e.name
                    else:
                        try:
                            os.unlink(e.name, dir_fd=fd)
                        except FileNotFoundError:
                            pass
            if sub is not None:
                try:
                    os.chmod(sub, 0o700, dir_fd=fd, follow_symlinks=False)
                except (OSError, NotImplementedError):
                    pass
                child = os.open(sub, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                os.close(fd)
                fd, names = child, [*names, sub]
                continue
            if not names:
                break
            parent = os.open("..", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = parent
            os.rmdir(names.pop(), dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(root)


READ_LIMIT = 1_000_000


def open_trial_file(path: Path | str, dir_fd: int | None = None) -> int | None:
    """Open a file the trial controls, safely: no symlink followed, never blocking, regular files only.

    Returns a file descriptor, or None when the path is missing, a link, a FIFO,
    a device or anything but a regular file.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            return None
    except OSError:
        os.close(fd)
        return None
    return fd


def read_trial_file(path: Path | str, limit: int = READ_LIMIT) -> bytes | None:
    """At most ``limit`` bytes of a regular file the trial controls (see :func:`open_trial_file`), or None."""
    fd = open_trial_file(path)
    if fd is None:
        return None
    with os.fdopen(fd, "rb") as f:
        return f.read(limit)


def read_bounded(path: Path, limit: int = 4 * 1024**2) -> str:
    """A log the supervisor wrote, as text (bounded: logs are capped when written)."""
    data = read_trial_file(path, limit)
    return "" if data is None else data.decode(errors="replace")


def sha256_of_trial_file(path: Path | str) -> str | None:
    """sha256 of a regular file the trial controls, or None for a link, FIFO, device or missing file."""
    import hashlib

    fd = open_trial_file(path)
    if fd is None:
        return None
    h = hashlib.sha256()
    with os.fdopen(fd, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def copy_trial_file(src: Path, dest: Path, limit: int) -> int | None:
    """Copy a regular file of the trial's folder (no links, no FIFOs, at most ``limit`` bytes); its size, or None."""
    fd = open_trial_file(src)
    if fd is None:
        return None
    size = 0
    with os.fdopen(fd, "rb") as f, open(dest, "wb") as out:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            size += len(chunk)
            if size > limit:
                break
            out.write(chunk)
    os.chmod(dest, 0o644)
    return size
