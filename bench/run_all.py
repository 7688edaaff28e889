"""Run every benchmark and write docs/benchmarks.md.

    python -m bench                      # everything (about 30-40 minutes on 2 busy cores)
    python -m bench --tiny --out /tmp/b.md   # every benchmark at toy sizes, in about a minute
    python -m bench --only loop,views    # some of them (loop, evaluator, slots, views, yield, acceptance)
    python -m bench --yield-trials 8 --yield-seeds 0,1,2 [--agent claude]

Each benchmark is a module of this package that also runs alone; this file
starts one ``mlflow server --workers 1`` that the server-backed ones share,
runs them in turn, and renders the figures, each beside its target.  A
benchmark that fails is reported as failed in the document; the others
still run.  ``--tiny`` exists so the test suite can run every benchmark
(tests/bench/test_bench_tiny.py): its figures say nothing about speed.
"""

from __future__ import annotations

import argparse
import atexit
import json
import logging
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# lineage_views: the lineage-views benchmark, by its own author, called as is
from bench import (  # noqa: E402
    acceptance,
    backend_slots,
    evaluator_overhead,
    lineage_views,
    loop_overhead,
    search_yield,
    slot_utilization,
)
from bench._common import ROOT, in_folder, machine, sqlite_store, start_server  # noqa: E402
from bench._report import render  # noqa: E402

BENCHMARKS = ("loop", "evaluator", "slots", "views", "yield", "acceptance")
# Not in the tiny run of the test suite (tests/cluster/test_slurm.py runs the same path for real).
EXTRA = ("backends",)


class Sizes:
    """What each benchmark runs: the full figures, or toy sizes for the test suite."""

    def __init__(self, tiny: bool, args: argparse.Namespace) -> None:
        self.tiny = tiny
        self.loop_trials = [20] if tiny else [100, 1000, 10_000]
        self.loop_iterations = 3 if tiny else 6
        self.loop_timeout = 300 if tiny else 1800
        # Tiny: no end-of-run report, and the server rows in this process (a child costs seconds of imports).
        self.loop_report = not tiny
        self.loop_children = ("sqlite",) if tiny else ("sqlite", "server")
        self.eval_repeat = 1 if tiny else 5
        self.submit_repeat = 1 if tiny else 3
        self.digits_repeat = 1 if tiny else 2
        self.digits = (args.tiny_recipe, None) if tiny else (evaluator_overhead.DIGITS, "quick")
        self.slot_sleep = 0.2 if tiny else 1.0
        self.slot_factors = (1.0,) if tiny else (0.5, 1.0, 3.0)
        self.slot_counts = (2,) if tiny else (1, 2, 3, 4)
        self.slot_trials_per_slot = 2 if tiny else 5
        self.slot_default_ahead = not tiny  # also the rows with the default proposals_ahead
        self.view_trials = [200] if tiny else [1000, 10_000]
        self.views = 2 if tiny else 5
        self.naive = 1 if tiny else 2
        self.yield_recipe = (args.tiny_recipe, None) if tiny else (Path(args.yield_recipe), args.yield_profile or None)
        self.yield_trials = 1 if tiny else args.yield_trials
        self.yield_seeds = (0,) if tiny else tuple(int(s) for s in args.yield_seeds.split(","))
        self.yield_methods = tuple(m for m in args.yield_methods.split(",") if m) + tuple(args.agent)
        self.backend_sleep = 0.5 if tiny else 3.0
        self.backend_trials = 2 if tiny else 6


def _guard(results: dict, key: str, fn, log) -> None:
    t0 = time.perf_counter()
    try:
        results[key] = fn()
    except Exception as e:  # one benchmark failing must not lose the others' figures
        log(f"{key}: FAILED: {e}\n{traceback.format_exc()}")
        results[key] = {"error": f"{type(e).__name__}: {e}"}
    results.setdefault("seconds", {})[key] = round(time.perf_counter() - t0, 1)
    log(f"== {key} done in {results['seconds'][key]:.0f} s")


