"""Measure the offline playbook on a recipe for real, through the evaluator.

    python bench/offline_playbook.py moves [--recipe recipes/digits-speedrun] [--seeds 1] [--repeat 3]
    python bench/offline_playbook.py loop [--trials 20] [--seeds 1]

``moves``: every candidate the catalogue finds on the recipe's own code (and
the pairing the specialist would add to it), applied and scored with
``evaluate_code`` between two runs of the baseline, ``--repeat`` rounds;
prints a markdown table of medians (progress on stderr).
``loop``: a plain loop on an in-memory lineage (parent: the best, or the
newest unrepaired failure; roles in rotation) to show keeps, failures and
repairs.  The real loop lives in ``mlflow_autoresearch.loop``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections import Counter
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


def _configs(recipe, base):
    """(name, what changed, files): the baseline, every candidate, and the pairing the specialist would add."""
    out = [("baseline", "the recipe's own code", base)]
    for c in candidates(Source(recipe, base)):
        out.append((f"{c.move} {c.variant}".strip(), c.what, apply_edits(recipe, base, list(c.edits))))
        pair = _pairing(recipe, base, c, _is_speed(recipe), tight=False)
        if pair is not None:
            out.append((f"{c.move} + {pair[0].move} {pair[0].variant}", f"the above{pair[1]}",
                        apply_edits(recipe, base, list(c.edits + pair[0].edits))))
    return out


def moves(args) -> None:
    """Each configuration between two baseline runs (B C1 B C2 B ...), ``--repeat`` rounds.

    The change is read against the mean of the baseline runs just before and after it, which
    cancels most of the drift of a shared machine's load; the table shows medians over rounds.
    """
    recipe = load_recipe(args.recipe, args.profile)
    base = recipe_files(recipe)
    gate = recipe.gates[0].metric if recipe.gates else None
    configs = _configs(recipe, base)[1:]
    if args.only:
        configs = [c for c in configs if any(o in c[0] for o in args.only.split(","))]
    runs: dict[str, list] = {name: [] for name, _, _ in configs}
    ratios: dict[str, list[float]] = {name: [] for name, _, _ in configs}
    base_times: list[float] = []
    for r in range(args.repeat):
        before = _score(recipe, base, args.seeds).train_seconds
        base_times.append(before)
        for name, _, files in configs:
            ev = _score(recipe, files, args.seeds)
            after = _score(recipe, base, args.seeds).train_seconds
            base_times.append(after)
            runs[name].append(ev)
            if ev.train_seconds is not None and before and after:
                ratios[name].append(ev.train_seconds / ((before + after) / 2))
            print(f"# round {r + 1} {name}: {ev.outcome.value} {ev.train_seconds} {ev.metrics.get(gate)} "
                  f"(baselines {before:.2f}, {after:.2f})", file=sys.stderr, flush=True)
            before = after
    print(f"baseline: median {statistics.median(base_times):.2f} s over {len(base_times)} runs "
          f"(min {min(base_times):.2f}, max {max(base_times):.2f})\n")
    print(f"| move | what changed | outcomes | train_seconds (median of {args.repeat}) | vs neighbouring baselines | "
          f"{gate} |")
    print("|---|---|---|---|---|---|")
    for name, what, _ in configs:
        evs = runs[name]
        outs = ", ".join(f"{o}" + (f" x{n}" if n > 1 else "") for o, n in Counter(
            e.outcome.value + (" (near miss)" if e.near_miss else "") for e in evs).items())
        times = [e.train_seconds for e in evs if e.train_seconds is not None]
        accs = [e.metrics[gate] for e in evs if gate and gate in e.metrics]
        t = f"{statistics.median(times):.2f}" if times else "—"
        rel = f"{statistics.median(ratios[name]) - 1:+.0%}" if ratios[name] else "—"
        acc = f"{statistics.median(accs):.4f}" if accs else "—"
        print(f"| {name} | {what.replace('|', '/')} | {outs} | {t} | {rel} | {acc} |", flush=True)


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
    ap.add_argument("--repeat", type=int, default=3, help="runs per configuration (moves)")
    ap.add_argument("--only", default="", help="comma-separated substrings of move names (moves)")
    args = ap.parse_args(argv)
    {"moves": moves, "loop": loop}[args.what](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
