"""A one-node SLURM cluster on 127.0.0.1, in one folder, for a laptop, CI and the tests.

    python -m mlflow_autoresearch.slurm.local start [--dir DIR] [--cpus N]   # prints: export SLURM_CONF=...
    python -m mlflow_autoresearch.slurm.local stop --dir DIR

Debian's packages (``apt-get install slurmctld slurmd munge slurm-client``)
provide the daemons.  Everything this module starts lives under one folder:
its own munge key and socket, ``slurm.conf`` on two free ports, state, spool,
pid and log files; nothing in /etc is read or written, so it runs beside any
other SLURM or munge on the machine.  The configuration needs no cgroups
(``proctrack/linuxproc``, ``task/none``) and no accounting database.

``stop`` cancels the cluster's jobs, stops the three daemons, and kills any
job step left behind: every process it started carries
``AUTORESEARCH_SLURM_DIR=<folder>`` in its environment, and only those are
signalled.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlflow_autoresearch._errors import UsageError

logger = logging.getLogger(__name__)

MARK = "AUTORESEARCH_SLURM_DIR"
BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "scontrol")
INSTALL_HINT = "apt-get install slurmctld slurmd munge slurm-client"


def missing_binaries() -> list[str]:
    """The SLURM and munge programs this machine lacks (``[]`` when a local cluster can start)."""
    sbin = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    return [b for b in BINARIES if shutil.which(b, path=sbin) is None]


def _which(name: str) -> str:
    found = shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))
    if found is None:
        raise UsageError(f"{name} is not installed; on Debian or Ubuntu: {INSTALL_HINT}")
    return found


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _memory_mb() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return max(int(line.split()[1]) // 1024 - 512, 512)
    except OSError:
        pass
    return 4096


SLURM_CONF = """\
# A one-node cluster on 127.0.0.1 written by mlflow_autoresearch.slurm.local; no cgroups, no accounting.
ClusterName={cluster}
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser={user}
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={dir}/munge/munge.socket
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd.pid
SlurmctldLogFile={dir}/log/slurmctld.log
SlurmdLogFile={dir}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
# Short waits: a killed job is gone in seconds, a finished one stays visible for 10 minutes.
KillWait=2
MinJobAge=600
MessageTimeout=20
SlurmdTimeout=60
InactiveLimit=0
NodeName={host} NodeAddr=127.0.0.1 NodeHostname={host} CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName={partition} Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


