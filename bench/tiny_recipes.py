"""Time every reference recipe's tiny profile through the evaluator, on this machine's CPU.

    python bench/tiny_recipes.py [--repeat 2]

Prints, per recipe: outcome, score, mean training seconds per seed (the
evaluator's clock), and the whole evaluation (all seeds, training and the
protected evaluation) as wall seconds; the CPU seconds of all its processes;
and the load average, since these machines are shared.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

from mlflow_autoresearch.evaluator import evaluate_code
from mlflow_autoresearch.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]
NAMES = ("cifar10-airbench96", "parameter-golf", "nanochat-d12", "digits-speedrun")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    print("| recipe | profile | seeds | outcome | score | train s/seed | whole evaluation s | CPU s | load avg |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in NAMES:
        profile = "quick" if name == "digits-speedrun" else "tiny"
        recipe = load_recipe(ROOT / "recipes" / name, profile)
        for _ in range(args.repeat):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            ev = evaluate_code(recipe, recipe.root)
            whole = time.perf_counter() - start
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
            load = os.getloadavg()[0]
            score = "—" if ev.score is None else f"{ev.score:.4g}"
            train = "—" if ev.train_seconds is None else f"{ev.train_seconds:.2f}"
            print(f"| {name} | {profile} | {recipe.seeds} | {ev.outcome.value} | {score} | {train} | {whole:.2f} "
                  f"| {cpu:.1f} | {load:.1f} |", flush=True)
            if ev.outcome.value != "ok":
                print(f"  {ev.reason}\n  {ev.error_tail[-800:]}", flush=True)


if __name__ == "__main__":
    main()