def run_all(tiny: bool = False, only: tuple[str, ...] = BENCHMARKS, out: Path | None = None,
            server=None, args: argparse.Namespace | None = None, command: str = "python -m bench",
            log=print) -> dict:
    """Run the benchmarks in ``only``; write the markdown to ``out`` (when given); return every figure.

    ``server``: a running :class:`tests.servers.MlflowServer` to use (the
    test suite shares its own); else one is started and stopped here.
    """
    args = args or parse_args([])
    sizes = Sizes(tiny, args)
    results: dict = {"machine": machine(), "command": command, "tiny": tiny, "only": list(only)}
    t_start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    own_server = None
    try:
        with in_folder(work):
            needs_server = any(b in only for b in ("loop", "views"))
            if needs_server and server is None:
                server = own_server = start_server(work / "server", log)
            if "loop" in only:
                _guard(results, "loop", lambda: _loop(sizes, work, server, log), log)
            if "evaluator" in only:
                _guard(results, "evaluator", lambda: evaluator_overhead.measure(
                    work / "evaluator", sizes.eval_repeat, sizes.submit_repeat, sizes.digits_repeat,
                    sizes.digits[0], sizes.digits[1], log=log), log)
            if "slots" in only:
                _guard(results, "slots", lambda: slot_utilization.measure(
                    sizes.slot_sleep, sizes.slot_factors, sizes.slot_counts, sizes.slot_trials_per_slot,
                    sizes.slot_default_ahead, log=log, work=work / "slots"), log)
            if "views" in only:
                _guard(results, "views", lambda: [
                    lineage_views.measure(server.url, server.db, n, sizes.views, sizes.naive, log)
                    for n in sizes.view_trials], log)
            if "acceptance" in only:
                _guard(results, "acceptance", lambda: acceptance.measure(
                    20 if tiny else 300, 1 if tiny else 2, log=log), log)
            if "yield" in only:
                recipe_dir, profile = sizes.yield_recipe
                _guard(results, "yield", lambda: search_yield.measure(
                    recipe_dir, profile, sizes.yield_trials, sizes.yield_seeds, sizes.yield_methods,
                    work=work / "yield", log=log), log)
            if "backends" in only:
                _guard(results, "backends", lambda: backend_slots.measure(
                    sizes.backend_sleep, 2, sizes.backend_trials, log=log, work=work / "backends"), log)
    finally:
        if own_server is not None:
            own_server.stop()
        shutil.rmtree(work, ignore_errors=True)
    results["total_s"] = round(time.perf_counter() - t_start, 1)
    results["machine_end"] = machine()
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(render(results))
        log(f"wrote {out}")
    return results


def _loop(sizes: Sizes, work: Path, server, log) -> dict:
    """Loop overhead (and peak memory): one child process per store and lineage size."""
    rows = []
    for backend in ("sqlite", "server"):
        for n in sizes.loop_trials:
            if backend == "sqlite":
                uri, db = sqlite_store(work / f"loop-{n}")
                root = None
            else:
                uri, db = server.url, server.db
                root = None if server.s3 else server.root / "artifacts"
            log(f"loop overhead: {backend}, {n} trials in the lineage …")
            if backend in sizes.loop_children:
                row = loop_overhead.run_child(uri, db, n, sizes.loop_iterations, root, sizes.loop_timeout,
                                              report=sizes.loop_report)
            else:
                row = loop_overhead.measure(uri, db, n, sizes.loop_iterations, root, log=log,
                                            report=sizes.loop_report)
            row["child_process"] = backend in sizes.loop_children
            row["store"] = backend
            log(f"  {row['overhead_per_trial_s']:.3f} s overhead per trial (wall {row['wall_per_trial_s']:.3f} s, "
                f"evaluate_code {row['evaluate_code_s']:.3f} s); first sync {row['first_sync_s']:.2f} s; "
                f"peak RSS {row['peak_rss_mb']:.0f} MB")
            rows.append(row)
    return {"rows": rows, "target_s": loop_overhead.TARGET_S}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="toy sizes (what the test suite runs); no real figures")
    ap.add_argument("--only", default=",".join(BENCHMARKS + EXTRA),
                    help="comma-separated: " + ", ".join(BENCHMARKS + EXTRA))
    ap.add_argument("--out", type=Path, default=None,
                    help="markdown to write (default docs/benchmarks.md; with --tiny, nothing unless given)")
    ap.add_argument("--json", type=Path, default=None, help="also write every figure as JSON here")
    ap.add_argument("--yield-recipe", default=str(ROOT / "recipes" / "digits-speedrun"))
    ap.add_argument("--yield-profile", default="quick")
    ap.add_argument("--yield-trials", type=int, default=8, help="trials per search run after the baseline")
    ap.add_argument("--yield-seeds", default="0,1,2")
    ap.add_argument("--yield-methods", default="offline,optuna,random")
    ap.add_argument("--agent", action="append", default=[],
                    help="add a loop backend to the search-yield rows (claude: needs ANTHROPIC_API_KEY)")
    ap.add_argument("--tiny-recipe", type=Path, default=None, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    only = tuple(b for b in args.only.split(",") if b)
    unknown = set(only) - set(BENCHMARKS + EXTRA)
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {', '.join(sorted(unknown))}; "
                         f"choose from {', '.join(BENCHMARKS + EXTRA)}")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    if args.tiny and args.tiny_recipe is None:
        from bench._common import knob_recipe

        folder = Path(tempfile.mkdtemp(prefix="bench-tiny-recipe-"))
        atexit.register(shutil.rmtree, folder, True)
        args.tiny_recipe = knob_recipe(folder / "knobs")
    out = args.out if args.out is not None or args.tiny else ROOT / "docs" / "benchmarks.md"
    command = "python -m bench" + ("" if argv is None and len(sys.argv) <= 1 else " " + " ".join(
        argv if argv is not None else sys.argv[1:]))
    results = run_all(args.tiny, only, out, args=args, command=command,
                      log=lambda m: print(m, file=sys.stderr, flush=True))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    return results


if __name__ == "__main__":
    main()
