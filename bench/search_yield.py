"""Search yield: what each search method finds on a recipe with the same trial budget.

    python -m bench.search_yield [--recipe recipes/digits-speedrun] [--profile quick] [--trials 8] \
        [--seeds 0,1,2] [--methods offline,optuna,random] [--agent claude]

Every method starts from the recipe's own code, scored once (the baseline,
evaluation 0), then gets ``--trials`` more trials, each a full evaluation by
the same evaluator with the same profile:

- ``offline``: the ``autoresearch`` loop with the offline specialists
  (program rewrites and repairs from the playbook), in-process evaluation;
- ``optuna``: an Optuna TPE study over the recipe's numeric knobs
  (``recipe.yaml`` ``knobs:``) around the baseline, through the product's
  ``run_sweep`` (no pruning, nothing submitted: every point is one trial);
- ``random``: the same study with Optuna's random sampler;
- ``claude``: the loop with the Claude specialists, when ``--agent claude``
  is given and an API key is set (it costs money; skipped otherwise).

Per run: the best score among trials that passed every gate (the baseline
included), and the evaluation at which it was first reached.  Runs go seed
by seed, methods interleaved, so load drifting on a shared machine hits all
methods alike; each run's baseline is measured in that run, and the best is
also given relative to it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import ROOT, in_folder, sqlite_store  # noqa: E402

DIGITS = ROOT / "recipes" / "digits-speedrun"
LOOP_METHODS = ("offline", "claude")
SWEEP_METHODS = {"optuna": "tpe", "random": "random"}


def claude_available() -> bool:
    return bool(os.environ.get("ANTHROPIC_API_KEY") or os.environ.get("ANTHROPIC_AUTH_TOKEN"))


def _summary(recipe, scored: list[tuple[int, float | None, bool]], outcomes: Counter, wall: float) -> dict:
    """``scored``: (evaluation number, score, passed every gate) in order; number 0 is the baseline."""
    from mlflow_autoresearch.outcome import Direction

    direction = Direction(recipe.metric.goal)
    base = next((s for n, s, ok in scored if n == 0 and ok), None)
    best, best_at = None, None
    for n, score, ok in sorted(scored):
        if ok and score is not None and (best is None or direction.better(score, best)):
            best, best_at = score, n
    return {"baseline": base, "best": best, "best_at": best_at,
            "best_over_baseline": (best / base) if best is not None and base else None,
            "evaluations": len(scored), "passed": sum(ok for _, _, ok in scored),
            "outcomes": dict(outcomes), "wall_s": round(wall, 1)}


def run_loop_method(recipe, profile: str | None, agent: str, trials: int, seed: int, work: Path, log=print) -> dict:
    """The ``autoresearch`` loop with ``agent`` specialists, in-process evaluation, on a fresh local store."""
    from mlflow_autoresearch.lineage import MlflowStore
    from mlflow_autoresearch.loop import Loop
    from mlflow_autoresearch.settings import make_settings

    class _Loop(Loop):
        def _log_report(self) -> None:  # the end-of-run report is no part of the yield
            return None

    uri, _db = sqlite_store(work / f"{agent}-{seed}")
    name = f"yield-{agent}-{seed}"
    settings = make_settings(tracking_uri=uri, experiment=name, trials=trials, agent=agent, seed=seed,
                             in_process=True, profile=profile)
    t0 = time.perf_counter()
    _Loop(recipe, settings, store=MlflowStore(name, uri), echo=lambda m: log(f"  {agent} seed {seed}: {m}")).run()
    wall = time.perf_counter() - t0
    records = MlflowStore(name, uri).trials()
    scored = [(t.number, t.score, t.outcome is not None and t.outcome.value == "ok") for t in records]
    return _summary(recipe, scored, Counter(t.outcome.value if t.outcome else "?" for t in records), wall)


def run_sweep_method(recipe, profile: str | None, sampler: str, trials: int, seed: int, work: Path,
                     log=print) -> dict:
    """An Optuna study (``tpe`` or ``random``) of ``trials`` points over the recipe's knobs, around its baseline."""
    from mlflow_autoresearch.lineage import MlflowStore
    from mlflow_autoresearch.sweep import run_sweep
    from mlflow_autoresearch.trial import evaluate_folder

    uri, _db = sqlite_store(work / f"{sampler}-{seed}")
    store = MlflowStore(f"yield-{sampler}-{seed}", uri)
    t0 = time.perf_counter()
    base = evaluate_folder(store, recipe, profile=profile)
    scored = [(0, base.score, base.outcome is not None and base.outcome.value == "ok")]
    outcomes = Counter([base.outcome.value if base.outcome else "?"])
    if base.kept and base.score is not None:
        result = run_sweep(store, recipe, base.run_id, points=trials, sampler=sampler, seed=seed, pruner="none",
                           submit=False, storage=f"sqlite:///{work / f'optuna-{sampler}-{seed}.db'}",
                           progress=lambda m: log(f"  {sampler} seed {seed}: {m}"))
        for p in result.points:
            scored.append((p.number, p.value, p.passed))
            outcomes[p.outcome or p.state.lower()] += 1
    else:
        log(f"  {sampler} seed {seed}: the baseline did not pass ({base.outcome}); nothing to sweep")
    return _summary(recipe, scored, outcomes, time.perf_counter() - t0)


