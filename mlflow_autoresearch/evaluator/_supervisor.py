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


def _proc_table() -> dict[int, tuple[int, str, int]]:
    """pid -> (ppid, state, rss_bytes) for every visible process."""
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
            table[int(name)] = (int(rest[1]), rest[0], int(rest[21]) * PAGE)
        except (IndexError, ValueError):
            continue
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


def _dir_bytes(path: str, cap_entries: int = 200_000) -> int:
    total, seen = 0, 0
    stack = [path]
    while stack and seen < cap_entries:
        try:
            with os.scandir(stack.pop()) as it:
                for e in it:
                    seen += 1
                    try:
                        st = e.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    total += st.st_blocks * 512
                    if e.is_dir(follow_symlinks=False):
                        stack.append(e.path)
        except OSError:
            continue
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


def _sweep(main_pid: int) -> int:
    """Kill everything left in the tree until nothing is; returns how many were left running.

    Counted before the first kill, so children still in the trial's process
    group (killed by the group signal) are reported as well as daemons.
    """
    leftover = len(_live_descendants())
    for _ in range(100):
        if _kill_tree(main_pid, signal.SIGKILL) == 0:
            break
        time.sleep(0.02)
    return leftover


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
    """In a fresh mount namespace: private, size-limited tmp folders and (as root) a /proc hiding other users.

    Runs in the child before it execs (as root, before the uid drop; else inside
    its own user namespace).  Bound back into the private folders, at the same
    paths: the workspace (``spec['bind']``, writable) and the dataset caches
    (``spec['binds_ro']``, read-only).  Returns notes on what could not be done;
    never leaks a mount to the host: if making the namespace private fails,
    nothing is mounted.
    """
    # A new IPC namespace too: System V shared memory a trial leaves behind dies with it.
    if libc.unshare(CLONE_NEWNS | CLONE_NEWIPC) != 0 and libc.unshare(CLONE_NEWNS) != 0:
        return ["tmp-not-private"]
    if not _mount(libc, None, "/", None, MS_REC | MS_PRIVATE, None):
        return ["tmp-not-private"]
    notes = []
    keeps = [(p, False) for p in [spec.get("bind")] if p] + [(p, True) for p in spec.get("binds_ro", ())]
    fds = {}
    for path, readonly in keeps:
        try:
            fds[path] = (os.open(path, os.O_RDONLY | os.O_DIRECTORY), readonly, _readonly_flags(path))
        except OSError:
            notes.append(f"not-bound:{path}")
    lim = spec["limits"]
    for d in PRIVATE_TMP:
        if not os.path.isdir(d) or os.path.islink(d):
            continue
        size = {"/dev/shm": lim.get("memory_bytes") or 2 * 1024**3, "/run/lock": 1024**2}.get(
            d, lim.get("tmp_bytes", 64 * 1024**2))
        if not _mount(libc, "tmpfs", d, "tmpfs", MS_NOSUID | MS_NODEV, f"size={int(size)},mode=1777"):
            notes.append(f"{d}-not-private")
            continue
        for path, (fd, readonly, ro_flags) in fds.items():
            if not (path + "/").startswith(d.rstrip("/") + "/"):
                continue
            os.makedirs(path, mode=0o711, exist_ok=True)
            if not _mount(libc, f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC, None):
                if not readonly:
                    libc.umount2(d.encode(), MNT_DETACH)  # the workspace must stay reachable
                    notes.append(f"{d}-not-private")
                    break
                notes.append(f"not-bound:{path}")
            elif readonly and not _mount(libc, None, path, None, ro_flags, None):
                notes.append(f"writable:{path}")
    for fd, _, _ in fds.values():
        os.close(fd)
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


def _preexec(spec: dict, status_w: int):
    def run() -> None:
        notes = []
        libc = ctypes.CDLL(None, use_errno=True)
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
            preexec_fn=_preexec(spec, status_w),
            pass_fds=(status_w,),
            close_fds=True,
        )
    except OSError as e:
        os.close(status_w)
        err.feed(f"could not start {spec['argv'][0]!r}: {e}\n".encode())
        err.write()
        out.write()
        return {"returncode": 127, "wall_seconds": 0.0, "timed_out": False, "limit": None,
                "peak_rss_bytes": 0, "leftover": 0, "stdout_bytes": 0, "stderr_bytes": err.total,
                "truncated": False, "notes": ["start-failed"]}
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
                used = _dir_bytes(spec["cwd"])
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
    leftover = _sweep(proc.pid)
    for t in readers:
        t.join(timeout=5)
    notes = []
    try:
        status = os.read(status_r, 256).decode()
        if status and status != "ok":
            notes.extend(status.split(","))
    except OSError:
        pass
    if _dir_bytes(spec["cwd"]) > lim["disk_bytes"] and limit_hit is None and not timed_out:
        limit_hit = "disk"
    truncated = out.write() | err.write()
    return {
        "returncode": proc.returncode,
        "wall_seconds": wall,
        "timed_out": timed_out,
        "limit": limit_hit,
        "peak_rss_bytes": peak,
        "leftover": leftover,
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
