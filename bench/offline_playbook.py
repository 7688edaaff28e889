"""Measure the offline playbook on a recipe for real, through the evaluator.

    python bench/offline_playbook.py moves [--recipe recipes/digits-speedrun] [--seeds 1] [--repeat-baseline 3]
    python bench/offline_playbook.py loop [--trials 20] [--seeds 1]

``moves``: every candidate the catalogue finds on the recipe's own code (and,
for a time score, the pairing with a shorter schedule the specialist would
propose), applied and scored with ``evaluate_code``; prints a markdown table.
``loop``: a plain loop on an in-memory lineage (parent: the best, or the
newest unrepaired failure; roles in rotation) to show keeps, failures and
repairs.  The real loop lives in ``mlflow_autoresearch.loop``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from mlflow_autoresearch.evaluator import evaluate_code
from mlflow_autoresearch.lineage import InMemoryStore, Lineage, write_snapshot
from mlflow_autoresearch.outcome import Outcome
from mlflow_autoresearch.recipe import load_recipe
from mlflow_autoresearch.specialists import ProposalContext, apply_edits, roster
from mlflow_autoresearch.specialists._offline import OfflineSpecialist, _is_speed, _pairing
from mlflow_autoresearch.specialists.playbook import Source, candidates
from mlflow_autoresearch.trial import create_trial, evaluate_trial, recipe_files


def _score(recipe, files, seeds):
    with tempfile.TemporaryDirectory() as tmp:
        write_snapshot(files, Path(tmp))
        return evaluate_code(recipe, tmp, seeds=seeds)


def _row(name, what, ev, gate):
    acc = ev.metrics.get(gate) if gate else None
    t = f"{ev.train_seconds:.2f}" if ev.train_seconds is not None else "—"
    a = f"{acc:.4f}" if acc is not None else "—"
    why = "" if ev.outcome is Outcome.OK else f": {ev.reason}"
    return f"| {name} | {what} | {ev.outcome.value}{why} | {t} | {a} |"


def moves(args) -> None:
    recipe = load_recipe(args.recipe, args.profile)
    base = recipe_files(recipe)
    gate = recipe.gates[0].metric if recipe.gates else None
    print("| move | what changed | outcome | train_seconds | " + (gate or "") + " |\n|---|---|---|---|---|")
    for i in range(args.repeat_baseline):
        print(_row(f"baseline #{i + 1}", "the recipe's own code", _score(recipe, base, args.seeds), gate), flush=True)
    for c in candidates(Source(recipe, base)):
        files = apply_edits(recipe, base, list(c.edits))
        print(_row(f"{c.move} {c.variant}".strip(), c.what.replace("|", "/"), _score(recipe, files, args.seeds), gate),
              flush=True)
        pair = _pairing(recipe, base, c, _is_speed(recipe))
        if pair is not None:
            files = apply_edits(recipe, base, list(c.edits + pair[0].edits))
            print(_row(f"{c.move} + {pair[0].move} {pair[0].variant}", f"the above{pair[1]}",
                       _score(recipe, files, args.seeds), gate), flush=True)


def loop(args) -> None:
    recipe = load_recipe(args.recipe, args.profile)
    store = InMemoryStore("bench")
    base = create_trial(store, recipe, recipe_files(recipe), specialist="baseline", hypothesis="baseline",
                        backend="none")
    evaluate_trial(store, base.run_id, recipe=recipe, seeds=args.seeds)
    roles = roster(recipe)
    spec = OfflineSpecialist(seed=args.seed)
    for n in range(args.trials):
        lineage = Lineage.load(store, recipe.metric.goal)
        failed = [t for t in lineage.finished if t.outcome in (Outcome.GATE_FAILED, Outcome.CRASHED,
                  Outcome.TIMED_OUT, Outcome.SIZE_EXCEEDED) and not lineage.children(t.run_id)
                  and (t.outcome is not Outcome.GATE_FAILED or t.near_miss)]
        parent = failed[-1] if failed else (lineage.best or lineage.baseline)
        role = roles[n % len(roles)]
        ctx = ProposalContext(recipe=recipe, role=role, parent=parent, parent_files=store.code(parent.run_id),
                              lineage=lineage, store=store, rng_seed=args.seed)
        t0 = time.monotonic()
        p = spec.propose(ctx)
        took = time.monotonic() - t0
        if p.invalid_reason:
            print(f"{n + 1:2d} [{role.name}] invalid: {p.invalid_reason}")
            continue
        trial = create_trial(store, recipe, p.files, specialist=role.name, hypothesis=p.hypothesis, parent=parent,
                             expected_effect=p.expected_effect)
        done = evaluate_trial(store, trial.run_id, recipe=recipe, seeds=args.seeds)
        acc = done.metrics.get(recipe.gates[0].metric) if recipe.gates else None
        print(f"{done.short} parent {parent.short} [{role.name}] {done.outcome.value}{'~' if done.near_miss else ''}"
              f"/{done.decision} score {done.score if done.score is None else round(done.score, 3)} "
              f"acc {acc if acc is None else round(acc, 4)} (proposed in {took * 1000:.0f} ms)\n    {p.hypothesis}",
              flush=True)
    best = Lineage.load(store, recipe.metric.goal).best
    print(f"best: {best.short} {best.score:.3f}: {best.hypothesis}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["moves", "loop"])
    ap.add_argument("--recipe", default="recipes/digits-speedrun")
    ap.add_argument("--profile", default=None)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--repeat-baseline", type=int, default=3)
    args = ap.parse_args(argv)
    {"moves": moves, "loop": loop}[args.what](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
