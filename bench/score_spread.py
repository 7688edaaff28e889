"""Which digits score is steadier on a shared CPU: the evaluator's wall clock or the CPU seconds of the trial?

    python -m bench.score_spread --evaluations 4     # 4 evaluations of the baseline, 2 seeds each

Evaluates the recipe's own code several times through the real evaluator and
learns the noise model (between seeds of one evaluation; drift between
evaluations) of ``train_seconds`` (the evaluator's wall clock of the training
command) and of ``cpu_seconds`` (user+sys of the trial's whole process tree),
side by side from the same runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlflow_autoresearch.acceptance import NoiseModel, Scale  # noqa: E402
from mlflow_autoresearch.evaluator import evaluate_code  # noqa: E402
from mlflow_autoresearch.recipe import load_recipe  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SCORES = ("train_seconds", "cpu_seconds")


def measure(recipe_dir: Path, evaluations: int, seeds: int, log=print) -> dict:
    recipe = load_recipe(recipe_dir)
    windows: dict[str, dict[str, list[float]]] = {s: {} for s in SCORES}
    loads = []
    for i in range(evaluations):
        loads.append(os.getloadavg()[0])
        ev = evaluate_code(recipe, recipe.root, seeds=list(range(seeds)))
        for s in SCORES:
            windows[s][f"eval{i}"] = [m[s] for m in ev.seed_metrics if s in m]
        log(f"evaluation {i + 1}/{evaluations} ({ev.outcome.value}, load {loads[-1]:.1f}): "
            + ", ".join(f"{s} {windows[s][f'eval{i}']}" for s in SCORES))
    out = {"evaluations": evaluations, "seeds": seeds, "load": loads}
    for s in SCORES:
        values = [v for vals in windows[s].values() for v in vals]
        nm = NoiseModel.learn({"baseline": windows[s]}, Scale("relative"))
        mean = sum(values) / len(values) if values else None
        out[s] = {"mean": mean, "sigma": nm.sigma, "drift": nm.drift, "values": windows[s]}
    return out


def render(r: dict) -> str:
    lines = [f"`python -m bench.score_spread --evaluations {r['evaluations']} --seeds {r['seeds']}` "
             f"(1-minute load during the run: {min(r['load']):.1f}-{max(r['load']):.1f}):", "",
             "| score | mean | spread between seeds of one evaluation | drift between evaluations |", "|---|---|---|---|"]
    for s in SCORES:
        x = r[s]
        pct = lambda v: "—" if v is None else f"±{v * 100:.1f}%"  # noqa: E731
        lines.append(f"| `{s}` | {x['mean']:.2f} s | {pct(x['sigma'])} | {pct(x['drift'])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipe", default=str(ROOT / "recipes" / "digits-speedrun"))
    ap.add_argument("--evaluations", type=int, default=4)
    ap.add_argument("--seeds", type=int, default=2)
    args = ap.parse_args(argv)
    r = measure(Path(args.recipe), args.evaluations, args.seeds)
    print(render(r))
    return r


if __name__ == "__main__":
    main()
