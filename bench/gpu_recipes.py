"""Time each reference recipe's real code path on one GPU, on synthetic data in the real file formats.

Run through ``bench/gpu_checks.sh`` (or directly, from the repository root)::

    python bench/gpu_recipes.py --json out.json            # all three
    python bench/gpu_recipes.py --tiny --allow-cpu         # check this script on a CPU (tiny profiles)

Needs only Python, torch and numpy (the GPU machines have no mlflow, optuna
or pydantic).  For each recipe, in a scratch copy of its folder and with
``AUTORESEARCH_DATA_DIR`` pointing at a scratch cache filled with random
data written by the recipe's own ``data.py`` writers (CIFAR ``train.npz`` /
``test.npz``, golf sp8192 token shards + a SentencePiece model, nanochat
``train/``, ``eval/val.bin`` and ``eval/core.npz``):

1. the training script with ``--synthetic`` (CIFAR: the full 45-epoch run;
   golf and nanochat: 30 steps of the real model and batch after the compile
   warm-up), which prints one ``bench:`` line;
2. the protected ``evaluate.py`` on the artifact it wrote, against the
   scratch validation data, timed, and scaled to the real validation size.

It prints the card and one row per recipe next to the reference's published
figure (REFERENCE, with its source).  Accuracy, bits per byte and CORE on
random data mean nothing: this measures time, memory and size only.
"""

from __future__ import annotations

import argparse
import importlib.util
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
SCRIPTS = {"cifar10-airbench96": "airbench96_faster.py", "parameter-golf": "train_gpt.py", "nanochat-d12": "train.py"}
EVALUATE = {
    "cifar10-airbench96": ["evaluate.py"],
    "parameter-golf": ["evaluate.py", "--tokenizer", "sp8192", "--seq-len", "2048", "--stride", "64"],
    "nanochat-d12": ["evaluate.py"],
}
TINY_EVALUATE = {
    "cifar10-airbench96": ["evaluate.py", "--tiny"],
    "parameter-golf": ["evaluate.py", "--tiny", "--tokenizer", "sp8192", "--seq-len", "128", "--stride", "32"],
    "nanochat-d12": ["evaluate.py", "--tiny"],
}
# Published figures the row is read against (8xH100 figures are for eight GPUs, this bench uses one).
REFERENCE = {
    "cifar10-airbench96": "27.3 s per run on an A100 (airbench96_faster.py header, KellerJordan/cifar10-airbench "
                          "@2501e327); the paper's baseline: 26.36 s",
    "parameter-golf": "4,550 steps in 588 s on 8xH100 = 129 ms/step; 15,991,930-15,992,919 bytes; sliding + TTT eval "
                      "about 500 s (records/track_10min_16mb/2026-04-09_SP8192_3LayerRecur_ParResid_QK525_LegalTTT "
                      "README @a5e32b78)",
    "nanochat-d12": "base_train --depth 12: 12 tokens per scaling parameter; CORE 0.1618 in the paper (no step "
                    "time in the stored sources)",
}
VAL_TOKENS = {"parameter-golf": 1_000_000, "nanochat-d12": 1_000_000}  # scratch validation sizes
COLUMNS = ("step_ms", "steps_in_budget", "scored", "peak_gpu_mb", "train_total_s", "eval_s")


def card() -> str:
    try:
        import torch
    except ImportError:
        return "no torch"
    if not torch.cuda.is_available():
        return "CPU (no CUDA device)"
    return f"{torch.cuda.get_device_name(0)} (torch {torch.__version__})"


def _module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def write_data(cache: Path, small: bool) -> None:
    """Random data in each recipe's real on-disk format, through the recipes' own writers."""
    import numpy as np

    rng = np.random.default_rng(0)
    cifar = cache / "cifar10"
    cifar.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 4096 if small else 50_000), ("test", 1000 if small else 10_000)):
        np.savez(cifar / f"{split}.npz", images=rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8),
                 labels=rng.integers(0, 10, n).astype(np.int64))
    golf = _module(ROOT / "recipes/parameter-golf/data.py", "bench_golf_data")
    dirs = golf.layout("sp8192", cache / "parameter-golf")
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    golf.write_pieces(dirs["tokenizer"] / "fineweb_8192_bpe.model", golf._tiny_pieces(8192))
    n_val = 20_000 if small else VAL_TOKENS["parameter-golf"]
    golf.write_shard(dirs["val"] / "fineweb_val_000000.bin", rng.integers(0, 8192, n_val + 1, dtype=np.uint16))
    for i in (1, 2):
        golf.write_shard(dirs["train"] / f"fineweb_train_{i:06d}.bin",
                         rng.integers(0, 8192, 200_000, dtype=np.uint16))  # the format (--synthetic draws its own)
    chat = _module(ROOT / "recipes/nanochat-d12/data.py", "bench_chat_data")
    root = cache / "nanochat"
    (root / "train").mkdir(parents=True, exist_ok=True)
    (root / "eval").mkdir(parents=True, exist_ok=True)
    vocab = chat.VOCAB_SIZE
    chat.write_shard(root / "train" / "train_00000.bin", rng.integers(0, vocab, 200_000, dtype=np.uint16))
    chat.write_shard(root / "eval" / "val.bin", rng.integers(0, vocab, 20_000 if small else VAL_TOKENS["nanochat-d12"],
                                                             dtype=np.uint16))
    chat.pack_tasks(chat._tiny_tasks(), root / "eval" / "core.npz")  # the real packing; tiny token ids


