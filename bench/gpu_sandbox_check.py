"""GPU check: CUDA works inside the trial sandbox (leased uid, private namespaces, hidden homes).

Run on a GPU machine from the repository root (as root, the way trials run as a leased uid)::

    python bench/gpu_sandbox_check.py [--gpu 0] [--json out.json]

Needs only Python and torch: it drives the stdlib supervisor
(``mlflow_autoresearch/evaluator/_supervisor.py``) directly with the spec the
evaluator builds, so mlflow and pydantic need not be installed.  It runs one
probe twice, plainly and sandboxed, and compares:

* the ``/dev/nvidia*`` device nodes the trial sees and can open (the sandbox
  does not replace ``/dev``: the nodes must stay visible and, for the trial
  uid, openable; the driver installs them 0666);
* ``torch.cuda.is_available()``, the device count and name, and a matmul on
  the device;
* GPU pinning: with ``CUDA_VISIBLE_DEVICES=<gpu>`` the trial sees one device.

Exit 0 when the sandboxed probe matches the plain one; 1 with the difference.
Status: written without a GPU (issue 13); unverified until it has run on one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUPERVISOR = ROOT / "mlflow_autoresearch" / "evaluator" / "_supervisor.py"
PROBE = r"""
import glob, json, os
facts = {"uid": os.getuid(), "visible_env": os.environ.get("CUDA_VISIBLE_DEVICES")}
nodes = {}
for p in sorted(glob.glob("/dev/nvidia*")):
    try:
        os.close(os.open(p, os.O_RDWR))
        nodes[p] = "ok"
    except OSError as e:
        nodes[p] = type(e).__name__
facts["nodes"] = nodes
try:
    import torch
    facts["cuda"] = torch.cuda.is_available()
    facts["count"] = torch.cuda.device_count()
    if facts["cuda"]:
        facts["name"] = torch.cuda.get_device_name(0)
        x = torch.randn(512, 512, device="cuda")
        facts["matmul"] = float((x @ x).sum().item()) == float((x @ x).sum().item())
except Exception as e:
    facts["error"] = f"{type(e).__name__}: {e}"
print(json.dumps(facts))
"""
UID = 1_900_004_095  # the last uid of the evaluator's lease range: not leased by a running evaluator here


def hidden_homes() -> list[str]:
    homes = ["/root"]
    home = os.path.realpath(os.path.expanduser("~"))
    if home not in ("/", *homes) and os.path.isdir(home):
        homes.append(home)
    return [h for h in homes if os.path.isdir(h)]


def interpreter_paths() -> list[str]:
    cands = {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.path.realpath(sys.executable))}
    cands.update(p for p in sys.path if p and os.path.isabs(p))
    real = sorted({os.path.realpath(c) for c in cands if os.path.isdir(c)})
    out: list[str] = []
    for r in real:
        if not any((r + "/").startswith(o.rstrip("/") + "/") for o in out):
            out.append(r)
    return out


def sandboxed(gpu: str, work: Path) -> dict:
    cwd = work / "trial"
    (cwd / "tmp").mkdir(parents=True)
    root = os.geteuid() == 0
    if root:
        for p in (work, cwd, cwd / "tmp"):
            os.chown(p, UID, 65534)
    os.chmod(work, 0o711)
    covers = hidden_homes()
    hidden = ["/tmp", "/var/tmp", "/dev/shm", "/run/lock", *covers]
    binds = [p for p in interpreter_paths() if any((p + "/").startswith(h + "/") for h in hidden)]
    env = {"PATH": f"{os.path.dirname(sys.executable)}:/usr/bin:/bin", "HOME": str(cwd), "TMPDIR": str(cwd / "tmp"),
           "CUDA_VISIBLE_DEVICES": gpu, "PYTHONUNBUFFERED": "1"}
    spec = {"argv": [sys.executable, "-c", PROBE], "cwd": str(cwd), "env": env, "wall_seconds": 300, "network": False,
            "uid": UID if root else None, "gid": 65534 if root else None, "sweep_uid": root, "cgroup": True,
            "stdout_path": str(work / "out.txt"), "stderr_path": str(work / "err.txt"),
            "bind": os.path.realpath(work), "binds_ro": binds, "covers": covers, "masks": [], "local_binds": [],
            "disk_paths": [os.path.realpath(work)],
            "limits": {"memory_bytes": None, "processes": 256, "open_files": 1024, "file_bytes": 4 * 1024**3,
                       "disk_bytes": 8 * 1024**3, "output_bytes": 256 * 1024, "grace_seconds": 3}}
    r = subprocess.run([sys.executable, "-I", str(SUPERVISOR)], input=json.dumps(spec).encode(), capture_output=True,
                       timeout=400)
    if r.returncode != 0:
        return {"error": f"supervisor failed: {r.stderr.decode(errors='replace')[-2000:]}"}
    report = json.loads(r.stdout)
    out = (work / "out.txt").read_text(errors="replace").strip().splitlines()
    facts = json.loads(out[-1]) if out and out[-1].startswith("{") else {
        "error": (work / "err.txt").read_text(errors="replace")[-2000:]}
    facts["supervisor_notes"] = report.get("notes")
    return facts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gpu", default="0")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    plain = json.loads(subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300,
                                      env={**os.environ, "CUDA_VISIBLE_DEVICES": a.gpu}).stdout.strip().splitlines()[-1])
    with tempfile.TemporaryDirectory(prefix="gpu-sandbox-") as tmp:
        boxed = sandboxed(a.gpu, Path(tmp))
    keys = ("cuda", "count", "name", "matmul", "nodes")
    diff = {k: (plain.get(k), boxed.get(k)) for k in keys if plain.get(k) != boxed.get(k)}
    result = {"plain": plain, "sandboxed": boxed, "differences": diff,
              "pinned": boxed.get("count") == 1 if plain.get("cuda") else None}
    print(json.dumps(result, indent=2))
    if a.json:
        a.json.write_text(json.dumps(result, indent=2))
    return 0 if not diff and result["pinned"] is not False else 1


if __name__ == "__main__":
    sys.exit(main())
