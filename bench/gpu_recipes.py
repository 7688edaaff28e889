"""Time each GPU recipe's real code path on synthetic data of the real shape.

Run on a GPU machine from the repository root::

    python bench/gpu_recipes.py                       # all three, --synthetic
    python bench/gpu_recipes.py --recipes parameter-golf --timeout 300 --json out.json

Needs only Python and torch (+ numpy): it runs each recipe's training script
directly (``--synthetic``: the real model, batch and sequence shapes on random
data; ``--smoke``: two steps) in a scratch copy of the recipe folder, never the
plugin (no mlflow, optuna or pydantic).  Each script prints one ``bench:``
line; this collects them into a table with the card's name:

* startup_s: process start to the first training step (imports, data,
  model build);
* first_step_s: the first step, which includes torch.compile where the recipe
  compiles (COMPILE = True) and cuDNN autotuning;
* step_ms: median steady-state step time (CUDA-synchronised);
* loop_s (CIFAR: the full 31-epoch run), export_s (quantise/script/save),
  total_s, peak_gpu_mb (torch.cuda.max_memory_allocated);
* steps_in_budget: the steps that fit the recipe's TIME_BUDGET at that pace
  (Parameter Golf, nanochat).

Accuracy, bits per byte and CORE on random data mean nothing: this measures
time and memory only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = {
    "cifar10-airbench96": "airbench96.py",
    "parameter-golf": "train_gpt.py",
    "nanochat-d12": "train.py",
}
COLUMNS = ("steps", "startup_s", "first_step_s", "step_ms", "loop_s", "export_s", "total_s", "peak_gpu_mb",
           "steps_in_budget")


def card() -> str:
    try:
        import torch
    except ImportError:
        return "no torch"
    if not torch.cuda.is_available():
        return "CPU (no CUDA device)"
    return f"{torch.cuda.get_device_name(0)} (torch {torch.__version__})"


def run_one(name: str, mode: str, timeout: float) -> dict:
    src = ROOT / "recipes" / name
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
        work = Path(tmp) / name
        shutil.copytree(src, work, ignore=shutil.ignore_patterns("notes", "__pycache__", "*.md", "recipe.yaml"))
        start = time.perf_counter()
        try:
            r = subprocess.run([sys.executable, SCRIPTS[name], f"--{mode}"], cwd=work, capture_output=True,
                               text=True, timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        except subprocess.TimeoutExpired as e:
            tail = (e.stdout or "")[-800:] if isinstance(e.stdout, str) else ""
            return {"recipe": name, "status": f"timed out after {timeout:g} s", "tail": tail}
        wall = time.perf_counter() - start
        out = {"recipe": name, "wall_s": round(wall, 2)}
        line = next((ln for ln in r.stdout.splitlines() if ln.startswith("bench:")), None)
        if r.returncode != 0 or line is None:
            out.update(status=f"failed (exit {r.returncode})", tail=(r.stderr or r.stdout)[-1500:])
            return out
        out["status"] = "ok"
        out.update({k: v for k, v in re.findall(r"(\w+)=([^\s]+)", line)})
        for f in ("final_model.ptz", "model.pt"):
            if (work / f).is_file():
                out[f"{f}_bytes"] = (work / f).stat().st_size
        return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipes", default=",".join(SCRIPTS), help="comma-separated recipe names")
    ap.add_argument("--mode", choices=["synthetic", "smoke"], default="synthetic")
    ap.add_argument("--timeout", type=float, default=300, help="seconds per recipe")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    ap.add_argument("--allow-cpu", action="store_true", help="run without a CUDA device (to test this script)")
    args = ap.parse_args()
    names = [n.strip() for n in args.recipes.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCRIPTS]
    if unknown:
        print(f"unknown recipe(s) {unknown}; known: {', '.join(SCRIPTS)}", file=sys.stderr)
        return 2
    device = card()
    if device.startswith(("CPU", "no torch")) and not args.allow_cpu:
        print(f"no CUDA device here ({device}); pass --allow-cpu to run anyway", file=sys.stderr)
        return 2
    print(f"card: {device}; mode: --{args.mode}", flush=True)
    results = []
    for name in names:
        res = run_one(name, args.mode, args.timeout)
        results.append(res)
        print(json.dumps(res), flush=True)
    print()
    print("| recipe | " + " | ".join(COLUMNS) + " | status |")
    print("|" + " --- |" * (len(COLUMNS) + 2))
    for res in results:
        print(f"| {res['recipe']} | " + " | ".join(str(res.get(c, "")) for c in COLUMNS) + f" | {res['status']} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"card": device, "mode": args.mode, "results": results}, indent=2))
    return 0 if all(r["status"] == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
