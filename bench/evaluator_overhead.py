"""What the evaluator and the submission cost, against running the script yourself.

    python -m bench.evaluator_overhead [--repeat 5] [--submit-repeat 3] [--digits-repeat 2]

Three pairs, each measured side by side in one process, interleaved (A, B,
A, B, ...) so that load drifting on a shared machine hits both alike:

1. a trivial trial (a script that prints one metric) through
   ``evaluate_code`` -- staging, the sandbox, limits, log capture, parsing,
   gates -- against ``python train.py`` run directly with ``subprocess``;
2. submitting that trial's evaluation through ``mlflow.projects.run``
   (backend ``local``, what the loop does by default) against evaluating it
   in the loop's process (``in_process``), both through the loop's own
   :class:`~mlflow_autoresearch.loop._executor.Evaluations` on a local
   SQLite store, from a RUNNING trial to its recorded result;
3. the digits recipe's baseline, one seed (profile ``quick``): the
   evaluator's clock for training (``train_seconds``) and the whole
   evaluation, against ``python train.py`` then ``python evaluate.py`` run
   directly in a copy of the recipe.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import ROOT, Timer, in_folder, median, noop_recipe, sqlite_store  # noqa: E402

DIGITS = ROOT / "recipes" / "digits-speedrun"
DIGITS_TARGET_S = 10.0  # issue 4: "one seed in a few seconds on 2 cores"


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _direct(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed in {cwd}:\n{proc.stderr[-2000:]}")
    return dt


def trivial(work: Path, repeat: int, log=print) -> dict:
    """``evaluate_code`` on a one-line script against running it directly."""
    from mlflow_autoresearch.evaluator import evaluate_code
    from mlflow_autoresearch.recipe import load_recipe

    recipe = load_recipe(noop_recipe(work / "trivial"))
    direct_dir = work / "trivial-direct"
    shutil.copytree(recipe.root, direct_dir, dirs_exist_ok=True)
    evaluated, direct = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        ev = evaluate_code(recipe, recipe.root)
        evaluated.append(time.perf_counter() - t0)
        if ev.outcome.value != "ok":
            raise RuntimeError(f"the trivial trial did not pass: {ev.outcome.value}: {ev.reason}")
        direct.append(_direct([sys.executable, "train.py"], direct_dir))
    out = {"evaluate_code_s": median(evaluated), "direct_s": median(direct), "repeat": repeat}
    out["added_s"] = out["evaluate_code_s"] - out["direct_s"]
    out["ratio"] = out["evaluate_code_s"] / out["direct_s"]
    log(f"trivial trial: evaluate_code {out['evaluate_code_s']:.3f} s vs direct {out['direct_s']:.3f} s "
        f"(+{out['added_s']:.3f} s, {out['ratio']:.1f}x)")
    return out


def submission(work: Path, repeat: int, log=print) -> dict:
    """The loop's Evaluations: through ``mlflow.projects.run`` against in-process, RUNNING trial to result."""
    import mlflow.projects

    from mlflow_autoresearch.lineage import MlflowStore
    from mlflow_autoresearch.loop._executor import Evaluations
    from mlflow_autoresearch.recipe import load_recipe
    from mlflow_autoresearch.trial import create_trial, recipe_files

    recipe = load_recipe(noop_recipe(work / "submit"))
    uri, _db = sqlite_store(work / "submit-store")
    store = MlflowStore(f"bench-submit-{uuid.uuid4().hex[:8]}", uri)
    modes = {
        "in_process": Evaluations(store, recipe, tracking_uri=uri, experiment_id=store.experiment_id, in_process=True),
        "projects_run": Evaluations(store, recipe, tracking_uri=uri, experiment_id=store.experiment_id,
                                    in_process=False),
    }
    times: dict[str, list[float]] = {m: [] for m in modes}
    files = recipe_files(recipe)
    returned = Timer()  # how long mlflow.projects.run takes to return a submitted run (the rest is waiting)
    original = mlflow.projects.run
    mlflow.projects.run = returned.wrap(original)
    try:
        for i in range(repeat):
            for mode, evaluations in modes.items():
                code = files["train.py"].replace(b"VARIANT = 0", f"VARIANT = {i}".encode())
                trial = create_trial(store, recipe, dict(files, **{"train.py": code}), specialist="bench",
                                     hypothesis=f"{mode} {i}")
                t0 = time.perf_counter()
                record = evaluations.run(trial, None)
                times[mode].append(time.perf_counter() - t0)
                if record.outcome is None or record.outcome.value != "ok":
                    raise RuntimeError(f"{mode}: the trial ended {record.outcome}: {record.reason}")
    finally:
        mlflow.projects.run = original
    out = {"in_process_s": median(times["in_process"]), "projects_run_s": median(times["projects_run"]),
           "submit_return_s": median(returned.seconds), "repeat": repeat}
    out["added_s"] = out["projects_run_s"] - out["in_process_s"]
    out["ratio"] = out["projects_run_s"] / out["in_process_s"]
    log(f"submission: mlflow.projects.run {out['projects_run_s']:.2f} s vs in-process {out['in_process_s']:.2f} s "
        f"(+{out['added_s']:.2f} s, {out['ratio']:.1f}x)")
    return out


