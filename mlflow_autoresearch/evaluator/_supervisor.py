"""Runs one untrusted command under hard limits and reports what happened.

This file is executed as a script (``python -I _supervisor.py``) so that it
starts in milliseconds and imports nothing but the standard library.  It reads
a JSON spec on stdin and writes one JSON result on stdout.

Containment, in order of strength:

* The supervisor makes itself a *child subreaper*: every process the trial
  starts, including daemons that double-fork or call ``setsid``, stays in the
  supervisor's process tree, so the final sweep kills all of them.
* When the supervisor runs as root, the trial runs as an unprivileged user
  (``nobody`` by default): it cannot read other processes' environments,
  ``/root``, or write outside world-writable places, and the kernel enforces
  ``RLIMIT_NPROC``.
* rlimits: open files, largest file (``RLIMIT_FSIZE``), processes.
* Polling every 50 ms, at a higher CPU priority than the trial when root: the wall clock, resident memory summed over the tree,
  process count; every second: bytes under the working folder.
* A new network namespace (no interfaces but a down loopback) when the spec
  says ``network: false`` and the kernel allows it.
* As root, a private mount and IPC namespace: fresh size-limited ``/tmp``,
  ``/var/tmp``, ``/dev/shm`` and ``/run/lock`` (only the evaluation's own
  workspace, and read-only the dataset caches, are bound back in), and a
  ``/proc`` that hides other users' processes.  Not root, the same inside a user namespace, without the /proc.  Writes
  outside the working folder are then bounded, and other trials' folders and
  the evaluator's command line are out of sight.
* ``PR_SET_PDEATHSIG``: the trial's first process dies with the supervisor.
* stdout and stderr are read through pipes and kept bounded (head and tail).
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
import stat
import sys
import threading
import time

PR_SET_CHILD_SUBREAPER = 36
PR_SET_PDEATHSIG = 1
CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18
MNT_DETACH = 2
CLONE_NEWIPC = 0x08000000
PRIVATE_TMP = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")  # the world-writable places of a usual system
PAGE = os.sysconf("SC_PAGE_SIZE")
POLL = 0.05
DISK_POLL_MIN = 0.25
SUPERVISOR_NICE = -10  # as root: the supervisor outranks the trial's processes for the CPU
_STOP = []  # set by SIGTERM: the evaluator is shutting down, end the trial now


class Capture:
    """Keeps the first and last bytes of a stream, counting all of them."""

    def __init__(self, limit: int, path: str) -> None:
        self.head_limit = limit // 4
        self.tail_limit = limit - self.head_limit
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0
        self.path = path

    def feed(self, data: bytes) -> None:
        self.total += len(data)
        room = self.head_limit - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail += data
            if len(self.tail) > 2 * self.tail_limit:
                del self.tail[: len(self.tail) - self.tail_limit]

    def write(self) -> bool:
        if len(self.tail) > self.tail_limit:
            del self.tail[: len(self.tail) - self.tail_limit]
        dropped = self.total - len(self.head) - len(self.tail)
        with open(self.path, "wb") as f:
            f.write(self.head)
            if dropped > 0:
                f.write(f"\n[... {dropped} bytes of output dropped by the evaluator ...]\n".encode())
            f.write(self.tail)
        return dropped > 0


def _read(stream, cap: Capture) -> None:
    while True:
        chunk = stream.read1(65536) if hasattr(stream, "read1") else stream.read(65536)
        if not chunk:
            break
        cap.feed(chunk)


def _live_task_rss(pid: int) -> int | None:
    """A zombie thread-group leader whose other threads still run: the group's resident bytes, else None.

    The leader's own /proc/<pid>/stat reads Z with no memory once its main thread
    has exited, while the process (its other threads) runs on.
    """
    try:
        tids = [t for t in os.listdir(f"/proc/{pid}/task") if t != str(pid)]
    except OSError:
        return None
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat", "rb") as f:
                rest = f.read().decode(errors="replace")
        except OSError:
            continue
        fields = rest[rest.rfind(")") + 2 :].split()
        if fields and fields[0] not in ("Z", "X"):
            try:
                return int(fields[21]) * PAGE
            except (IndexError, ValueError):
                return 0
    return None


def _proc_table() -> dict[int, tuple[int, str, int]]:
    """pid -> (ppid, state, rss_bytes) for every visible process.

    A zombie leader with live threads is reported in state ``T`` (threads) with
    the group's memory: it is alive, and must be counted and killed.
    """
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                raw = f.read().decode(errors="replace")
        except OSError:
            continue
        rest = raw[raw.rfind(")") + 2 :].split()
        try:
            ppid, state, rss = int(rest[1]), rest[0], int(rest[21]) * PAGE
        except (IndexError, ValueError):
            continue
        if state == "Z":
            live = _live_task_rss(int(name))
            if live is not None:
                state, rss = "T", live
        table[int(name)] = (ppid, state, rss)
    return table


def _descendants(root: int, table: dict[int, tuple[int, str, int]]) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, stack = [], [root]
    while stack:
        for c in children.get(stack.pop(), ()):
            out.append(c)
            stack.append(c)
    return out


def _dir_bytes(paths: str | list[str], cap_entries: int = 200_000) -> int:
    """Bytes on disk under ``paths``, however deep (walked by directory descriptors, no path length limit)."""
    total, seen = 0, 0
    for path in [paths] if isinstance(paths, str) else paths:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:
            continue
        stack = [fd]  # open descriptors of folders still to list: at most depth x breadth of the frontier
        while stack:
            fd = stack.pop()
            try:
                with os.scandir(fd) as it:
                    for e in it:
                        seen += 1
                        if seen > cap_entries:
                            break
                        try:
                            st = os.stat(e.name, dir_fd=fd, follow_symlinks=False)
                        except OSError:
                            continue
                        total += st.st_blocks * 512
                        if stat.S_ISDIR(st.st_mode):
                            try:
                                stack.append(os.open(e.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd))
                            except OSError:
                                pass  # out of descriptors: this folder goes uncounted
            except OSError:
                pass
            finally:
                os.close(fd)
            if seen > cap_entries:
                for rest in stack:
                    os.close(rest)
                break
    return total


def _reap_zombies(table, main_pid: int) -> None:
    me = os.getpid()
    for pid, (ppid, state, _) in table.items():
        if ppid == me and state == "Z" and pid != main_pid:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass


def _kill_tree(main_pid: int, sig: int) -> int:
    """Signal the trial's process group and every descendant; returns how many were signalled."""
    try:
        os.killpg(main_pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
    table = _proc_table()
    pids = _descendants(os.getpid(), table)
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
    _reap_zombies(table, main_pid)
    return len([p for p in pids if table[p][1] != "Z"])


def _live_descendants() -> list[int]:
    table = _proc_table()
    return [p for p in _descendants(os.getpid(), table) if table[p][1] != "Z"]


def _sweep(main_pid: int, cgroup: Cgroup | None, uid: int | None) -> tuple[int, int]:
    """Kill everything left of the trial until nothing is; (left running, survivors).

    ``left running`` is counted before the first kill, so children still in the
    trial's process group are reported as well as daemons.  The cgroup (when
    there is one) is killed whole by the kernel; the process tree is swept until
    two passes in a row find nothing alive, zombie leaders with live threads
    included; as root, every process of the trial's uid is killed too.
    ``survivors``: what was still alive after all that (the trial then fails).
    """
    leftover = len(_live_descendants())
    if cgroup is not None:
        leftover = max(leftover, len(cgroup.pids()))
    quiet, deadline = 0, time.monotonic() + 10
    while time.monotonic() < deadline:
        alive = 0
        if cgroup is not None:
            alive += cgroup.kill()
        alive += _kill_tree(main_pid, signal.SIGKILL)
        if uid is not None:
            alive += _kill_uid(uid)
        quiet = quiet + 1 if alive == 0 else 0
        if quiet >= 2:
            return leftover, 0
        time.sleep(0.02)
    survivors = len(_live_descendants()) + (len(cgroup.pids()) if cgroup is not None else 0)
    return leftover, max(survivors, 1)


def _kill_uid(uid: int) -> int:
    """SIGKILL every live process of ``uid`` (a leased trial uid: nothing else runs as it)."""
    n = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.stat(f"/proc/{name}").st_uid != uid:
                continue
            with open(f"/proc/{name}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
            if state == b"Z" and _live_task_rss(int(name)) is None:
                continue
            os.kill(int(name), signal.SIGKILL)
            n += 1
        except (OSError, IndexError):
            continue
    return n


class Cgroup:
    """A cgroup v2 of its own for one trial, where the kernel offers one (as root).

    ``cgroup.kill`` ends every process in it at once, however it forked;
    ``cpu.stat`` gives the CPU time of all of them; ``memory.max`` and
    ``pids.max`` are set when those controllers are enabled for it.
    """

    def __init__(self, path: str) -> None:
        self.path = path

    @classmethod
    def create(cls, memory: int | None, pids: int) -> Cgroup | None:
        base = _cgroup2_base()
        if base is None:
            return None
        try:
            parent = os.path.join(base, "autoresearch")
            os.makedirs(parent, exist_ok=True)
            path = os.path.join(parent, f"trial-{os.getpid()}-{os.urandom(4).hex()}")
            os.mkdir(path)
        except OSError:
            return None
        cg = cls(path)
        try:
            with open(os.path.join(parent, "cgroup.controllers")) as f:
                available = f.read().split()
        except OSError:
            available = []
        for ctl, name, value in (("memory", "memory.max", memory), ("pids", "pids.max", pids)):
            if value and ctl in available:
                try:
                    _write(os.path.join(parent, "cgroup.subtree_control"), f"+{ctl}")
                    _write(os.path.join(path, name), str(int(value)))
                except OSError:
                    pass
        return cg

    def join(self) -> None:
        """Move the calling process in (in the child, before it drops root)."""
        _write(os.path.join(self.path, "cgroup.procs"), "0")

    def pids(self) -> list[int]:
        try:
            with open(os.path.join(self.path, "cgroup.procs")) as f:
                return [int(x) for x in f.read().split()]
        except OSError:
            return []

    def kill(self) -> int:
        """Kill everything in it; returns how many processes it still held."""
        n = len(self.pids())
        if n:
            try:
                _write(os.path.join(self.path, "cgroup.kill"), "1")
            except OSError:
                for pid in self.pids():
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
        return n

    def cpu_seconds(self) -> float | None:
        try:
            with open(os.path.join(self.path, "cpu.stat")) as f:
                stat = dict(line.split() for line in f if line.strip())
            return (int(stat["user_usec"]) + int(stat["system_usec"])) / 1e6
        except (OSError, KeyError, ValueError):
            return None

    def remove(self) -> None:
        for _ in range(100):
            try:
                os.rmdir(self.path)
                return
            except OSError:
                time.sleep(0.02)


def _cgroup2_base() -> str | None:
    """Where this process's cgroup v2 lives, if it may make children there (root, a writable hierarchy)."""
    if os.geteuid() != 0:
        return None
    try:
        with open("/proc/self/mountinfo") as f:
            mounts = [line.split() for line in f]
        with open("/proc/self/cgroup") as f:
            mine = next((line.strip()[3:] for line in f if line.startswith("0::")), None)
    except OSError:
        return None
    for m in mounts:
        sep = m.index("-")
        if m[sep + 1] == "cgroup2" and mine is not None:
            base = m[4] + (mine if mine != "/" else "")
            if os.access(base, os.W_OK) and os.path.exists(os.path.join(base, "cgroup.procs")):
                return base
    return None


def _enc(v: str | None) -> bytes | None:
    return v.encode() if isinstance(v, str) else v


def _mount(libc, source: str | None, target: str, fstype: str | None, flags: int, data: str | None) -> bool:
    return libc.mount(_enc(source), _enc(target), _enc(fstype), flags, _enc(data)) == 0


def _readonly_flags(path: str) -> int:
    """Remount flags for a read-only bind of ``path`` that keep the flags its mount has (a user
    namespace may not clear them)."""
    f = os.statvfs(path).f_flag
    flags = MS_BIND | MS_REMOUNT | MS_RDONLY
    for st_flag, ms_flag in ((os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV), (os.ST_NOEXEC, MS_NOEXEC),
                             (os.ST_NOATIME, 1024), (os.ST_NODIRATIME, 2048), (os.ST_RELATIME, 1 << 21)):
        if f & st_flag:
            flags |= ms_flag
    return flags


def _private_mounts(libc, spec: dict, hide_proc: bool) -> list[str]:
    """In a fresh mount namespace: private tmp folders, hidden homes, sealed data; (as root) a /proc hiding others.

    Runs in the child before it execs (as root, before the uid drop; else inside
    its own user namespace).  What it mounts, shallowest path first:

    * size-limited private tmpfs on ``/tmp``, ``/var/tmp``, ``/dev/shm``, ``/run/lock``;
    * an empty read-only tmpfs on each of ``spec['covers']`` (the evaluator's
      home, and the dataset caches when the recipe declares its data);
    * bound back at the same paths: the workspace (``spec['bind']``, writable),
      ``spec['binds_ro']`` read-only (the interpreter and its packages where a
      cover or a private tmp hides them, the data training may read), and
      ``spec['local_binds']`` (``[source, target]``: the recipe's ``data.local``
      folders inside the working folder), read-only;
    * ``spec['masks']`` made empty (evaluation data training may not read).

    Returns notes on what could not be done; a note starting ``fatal:`` means
    the trial must not run.  Never leaks a mount to the host: if making the
    namespace private fails, nothing is mounted.
    """
    masks = spec.get("masks") or []
    # A new IPC namespace too: System V shared memory a trial leaves behind dies with it.
    if libc.unshare(CLONE_NEWNS | CLONE_NEWIPC) != 0 and libc.unshare(CLONE_NEWNS) != 0:
        return ["tmp-not-private"] + (["fatal:evaluation data cannot be sealed without a mount namespace"] if masks else [])
    if not _mount(libc, None, "/", None, MS_REC | MS_PRIVATE, None):
        return ["tmp-not-private"] + (["fatal:evaluation data cannot be sealed without a mount namespace"] if masks else [])
    notes = []
    lim = spec["limits"]
    ops = []  # (target, kind, extra); kind: tmp | cover | bind
    for d in PRIVATE_TMP:
        if os.path.isdir(d) and not os.path.islink(d):
            size = {"/dev/shm": lim.get("memory_bytes") or 2 * 1024**3, "/run/lock": 1024**2}.get(
                d, lim.get("tmp_bytes", 64 * 1024**2))
            ops.append((d, "tmp", int(size)))
    for d in spec.get("covers") or []:
        if os.path.isdir(d) and not os.path.islink(d):
            ops.append((os.path.realpath(d), "cover", None))
    binds = [(p, p, False) for p in [spec.get("bind")] if p]
    binds += [(p, p, True) for p in spec.get("binds_ro") or []]
    binds += [(src, dst, True) for src, dst in spec.get("local_binds") or []]
    for src, dst, readonly in binds:
        try:
            fd = os.open(src, os.O_PATH | os.O_CLOEXEC)
            ops.append((dst, "bind", (fd, readonly, _readonly_flags(src), os.path.isdir(src), src == spec.get("bind"))))
        except OSError:
            notes.append(f"not-bound:{src}")
    ops.sort(key=lambda op: (op[0].rstrip("/").count("/"), {"tmp": 0, "cover": 1, "bind": 2}[op[1]]))
    ours: list[str] = []  # folders on mounts made here: mount points may be created inside them
    covers: list[str] = []

    def inside_ours(path: str) -> bool:
        return any((path + "/").startswith(r.rstrip("/") + "/") for r in ours)

    def make_point(path: str, is_dir: bool) -> bool:
        if os.path.lexists(path):
            return not os.path.islink(path)
        if not inside_ours(path):
            return False
        try:
            if is_dir:
                os.makedirs(path, mode=0o755, exist_ok=True)
            else:
                os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))
        except OSError:
            return False
        return True

    for target, kind, extra in ops:
        if kind == "tmp":
            if _mount(libc, "tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, f"size={extra},mode=1777"):
                ours.append(target)
            else:
                notes.append(f"{target}-not-private")
        elif kind == "cover":
            if make_point(target, True) and _mount(libc, "tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV,
                                                   "size=1m,mode=755"):
                ours.append(target)
                covers.append(target)
            else:
                notes.append(f"not-hidden:{target}")
        else:
            fd, readonly, ro_flags, is_dir, workspace = extra
            if not make_point(target, is_dir) or not _mount(libc, f"/proc/self/fd/{fd}", target, None,
                                                             MS_BIND | MS_REC, None):
                if workspace:
                    # The workspace must stay reachable: give up the private tmp that would hide it.
                    for d, _, _ in [op for op in ops if op[1] == "tmp"]:
                        if (target + "/").startswith(d + "/") and d in ours:
                            libc.umount2(d.encode(), MNT_DETACH)
                            notes.append(f"{d}-not-private")
                else:
                    notes.append(f"not-bound:{target}")
            else:
                if workspace:
                    ours.append(target)
                if readonly and not _mount(libc, None, target, None, ro_flags, None):
                    notes.append(f"writable:{target}")
            os.close(fd)
    for m in masks:
        if not os.path.lexists(m):
            continue  # not visible here at all
        if os.path.isdir(m) and not os.path.islink(m):
            done = _mount(libc, "tmpfs", m, "tmpfs", MS_NOSUID | MS_NODEV | MS_RDONLY, "size=4k,mode=555")
        else:
            done = _mount(libc, "/dev/null", m, None, MS_BIND, None)
            done = done and _mount(libc, None, m, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID, None)
        if not done:
            notes.append(f"fatal:evaluation data {m} could not be sealed (errno {ctypes.get_errno()})")
    for c in covers:
        if not _mount(libc, None, c, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, "size=1m,mode=755"):
            notes.append(f"writable:{c}")
    if hide_proc and not _mount(libc, "proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=2"):
        notes.append("proc-not-hidden")
    os.chdir(spec["cwd"])  # through the bind mount, so relative and absolute paths agree
    return notes


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _user_namespace(libc, network: bool) -> bool:
    """Not root: enter a user namespace that maps only our own uid and gid (and a network one if asked).

    The trial keeps its files and its kernel identity, but other processes of
    the same user (the evaluator among them) can no longer be read through
    /proc, and it gets a private mount namespace for its tmp folders.
    """
    uid, gid = os.geteuid(), os.getegid()
    if libc.unshare(CLONE_NEWUSER | (0 if network else CLONE_NEWNET)) != 0:
        return False
    try:
        _write("/proc/self/uid_map", f"{uid} {uid} 1")
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/gid_map", f"{gid} {gid} 1")
    except OSError:
        pass  # unmapped: file access is unchanged; ids merely read back as the overflow id
    return True


def _same_user_processes() -> int:
    uid, n = os.getuid(), 0
    for name in os.listdir("/proc"):
        try:
            if name.isdigit() and os.stat(f"/proc/{name}").st_uid == uid:
                n += 1
        except OSError:
            continue
    return n


def _preexec(spec: dict, status_w: int, cgroup: Cgroup | None):
    def run() -> None:
        notes = []
        libc = ctypes.CDLL(None, use_errno=True)
        if cgroup is not None:
            try:
                cgroup.join()
            except OSError:
                notes.append("no-cgroup")
        uid, gid = spec.get("uid"), spec.get("gid")
        network = spec.get("network", True)
        lim = spec["limits"]
        nproc = None
        if os.geteuid() == 0:
            os.setpriority(os.PRIO_PROCESS, 0, spec.get("trial_nice", 0))  # undo the supervisor's boost
            if not network and libc.unshare(CLONE_NEWNET) != 0:
                notes.append("network-not-isolated")
            if uid is not None:
                notes.extend(_private_mounts(libc, spec, hide_proc=True))
                nproc = lim["processes"]
        else:
            # RLIMIT_NPROC counts all of this user's processes: allow the trial its share on top.
            nproc = _same_user_processes() + lim["processes"]
            if _user_namespace(libc, network):
                notes.extend(_private_mounts(libc, spec, hide_proc=False))
            else:
                notes.append("no-user-namespace")
                if not network:
                    notes.append("network-not-isolated")
                if spec.get("masks"):
                    notes.append("fatal:evaluation data cannot be sealed without a user namespace")
        if uid is not None and os.geteuid() == 0 and uid == 0:
            notes.append("fatal:refusing to run a trial as root")
        if any(n.startswith("fatal:") for n in notes):
            os.write(status_w, ",".join(notes).encode())
            os._exit(126)
        resource.setrlimit(resource.RLIMIT_NOFILE, (lim["open_files"], lim["open_files"]))
        resource.setrlimit(resource.RLIMIT_FSIZE, (lim["file_bytes"], lim["file_bytes"]))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if uid is not None:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
        if nproc is not None:
            soft, hard = resource.getrlimit(resource.RLIMIT_NPROC)
            cap = nproc if hard == resource.RLIM_INFINITY else min(nproc, hard)
            resource.setrlimit(resource.RLIMIT_NPROC, (cap, cap))
        # After the uid change, which clears it: the trial's first process dies with the supervisor.
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        os.write(status_w, (",".join(notes) or "ok").encode())
        os.close(status_w)

    return run


def supervise(spec: dict) -> dict:
    import subprocess  # here, so the module itself imports fast for tests

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    if os.geteuid() == 0:
        # A trial's busy processes (a fork bomb spinning at the process cap) must not starve the watcher.
        os.setpriority(os.PRIO_PROCESS, 0, SUPERVISOR_NICE)
    lim = spec["limits"]
    out = Capture(lim["output_bytes"], spec["stdout_path"])
    err = Capture(lim["output_bytes"], spec["stderr_path"])
    status_r, status_w = os.pipe()
    cgroup = (Cgroup.create(lim.get("memory_bytes"), lim["processes"])
              if spec.get("uid") is not None and spec.get("cgroup", True) else None)
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            spec["argv"],
            cwd=spec["cwd"],
            env=spec["env"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=_preexec(spec, status_w, cgroup),
            pass_fds=(status_w,),
            close_fds=True,
        )
    except OSError as e:
        os.close(status_w)
        err.feed(f"could not start {spec['argv'][0]!r}: {e}\n".encode())
        err.write()
        out.write()
        if cgroup is not None:
            cgroup.remove()
        return {"returncode": 127, "wall_seconds": 0.0, "timed_out": False, "limit": None,
                "peak_rss_bytes": 0, "leftover": 0, "survivors": 0, "cpu_seconds": 0.0, "stdout_bytes": 0,
                "stderr_bytes": err.total, "truncated": False, "notes": ["start-failed"]}
    os.close(status_w)
    readers = [
        threading.Thread(target=_read, args=(proc.stdout, out), daemon=True),
        threading.Thread(target=_read, args=(proc.stderr, err), daemon=True),
    ]
    for t in readers:
        t.start()

    if spec.get("pid_path"):
        # For the evaluator, should this supervisor be killed: the trial's process group.
        with open(spec["pid_path"], "w") as f:
            f.write(str(proc.pid))
    deadline = start + spec["wall_seconds"]
    mem_limit = lim.get("memory_bytes")
    limit_hit, timed_out, peak, next_disk = None, False, 0, start + DISK_POLL_MIN
    term_sent_at = None
    while proc.poll() is None:
        now = time.monotonic()
        if term_sent_at is None:
            table = _proc_table()
            tree = [p for p in _descendants(os.getpid(), table) if table[p][1] != "Z"]
            rss = sum(table[p][2] for p in tree)
            peak = max(peak, rss)
            if _STOP:
                limit_hit = "stopped"
            elif now >= deadline:
                timed_out = True
            elif mem_limit and rss > mem_limit:
                limit_hit = "memory"
            elif len(tree) >= lim["processes"]:
                # At the cap (RLIMIT_NPROC makes forks fail there): a fork bomb, not a slow program.
                limit_hit = "processes"
            elif now >= next_disk:
                used = _dir_bytes(spec.get("disk_paths") or spec["cwd"])
                # Scan often while scans are cheap; a folder of many files is scanned less often.
                next_disk = time.monotonic() + max(DISK_POLL_MIN, 5 * (time.monotonic() - now))
                if used > lim["disk_bytes"]:
                    limit_hit = "disk"
            if timed_out or limit_hit:
                # Memory and process blow-ups get no grace: they harm the machine.
                sig = signal.SIGTERM if timed_out and lim["grace_seconds"] > 0 else signal.SIGKILL
                _kill_tree(proc.pid, sig)
                term_sent_at = now
        elif now - term_sent_at >= lim["grace_seconds"]:
            _kill_tree(proc.pid, signal.SIGKILL)
        time.sleep(POLL)
    wall = time.monotonic() - start
    leftover, survivors = _sweep(proc.pid, cgroup, spec.get("uid") if spec.get("sweep_uid") else None)
    for t in readers:
        t.join(timeout=5)
    notes = []
    try:
        status = os.read(status_r, 4096).decode(errors="replace")
        if status and status != "ok":
            notes.extend(status.split(","))
    except OSError:
        pass
    if any(n.startswith("fatal:") for n in notes):
        limit_hit = "sandbox"
    if _dir_bytes(spec.get("disk_paths") or spec["cwd"]) > lim["disk_bytes"] and limit_hit is None and not timed_out:
        limit_hit = "disk"
    if survivors and limit_hit is None:
        limit_hit = "survivor"
    cpu = cgroup.cpu_seconds() if cgroup is not None else None
    if cpu is None:
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)  # every reaped process of the tree: we are its subreaper
        cpu = ru.ru_utime + ru.ru_stime
    if cgroup is not None:
        cgroup.remove()
    truncated = out.write() | err.write()
    return {
        "returncode": proc.returncode,
        "wall_seconds": wall,
        "timed_out": timed_out,
        "limit": limit_hit,
        "peak_rss_bytes": peak,
        "leftover": leftover,
        "survivors": survivors,
        "cpu_seconds": cpu,
        "stdout_bytes": out.total,
        "stderr_bytes": err.total,
        "truncated": truncated,
        "notes": notes,
    }


def main() -> None:
    spec = json.load(sys.stdin)
    signal.signal(signal.SIGTERM, lambda *_: _STOP.append(True))
    result = supervise(spec)
    sys.stdout.write(json.dumps(result))


if __name__ == "__main__":
    main()