def _mean_sd(xs: list[float]) -> tuple[float | None, float | None]:
    xs = [x for x in xs if x is not None]
    if not xs:
        return None, None
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def aggregate(runs: list[dict]) -> dict:
    best_m, best_sd = _mean_sd([r["best"] for r in runs])
    ratio_m, ratio_sd = _mean_sd([r["best_over_baseline"] for r in runs])
    at_m, _ = _mean_sd([r["best_at"] for r in runs])
    return {"best_mean": best_m, "best_sd": best_sd, "ratio_mean": ratio_m, "ratio_sd": ratio_sd,
            "best_at_mean": at_m, "passed": sum(r["passed"] for r in runs),
            "evaluations": sum(r["evaluations"] for r in runs), "wall_s": sum(r["wall_s"] for r in runs)}


def measure(recipe_dir: Path = DIGITS, profile: str | None = "quick", trials: int = 8, seeds=(0, 1, 2),
            methods=("offline", "optuna", "random"), work: Path | None = None, log=print) -> dict:
    from mlflow_autoresearch.recipe import load_recipe

    recipe = load_recipe(recipe_dir, profile)
    own = work is None
    work = Path(tempfile.mkdtemp(prefix="bench-yield-")) if own else work
    runs: dict[str, list[dict]] = {m: [] for m in methods}
    skipped: dict[str, str] = {}
    try:
        with in_folder(work):
            for seed in seeds:
                for method in methods:
                    if method == "claude" and not claude_available():
                        skipped[method] = "no ANTHROPIC_API_KEY (or ANTHROPIC_AUTH_TOKEN) in the environment"
                        continue
                    t0 = time.perf_counter()
                    if method in LOOP_METHODS:
                        r = run_loop_method(recipe, profile, method, trials, seed, work, log=lambda m: None)
                    elif method in SWEEP_METHODS:
                        r = run_sweep_method(recipe, profile, SWEEP_METHODS[method], trials, seed, work,
                                             log=lambda m: None)
                    else:
                        raise ValueError(f"unknown method {method!r}; choose from offline, optuna, random, claude")
                    r["seed"] = seed
                    runs[method].append(r)
                    log(f"{method} seed {seed}: baseline {r['baseline']}, best {r['best']} at evaluation "
                        f"{r['best_at']}; {r['passed']}/{r['evaluations']} passed; {dict(r['outcomes'])} "
                        f"[{time.perf_counter() - t0:.0f} s]")
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)
    return {"recipe": recipe.name, "profile": profile, "metric": recipe.metric.name, "goal": recipe.metric.goal,
            "trials": trials, "seeds": list(seeds), "knobs": [k.name for k in recipe.knobs],
            "runs": {m: rs for m, rs in runs.items() if rs},
            "summary": {m: aggregate(rs) for m, rs in runs.items() if rs}, "skipped": skipped}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipe", type=Path, default=DIGITS)
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--trials", type=int, default=8, help="trials per run after the baseline")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--methods", default="offline,optuna,random")
    ap.add_argument("--agent", action="append", default=[], help="add a loop backend row, e.g. --agent claude")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    methods = tuple(m for m in args.methods.split(",") if m) + tuple(args.agent)
    out = measure(args.recipe, args.profile or None, args.trials, tuple(int(s) for s in args.seeds.split(",")),
                  methods, log=lambda m: print(m, file=sys.stderr, flush=True))
    if args.json:
        print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