def _bench_line(out: str) -> dict[str, str]:
    """The ``bench:`` line's fields (GPU modes), else the ``name: value`` lines (tiny mode)."""
    line = next((ln for ln in out.splitlines() if ln.startswith("bench:")), "")
    if line:
        return dict(re.findall(r"(\w+)=([^\s]+)", line))
    return dict(re.findall(r"^(\w+): ([^\s]+)$", out, re.MULTILINE))


DEADLINE = [float("inf")]  # perf_counter time by which everything must have finished (--deadline)


def _limit(timeout: float) -> float:
    return max(5.0, min(timeout, DEADLINE[0] - time.perf_counter()))


def run_one(name: str, mode: str, timeout: float, cache: Path) -> dict:
    src = ROOT / "recipes" / name
    res: dict = {"recipe": name, "reference": REFERENCE[name]}
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
        work = Path(tmp) / name
        shutil.copytree(src, work, ignore=shutil.ignore_patterns("notes", "__pycache__", "*.md", "recipe.yaml"))
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "AUTORESEARCH_DATA_DIR": str(cache),
               "AUTORESEARCH_ARTIFACT_DIR": str(work)}
        start = time.perf_counter()
        try:
            r = subprocess.run([sys.executable, SCRIPTS[name], f"--{mode}"], cwd=work, env=env, capture_output=True,
                               text=True, timeout=_limit(timeout))
        except subprocess.TimeoutExpired as e:
            return res | {"status": f"training timed out after {e.timeout:.0f} s"}
        res["train_wall_s"] = round(time.perf_counter() - start, 2)
        bench = _bench_line(r.stdout)
        if r.returncode != 0 or not bench:
            return res | {"status": f"training failed (exit {r.returncode})", "tail": (r.stderr or r.stdout)[-1500:]}
        res.update(bench)
        res["train_total_s"] = bench.get("total_s") or res["train_wall_s"]
        for f in ("final_model.ptz", "model.pt"):
            if (work / f).is_file():
                res[f"{f}_bytes"] = (work / f).stat().st_size
        if name == "parameter-golf":
            res["scored"] = f"{bench.get('artifact_bytes') or bench.get('artifact_bytes_estimate')} bytes"
        elif name == "cifar10-airbench96":
            res["scored"] = (f"{res['train_total_s']} s whole process "
                             f"(gpu {bench.get('gpu_s') or bench.get('train_gpu_seconds')} s)")
            res["steps_in_budget"] = "all (fixed epochs)"
        else:
            steps = int(bench.get("steps_in_budget") or bench.get("steps") or 0)
            step_s = float(bench.get("step_ms", "nan")) / 1000
            res["scored"] = f"horizon {steps} steps = {step_s * steps:.0f} s at this step time"
        args = EVALUATE[name] if mode == "synthetic" else TINY_EVALUATE[name]
        start = time.perf_counter()
        try:
            e = subprocess.run([sys.executable, *args], cwd=work, env=env, capture_output=True, text=True,
                               timeout=_limit(timeout))
        except subprocess.TimeoutExpired as exc:
            return res | {"status": f"evaluation timed out after {exc.timeout:.0f} s"}
        res["eval_s"] = round(time.perf_counter() - start, 2)
        if e.returncode != 0:
            return res | {"status": f"evaluation failed (exit {e.returncode})", "tail": (e.stderr or e.stdout)[-1500:]}
        if name in VAL_TOKENS:
            n_val = VAL_TOKENS[name] if mode == "synthetic" else 8192
            res["eval_s_per_1M_val_tokens"] = round(res["eval_s"] * 1e6 / n_val, 1)
        res["status"] = "ok"
        return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipes", default=",".join(SCRIPTS), help="comma-separated recipe names")
    ap.add_argument("--tiny", action="store_true", help="the tiny profiles and small data: check this script on a CPU")
    ap.add_argument("--timeout", type=float, default=200, help="seconds per step (training, evaluation) per recipe")
    ap.add_argument("--deadline", type=float, default=None, help="seconds for the whole check (cuts later steps short)")
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
    mode = "tiny" if args.tiny else "synthetic"
    if args.deadline:
        DEADLINE[0] = time.perf_counter() + args.deadline
    print(f"card: {device}; mode: --{mode}", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-data-") as cache:
        write_data(Path(cache), small=args.tiny)
        for name in names:
            res = run_one(name, mode, args.timeout, Path(cache))
            results.append(res)
            print(json.dumps(res), flush=True)
    print()
    print("| recipe | " + " | ".join(COLUMNS) + " | status | reference |")
    print("|" + " --- |" * (len(COLUMNS) + 3))
    for res in results:
        print(f"| {res['recipe']} | " + " | ".join(str(res.get(c, "")) for c in COLUMNS)
              + f" | {res['status']} | {res['reference']} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"card": device, "mode": mode, "results": results}, indent=2))
    return 0 if all(r["status"] == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