class LocalSlurm:
    """A one-node SLURM cluster under ``folder``.  ``start()``, use ``env``, ``stop()``.

    ``cpus`` is what the node offers jobs (it may exceed the machine's cores:
    ``config_overrides``); each job asks for one CPU unless told otherwise, so
    ``cpus`` bounds how many jobs run at once.
    """

    def __init__(self, folder: Path | str | None = None, *, cpus: int = 4, partition: str = "debug") -> None:
        self.dir = Path(folder or tempfile.mkdtemp(prefix="autoresearch-slurm-")).resolve()
        self.cpus, self.partition = cpus, partition
        self.conf = self.dir / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        """What a client (sbatch, squeue, the backend) needs to talk to this cluster."""
        return {"SLURM_CONF": str(self.conf)}

    def _daemon_env(self) -> dict[str, str]:
        return {**os.environ, **self.env, MARK: str(self.dir)}

    def write_config(self) -> Path:
        for sub in ("munge", "state", "spool", "log", "jobs"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir / "munge", 0o700)
        key = self.dir / "munge" / "munge.key"
        if not key.exists():
            key.write_bytes(os.urandom(1024))
            os.chmod(key, 0o400)
        ctld_port, slurmd_port = _free_ports(2)
        import pwd

        self.conf.write_text(SLURM_CONF.format(
            cluster=f"ar{os.getpid() % 100000}", host=socket.gethostname().split(".")[0], ctld_port=ctld_port,
            slurmd_port=slurmd_port, user=pwd.getpwuid(os.getuid()).pw_name, dir=self.dir, cpus=self.cpus,
            memory_mb=_memory_mb(), partition=self.partition))
        return self.conf

    def start(self, timeout: float = 60) -> LocalSlurm:
        """Write the configuration, start munged, slurmctld and slurmd, wait for the node to be idle."""
        if os.geteuid() != 0:
            raise UsageError("a local SLURM cluster needs root (slurmd starts jobs as their user)")
        self.write_config()
        m = self.dir / "munge"
        env = self._daemon_env()
        subprocess.run([_which("munged"), f"--socket={m}/munge.socket", f"--key-file={m}/munge.key",
                        f"--pid-file={m}/munged.pid", f"--log-file={m}/munged.log", f"--seed-file={m}/munged.seed",
                        "--force"], env=env, check=True, capture_output=True, timeout=30)
        for daemon in ("slurmctld", "slurmd"):
            proc = subprocess.run([_which(daemon), "-f", str(self.conf)], env=env, capture_output=True,
                                  text=True, timeout=60)
            if proc.returncode != 0:
                self.stop()
                raise RuntimeError(f"{daemon} did not start ({proc.returncode}): {proc.stderr.strip()[-500:]}\n"
                                   f"{self._log_tail()}")
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            out = subprocess.run([_which("sinfo"), "-h", "-o", "%T"], env=env, capture_output=True, text=True,
                                 timeout=30)
            state = out.stdout.strip()
            if out.returncode == 0 and state.rstrip("*") in ("idle", "mixed", "allocated"):
                logger.info("local SLURM cluster up in %s (node %s)", self.dir, state)
                return self
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"the local SLURM node did not come up (state {state!r})\n{self._log_tail()}")

    def _log_tail(self) -> str:
        parts = []
        for name in ("log/slurmctld.log", "log/slurmd.log", "munge/munged.log"):
            path = self.dir / name
            if path.exists():
                parts.append(f"--- {name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-15:]))
        return "\n".join(parts)

    def _ours(self) -> list[int]:
        """Pids of live processes started by this cluster (daemons, job steps, their jobs)."""
        mark = f"{MARK}={self.dir}".encode()
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                if mark in (entry / "environ").read_bytes().split(b"\0"):
                    pids.append(int(entry.name))
            except OSError:
                continue
        return pids

    def stop(self, timeout: float = 20) -> None:
        """Cancel every job, stop the daemons, kill what is left of this cluster.  Safe to call twice."""
        if self.conf.exists() and (self.dir / "slurmctld.pid").exists():
            scancel, squeue = shutil.which("scancel"), shutil.which("squeue")
            if scancel and squeue:
                env = self._daemon_env()
                subprocess.run([scancel, "--quiet", "--user", str(os.getuid())], env=env, capture_output=True,
                               timeout=30, check=False)
                # Let slurmd see its jobs end (a job step left without its slurmd lingers, retrying).
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    left = subprocess.run([squeue, "-h", "-t", "PD,CF,R,CG,S", "-o", "%i"], env=env,
                                          capture_output=True, text=True, timeout=30, check=False)
                    if left.returncode != 0 or not left.stdout.strip():
                        break
                    time.sleep(0.3)
        for pidfile in ("slurmd.pid", "slurmctld.pid", "munge/munged.pid"):
            try:
                os.kill(int((self.dir / pidfile).read_text().split()[0]), signal.SIGTERM)
            except (OSError, ValueError):
                pass
        deadline = time.monotonic() + timeout
        while self._ours() and time.monotonic() < deadline:
            time.sleep(0.3)
        for pid in self._ours():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mlflow_autoresearch.slurm.local", description=__doc__.split("\n\n")[0])
    ap.add_argument("action", choices=["start", "stop", "check"])
    ap.add_argument("--dir", default=None, help="folder for the cluster's files [start: a new temporary one]")
    ap.add_argument("--cpus", type=int, default=4, help="CPUs the node offers (bounds the jobs at once)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if args.action == "check":
        missing = missing_binaries()
        print("ok" if not missing else f"missing: {' '.join(missing)} ({INSTALL_HINT})")
        return 0 if not missing else 1
    if args.action == "stop":
        if not args.dir:
            ap.error("stop needs --dir")
        LocalSlurm(args.dir).stop()
        return 0
    cluster = LocalSlurm(args.dir, cpus=args.cpus).start()
    print(f"export SLURM_CONF={cluster.conf}")
    print(f"# stop with: python -m mlflow_autoresearch.slurm.local stop --dir {cluster.dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
