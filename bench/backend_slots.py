"""Slot utilization through MLflow's local backend and through SLURM, side by side in one run.

    python -m bench.backend_slots [--sleep 3] [--slots 2] [--trials 6] [--markdown]

The real loop on a local SQLite store, the same no-op recipe (its training
sleeps ``--sleep`` seconds) and an instant specialist, with evaluations
submitted through ``mlflow.projects.run``: one loop with ``--backend local`` (a
process per trial on this machine) and, at the same time in the same process
(so that both see the same load), one with ``--backend slurm`` against a
one-node SLURM on 127.0.0.1 (``mlflow_autoresearch.slurm.local``, started and
stopped here; needs root and Debian's slurm packages, else that row says why
it is missing).  ``--slots`` jobs at once.

Per trial (medians over the trials after the baseline):

- **slot time**: how long a slot was busy with the trial (submit to result);
- **evaluator**: the evaluator's own clock for the evaluation (feedback.json
  ``total_seconds``: the sandboxed training plus its checks);
- **overhead** = slot time - evaluator: process start and imports, code
  download, recording, and for SLURM also ``sbatch``, the queue, job start
  and the poll that notices the end;
- SLURM only: the ``sbatch`` call, the queue wait (submit to start, from
  ``squeue``, whole seconds) and how long after the job's end the loop saw it
  (the poll, and attaching the logs).

Utilization: **steady** (per slot, from its first evaluation's start to its
last one's, the share of time busy) and **whole run** (``LoopResult.utilization``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import InstantSpecialist, in_folder, median, noop_recipe, sqlite_store  # noqa: E402
from bench.slot_utilization import steady_utilization  # noqa: E402

FAKE_ENV = "AUTORESEARCH_FAKE_GPUS"
SUBMITS: list[float] = []  # seconds of each sbatch call (only the slurm loop makes them)


def _timed_submit(real):
    def submit(*a, **kw):
        t0 = time.perf_counter()
        try:
            return real(*a, **kw)
        finally:
            SUBMITS.append(time.perf_counter() - t0)

    return submit


def _loop_class():
    from mlflow_autoresearch.loop import Loop
    from mlflow_autoresearch.trial import BASELINE

    class TimedLoop(Loop):
        """The real loop, recording (on the wall clock) when each slot evaluated which trial."""

        def __init__(self, *a, **kw) -> None:
            super().__init__(*a, **kw)
            self.intervals: list[tuple[str, float, float]] = []

        def _evaluate(self, trial, gpu):
            t0 = time.time()
            try:
                return super()._evaluate(trial, gpu)
            finally:
                if trial.specialist != BASELINE:
                    self.intervals.append((trial.run_id, t0, time.time()))

        def _log_report(self) -> None:
            return None

    return TimedLoop


def _slot_intervals(intervals):
    """Slots are None on a CPU machine: tell them apart by which thread ran them (one at a time per slot)."""
    ends: list[float] = []  # the end of each slot's latest evaluation
    rows = []
    for _, start, end in sorted(intervals, key=lambda i: i[1]):
        slot = next((i for i, e in enumerate(ends) if e <= start), None)
        if slot is None:
            ends.append(end)
            slot = len(ends) - 1
        else:
            ends[slot] = end
        rows.append((str(slot), start, end))
    return rows


def _squeue_times(names: set[str]) -> dict[str, tuple[float, float, float]]:
    """Per job name: submit, start and end time (slurmctld's clock, whole seconds)."""
    out = subprocess.run(["squeue", "-h", "--states=all", "-o", "%j|%V|%S|%e"], capture_output=True, text=True,
                         check=False)
    times = {}
    for line in out.stdout.splitlines():
        name, *stamps = line.split("|")
        if name in names and all(x not in ("N/A", "Unknown") for x in stamps):
            times[name] = tuple(datetime.fromisoformat(x).timestamp() for x in stamps)
    return times


def run_backend(backend: str, recipe, uri: str, slots: int, trials: int, config: Path | None, log) -> dict:
    from mlflow_autoresearch.lineage import MlflowStore
    from mlflow_autoresearch.settings import make_settings

    name = f"bench-{backend}-{uuid.uuid4().hex[:8]}"
    settings = make_settings(tracking_uri=uri, experiment=name, trials=trials, slots=slots, proposals_ahead=1,
                             agent="offline", backend=backend, backend_config=str(config) if config else None)
    store = MlflowStore(name, uri)
    loop = _loop_class()(recipe, settings, store=store, specialist=InstantSpecialist(0.0), echo=lambda m: None)
    result = loop.run()
    if result.trials != trials:
        raise RuntimeError(f"{backend}: {result.trials} of {trials} trials ({result.stop_reason}; "
                           f"{dict(result.outcomes)})")
    by_id = {t.run_id: t for t in store.trials()}
    slot_s = [end - start for _, start, end in loop.intervals]
    evaluator_s = [json.loads(store.read_artifact(r, "feedback.json"))["total_seconds"] for r, *_ in loop.intervals]
    row = {"backend": backend, "slots": slots, "trials": trials, "outcomes": dict(result.outcomes),
           "slot_s": median(slot_s), "evaluator_s": median(evaluator_s),
           "overhead_s": median([s - e for s, e in zip(slot_s, evaluator_s, strict=True)]),
           "steady": steady_utilization(_slot_intervals(loop.intervals)), "whole": result.utilization,
           "wall_s": result.wall_seconds}
    if backend == "slurm":
        times = _squeue_times({f"mlflow-{r}" for r in by_id})
        waits = [start - submit for submit, start, _ in times.values()]
        seen = [t1 - times[f"mlflow-{r}"][2] for r, _, t1 in loop.intervals if f"mlflow-{r}" in times]
        row.update(sbatch_s=median(SUBMITS) if SUBMITS else None, queue_s=median(waits) if waits else None,
                   end_seen_s=median(seen) if seen else None, jobs=len(times))
    log(f"{backend}: slot {row['slot_s']:.2f} s/trial, evaluator {row['evaluator_s']:.2f} s, overhead "
        f"{row['overhead_s']:.2f} s; steady {row['steady']:.1%}, whole run {row['whole']:.1%}")
    return row


def slurm_unavailable() -> str | None:
    from mlflow_autoresearch.slurm.local import INSTALL_HINT, missing_binaries

    if os.geteuid() != 0:
        return "the local SLURM cluster needs root"
    missing = missing_binaries()
    return f"SLURM is not installed ({' '.join(missing)}; {INSTALL_HINT})" if missing else None


def measure(sleep: float = 3.0, slots: int = 2, trials: int = 6, poll_seconds: float = 2.0, log=print,
            work: Path | None = None) -> dict:
    from mlflow_autoresearch.recipe import load_recipe
    from mlflow_autoresearch.slurm import _jobs
    from mlflow_autoresearch.slurm.local import LocalSlurm

    own = work is None
    work = Path(tempfile.mkdtemp(prefix="bench-backends-")) if own else work
    work.mkdir(parents=True, exist_ok=True)
    rows, missing = [], slurm_unavailable()
    saved_conf, saved_fake, real_submit = os.environ.get("SLURM_CONF"), os.environ.get(FAKE_ENV), _jobs.submit
    os.environ[FAKE_ENV] = ""  # no GPU: the local backend's slots are plain processes
    _jobs.submit = _timed_submit(real_submit)
    SUBMITS.clear()
    try:
        with in_folder(work):
            recipe = load_recipe(noop_recipe(work / "sleep", sleep=sleep, name="bench-sleep"))
            uri, _db = sqlite_store(work / "store")
            os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
            cluster = None
            if missing is None:
                cluster = LocalSlurm(work / "slurm", cpus=max(slots, 2)).start()
                os.environ["SLURM_CONF"] = str(cluster.conf)
            try:
                config = work / "slurm.json"
                config.write_text(json.dumps({"job_dir": str(work / "jobs"), "poll_seconds": poll_seconds}))
                # Both loops at once, so that both see the same load on this shared machine.
                with ThreadPoolExecutor(2) as pool:
                    futures = [pool.submit(run_backend, "local", recipe, uri, slots, trials, None, log)]
                    if cluster is not None:
                        futures.append(pool.submit(run_backend, "slurm", recipe, uri, slots, trials, config, log))
                    rows = [f.result() for f in futures]
            finally:
                if cluster is not None:
                    cluster.stop()
        return {"sleep_s": sleep, "slots": slots, "trials": trials, "poll_seconds": poll_seconds, "rows": rows,
                "slurm_missing": missing}
    finally:
        _jobs.submit = real_submit
        for key, value in (("SLURM_CONF", saved_conf), (FAKE_ENV, saved_fake)):
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if own:
            shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sleep", type=float, default=3.0, help="seconds each trial's training sleeps")
    ap.add_argument("--slots", type=int, default=2, help="evaluations (jobs) at once")
    ap.add_argument("--trials", type=int, default=6, help="trials per backend after the baseline")
    ap.add_argument("--poll-seconds", type=float, default=2.0, help="the slurm backend's squeue poll (default 2)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--markdown", action="store_true", help="print the docs/benchmarks.md section")
    args = ap.parse_args(argv)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    out = measure(args.sleep, args.slots, args.trials, args.poll_seconds,
                  log=lambda m: print(m, file=sys.stderr, flush=True))
    if args.json:
        print(json.dumps(out))
    if args.markdown:
        from bench._report import backends_section

        print("\n".join(backends_section({"backends": out})))
    return out


if __name__ == "__main__":
    main()
