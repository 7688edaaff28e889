"""Loop overhead per trial, and the loop process's peak memory, with N trials already in the lineage.

    python -m bench.loop_overhead --tracking-uri sqlite:////tmp/x/mlflow.db --db /tmp/x/mlflow.db \
        --trials 10000 --iterations 6 [--artifact-root DIR] [--json]

One loop process (run it as a child: its ``ru_maxrss`` is the peak memory
of a loop that synced and rendered that lineage):

1. fills a new experiment with N finished trials (written straight into the
   SQLite file; each gets a real ``code/`` artifact);
2. runs the real :class:`~mlflow_autoresearch.loop.Loop` for ``--iterations``
   trials with one slot, an instant specialist that renders the lineage views
   (the model reduced to nothing) and a no-op recipe evaluated in-process;
3. measures, from the loop's own progress lines, the wall time between
   consecutive finished trials (steady state: the loop's start, with its
   first full sync, is reported apart), and subtracts the median time the
   evaluator spent in ``evaluate_code`` on the no-op trial.

What is left is everything except training and model thinking: choosing
the parent, syncing the lineage, rendering the views, reading the parent's
code, the duplicate check, creating the run and logging ``code/``,
``patch.diff`` and ``proposal.json``, the acceptance, logging the result and
the logs, and the progress line.  With one slot the next proposal is made
while the current trial trains (as in the real loop), so the wall figure is
what a user pays per trial; the per-part seconds are reported too.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import resource
import shutil
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import InstantSpecialist, Timer, median, noop_recipe, populate_lineage  # noqa: E402

TARGET_S = 1.0  # issue 9: under 1 s per trial at 10,000 trials


_FINISHED = re.compile(r"t\d{4,} (keep|discard|baseline) ")

def _bench_loop_class():
    from mlflow_autoresearch.loop import Loop

    class BenchLoop(Loop):
        """The real loop, with stopwatches on its parts (no behaviour changed)."""

        def __init__(self, *a, **kw) -> None:
            super().__init__(*a, **kw)
            self.first_sync_s: float | None = None
            self.sync_main, self.sync_other = Timer(), Timer()
            self.propose_t = Timer()
            self.report_s = 0.0
            self.rss_trials_mb = 0.0
            self.report = True

        def lineage(self):
            t0 = time.perf_counter()
            try:
                return super().lineage()
            finally:
                dt = time.perf_counter() - t0
                if self.first_sync_s is None:
                    self.first_sync_s = dt
                elif threading.current_thread() is threading.main_thread():
                    self.sync_main.add(dt)
                else:
                    self.sync_other.add(dt)

        def _propose(self, choice, lineage):
            t0 = time.perf_counter()
            try:
                return super()._propose(choice, lineage)
            finally:
                self.propose_t.add(time.perf_counter() - t0)

        def _log_report(self) -> None:
            self.rss_trials_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            if not self.report:
                return
            t0 = time.perf_counter()
            super()._log_report()
            self.report_s = time.perf_counter() - t0

    return BenchLoop


def measure(tracking_uri: str, db: Path, n: int, iterations: int, artifact_root: Path | None = None,
            log=print, report: bool = True) -> dict:
    """Run the loop for ``iterations`` trials over a lineage of ``n`` trials; see the module doc."""
    if iterations < 2:
        raise ValueError("iterations must be at least 2 (the figure is the time between finished trials)")
    work = Path(tempfile.mkdtemp(prefix="bench-loop-"))
    try:
        return _measure(tracking_uri, db, n, iterations, artifact_root, log, report, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _measure(tracking_uri: str, db: Path, n: int, iterations: int, artifact_root: Path | None, log, report: bool,
             work: Path) -> dict:
    from mlflow_autoresearch import trial as trial_module
    from mlflow_autoresearch.lineage import MlflowStore
    from mlflow_autoresearch.recipe import load_recipe
    from mlflow_autoresearch.settings import make_settings

    recipe = load_recipe(noop_recipe(work / "noop"))
    name = f"bench-loop-{uuid.uuid4().hex[:8]}"
    setup = MlflowStore(name, tracking_uri)
    populate_s = populate_lineage(setup, db, n, artifact_root, recipe.root) if n else 0.0
    log(f"{n} trials in the lineage ({populate_s:.1f} s to write them)")

    # Stopwatches on the evaluator call and on the result logging (the functions the loop calls).
    evaluate, record = Timer(), Timer()
    orig_eval, orig_record = trial_module.evaluate_code, trial_module.record_evaluation
    trial_module.evaluate_code = evaluate.wrap(orig_eval)
    trial_module.record_evaluation = record.wrap(orig_record)
    stamps: list[float] = []
    cpu: list[float] = []

    def echo(msg: str) -> None:
        if _FINISHED.match(msg):  # one line per finished trial (loop/_progress.py: trial_line)
            stamps.append(time.perf_counter())
            ru = resource.getrusage(resource.RUSAGE_SELF)
            cpu.append(ru.ru_utime + ru.ru_stime)

    specialist = InstantSpecialist()
    store = MlflowStore(name, tracking_uri)
    claims, creates = Timer(), Timer()
    store.claim = claims.wrap(store.claim)  # the ledger's compare-and-set: trial numbers, duplicate code
    store.create_trial = creates.wrap(store.create_trial)
    settings = make_settings(tracking_uri=tracking_uri, experiment=name, trials=iterations, in_process=True,
                             slots=1, proposals_ahead=0, agent="offline")
    try:
        t0 = time.perf_counter()
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        loop = _bench_loop_class()(recipe, settings, store=store, specialist=specialist, echo=echo)
        rss_init = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        if not report:
            loop.report = False
        result = loop.run()
        total_s = time.perf_counter() - t0
    finally:
        trial_module.evaluate_code, trial_module.record_evaluation = orig_eval, orig_record
    if result.trials != iterations or len(stamps) != iterations:
        raise RuntimeError(f"the loop finished {result.trials} trials ({len(stamps)} reported), expected {iterations}: "
                           f"{result.stop_reason}; outcomes {dict(result.outcomes)}")
    if result.outcomes.get("ok", 0) != iterations:
        raise RuntimeError(f"the no-op trials did not all pass: {dict(result.outcomes)}")
    per_trial = (stamps[-1] - stamps[0]) / (iterations - 1)
    eval_s = median(evaluate.seconds)
    syncs = loop.sync_main.count + loop.sync_other.count
    out = {
        "trials": n,
        "iterations": iterations,
        "populate_s": round(populate_s, 2),
        "start_s": round(stamps[0] - t0, 3),  # loop start to the first finished trial (first full sync)
        "first_sync_s": round(loop.first_sync_s or 0.0, 3),
        "wall_per_trial_s": round(per_trial, 4),
        "evaluate_code_s": round(eval_s, 4),
        "overhead_per_trial_s": round(per_trial - eval_s, 4),
        # CPU of the loop process (all its threads; the trial's own processes are not in it) per trial
        "cpu_per_trial_s": round((cpu[-1] - cpu[0]) / (iterations - 1), 4),
        "propose_s": round(median(loop.propose_t.seconds), 4),  # in the proposer thread, the specialist included
        "render_s": round(median(specialist.render.seconds), 4),
        "record_s": round(median(record.seconds), 4),  # acceptance + result, logs and note written
        "create_s": round(median(creates.seconds), 4),  # the run with code/, patch.diff, proposal.json
        "claim_s": round(median(claims.seconds), 4),
        "claims_per_trial": round(claims.count / iterations, 2),
        "syncs_per_trial": round(syncs / iterations, 2),
        "sync_s": round(median(loop.sync_main.seconds + loop.sync_other.seconds), 4),
        "report_s": round(loop.report_s, 2),
        "total_s": round(total_s, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),  # report included
        "rss_trials_mb": round(loop.rss_trials_mb, 1),  # peak until the last trial finished
        "rss_before_loop_mb": round(rss_before, 1),  # imports (mlflow, the plugin) and the filled store
        "rss_after_init_mb": round(rss_init, 1),  # + what building the Loop imported (slot detection)
        "target_s": TARGET_S,
    }
    out["meets_target"] = out["overhead_per_trial_s"] < TARGET_S
    log(f"n={n}: {per_trial:.3f} s per trial, of which evaluate_code {eval_s:.3f} s: overhead "
        f"{out['overhead_per_trial_s']:.3f} s (propose {out['propose_s']:.3f} s, record {out['record_s']:.3f} s, "
        f"{out['syncs_per_trial']} syncs/trial at {out['sync_s']:.3f} s); first sync {out['first_sync_s']:.2f} s; "
        f"peak RSS {out['peak_rss_mb']:.0f} MB")
    return out


def run_child(tracking_uri: str, db: Path, n: int, iterations: int, artifact_root: Path | None, timeout: float,
              report: bool = True) -> dict:
    """:func:`measure` in a fresh Python process (so its peak RSS is this loop's alone)."""
    import subprocess

    argv = [sys.executable, "-m", "bench.loop_overhead", "--tracking-uri", tracking_uri, "--db", str(db),
            "--trials", str(n), "--iterations", str(iterations), "--json"]
    if artifact_root is not None:
        argv += ["--artifact-root", str(artifact_root)]
    if not report:
        argv.append("--no-report")
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    # In the database's folder: a local store's ./mlruns goes there.
    proc = subprocess.run(argv, cwd=db.parent, env=env, capture_output=True, text=True, timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"loop overhead child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tracking-uri", required=True)
    ap.add_argument("--db", type=Path, required=True, help="the SQLite file behind the tracking URI")
    ap.add_argument("--artifact-root", type=Path, default=None, help="the server's --artifacts-destination")
    ap.add_argument("--trials", type=int, default=1000, help="trials already in the lineage")
    ap.add_argument("--iterations", type=int, default=6, help="loop trials measured")
    ap.add_argument("--no-report", action="store_true", help="skip the report the loop logs at its end")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    if args.artifact_root is None:
        os.chdir(args.db.parent)  # a local store's ./mlruns beside its database
    out = measure(args.tracking_uri, args.db, args.trials, args.iterations, args.artifact_root,
                  log=lambda m: print(m, file=sys.stderr, flush=True), report=not args.no_report)
    if args.json:
        print(json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    main()
