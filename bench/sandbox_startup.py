"""What starting one sandboxed step costs: our supervisor against bubblewrap, and against no sandbox.

    python -m bench.sandbox_startup [--repeat 10]

Three ways to start ``python -c pass``, interleaved (A, B, C, A, ...) so load
drifting on a shared machine hits all alike, medians reported as seconds and
as ratios to the plain start:

* ``plain``: ``subprocess.run`` of the interpreter, no sandbox;
* ``ours``: :meth:`Workspace.run` -- the stdlib supervisor, a leased uid (as
  root), private mount/IPC/network namespaces, hidden homes with the
  interpreter bound back, a cgroup, rlimits, the final sweep;
* ``bwrap``: Debian's bubblewrap building comparable namespaces (read-only
  ``/``, private ``/tmp``, the workspace bound, ``/root`` hidden with the
  interpreter bound back, new ``/proc`` and ``/dev``, ``--unshare-all``,
  ``--die-with-parent``), started under the same uid with ``setpriv`` --
  without limits, sweep or cgroup, which a supervisor would still add.

Skips ``bwrap`` when it is not installed (``apt-get install bubblewrap``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _bwrap_argv(ws: Path, identity: tuple[int, int] | None) -> list[str]:
    from mlflow_autoresearch.evaluator._sandbox import hidden_homes, interpreter_paths

    argv = ["bwrap", "--ro-bind", "/", "/", "--tmpfs", "/tmp", "--dev", "/dev", "--proc", "/proc",
            "--unshare-all", "--die-with-parent", "--new-session"]
    for home in hidden_homes():
        argv += ["--tmpfs", home]
    for p in interpreter_paths():
        argv += ["--ro-bind", p, p]
    argv += ["--bind", str(ws), str(ws), "--chdir", str(ws), sys.executable, "-c", "pass"]
    if identity is not None:
        argv = ["setpriv", f"--reuid={identity[0]}", f"--regid={identity[1]}", "--clear-groups", *argv]
    return argv


def measure(repeat: int, log=print) -> dict:
    from mlflow_autoresearch.evaluator._sandbox import ProcessLimits, Workspace, scrubbed_env

    times: dict[str, list[float]] = {"plain": [], "ours": []}
    have_bwrap = shutil.which("bwrap") is not None
    if have_bwrap:
        times["bwrap"] = []
    with Workspace() as ws:
        wd = ws.workdir("bench")
        env = scrubbed_env(wd)
        for _ in range(repeat):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", "pass"], check=True, env=env, cwd=wd)
            times["plain"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            r = ws.run("bench", [sys.executable, "-c", "pass"], wd, env, ProcessLimits(wall_seconds=30))
            times["ours"].append(time.perf_counter() - t0)
            if r.returncode != 0:
                raise RuntimeError(f"the sandboxed start failed: {r.stderr()[-1000:]}")
            if have_bwrap:
                t0 = time.perf_counter()
                b = subprocess.run(_bwrap_argv(ws.root, ws.identity), env=env, cwd="/", capture_output=True)
                times["bwrap"].append(time.perf_counter() - t0)
                if b.returncode != 0:
                    raise RuntimeError(f"bwrap failed: {b.stderr.decode(errors='replace')[-1000:]}")
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {"repeat": repeat, "median_s": med, "ratio_to_plain": {k: v / med["plain"] for k, v in med.items()},
           "root": os.geteuid() == 0, "load": os.getloadavg()[0]}
    for k, v in med.items():
        log(f"{k:>6}: {v * 1000:7.1f} ms median of {repeat} ({v / med['plain']:.2f}x plain)")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    out = measure(a.repeat)
    if a.json:
        a.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