def digits_baseline(work: Path, repeat: int, recipe_dir: Path = DIGITS, profile: str | None = "quick",
                    log=print) -> dict:
    """One seed of the recipe's own code: the evaluator's clock against the scripts run directly."""
    from mlflow_autoresearch.evaluator import evaluate_code
    from mlflow_autoresearch.recipe import load_recipe

    recipe = load_recipe(recipe_dir, profile)
    copy = work / f"{recipe.name}-direct"
    shutil.copytree(recipe.root, copy, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.pt"))
    train_cmd = recipe.command.split()
    train_cmd[0] = sys.executable if train_cmd[0] in ("python", "python3") else train_cmd[0]
    eval_cmd = recipe.evaluate.split() if recipe.evaluate else None
    if eval_cmd and eval_cmd[0] in ("python", "python3"):
        eval_cmd[0] = sys.executable
    ev_train, ev_total, d_train, d_total, scores, ev_cpu, d_cpu = [], [], [], [], [], [], []
    env = {"AUTORESEARCH_SEED": "0", "AUTORESEARCH_ARTIFACT_DIR": str(copy)}
    for _ in range(repeat):
        c0 = _children_cpu()
        ev = evaluate_code(recipe, recipe.root, seeds=1)
        ev_cpu.append(_children_cpu() - c0)
        if ev.outcome.value != "ok":
            raise RuntimeError(f"{recipe.name} baseline: {ev.outcome.value}: {ev.reason}\n{ev.error_tail}")
        ev_train.append(float(ev.train_seconds))
        ev_total.append(ev.total_seconds)
        scores.append(ev.score)
        c0 = _children_cpu()
        t = _direct(train_cmd, copy, env)
        e = _direct(eval_cmd, copy, env) if eval_cmd else 0.0
        d_cpu.append(_children_cpu() - c0)
        d_train.append(t)
        d_total.append(t + e)
    out = {"recipe": recipe.name, "profile": profile, "repeat": repeat, "score": median(scores),
           "metric": recipe.metric.name, "eval_train_s": median(ev_train), "eval_total_s": median(ev_total),
           "direct_train_s": median(d_train), "direct_total_s": median(d_total), "target_s": DIGITS_TARGET_S,
           # CPU seconds of every process (training and evaluate.py; the evaluator's supervisor too):
           # less sensitive than wall time to other people's load on a shared machine
           "eval_cpu_s": median(ev_cpu), "direct_cpu_s": median(d_cpu), "load": os.getloadavg()[0]}
    out["train_ratio"] = out["eval_train_s"] / out["direct_train_s"]
    out["total_ratio"] = out["eval_total_s"] / out["direct_total_s"]
    out["meets_target"] = out["eval_train_s"] <= DIGITS_TARGET_S
    log(f"{recipe.name} baseline, one seed: evaluator clock {out['eval_train_s']:.2f} s training "
        f"({out['eval_total_s']:.2f} s whole evaluation) vs direct {out['direct_train_s']:.2f} s "
        f"({out['direct_total_s']:.2f} s with evaluate.py)")
    return out


def measure(work: Path, repeat: int = 5, submit_repeat: int = 3, digits_repeat: int = 2, digits: Path = DIGITS,
            digits_profile: str | None = "quick", log=print) -> dict:
    with in_folder(work):
        return {"trivial": trivial(work, repeat, log), "submission": submission(work, submit_repeat, log),
                "digits": digits_baseline(work, digits_repeat, digits, digits_profile, log)
                if digits_repeat else None}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--submit-repeat", type=int, default=3)
    ap.add_argument("--digits-repeat", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="bench-evaluator-"))
    try:
        out = measure(work, args.repeat, args.submit_repeat, args.digits_repeat,
                      log=lambda m: print(m, file=sys.stderr, flush=True))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
