"""Slot utilization against simulated model latency: do the slots wait on the model?

    python -m bench.slot_utilization [--sleep 1.0] [--factors 0.5,1,3] [--slots 1,2,3,4] [--trials-per-slot 5]

The real loop on a local SQLite store, evaluations in-process, a recipe whose
training sleeps ``--sleep`` seconds, and a specialist that sleeps ``factor``
times the measured trial time (the model's latency; nothing else of a model).
Slots are faked on the CPU with ``AUTORESEARCH_FAKE_GPUS=0,1,..``.  For each
latency and slot count it runs twice: with the default ``proposals_ahead``
(1) and with enough proposals in flight, ``proposals_ahead =
ceil(slots * factor) - slots + 2``, so that ``slots * latency / trial time``
proposals can be thinking while every slot trains.

Two figures per run:

- steady-state utilization: for each slot, from the start of its first
  evaluation to the start of its last one, the share of time it was
  evaluating (so the pipeline filling at the start, the baseline, and the
  drain after the budget's last trial are left out);
- whole-run utilization: the loop's own ``LoopResult.utilization`` (busy
  slot-seconds over wall seconds times slots, start to stop).

Target (issue 3): at least 95% when enough proposals are in flight
(judged on the steady-state figure).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import InstantSpecialist, in_folder, median, noop_recipe, sqlite_store  # noqa: E402

TARGET = 0.95
FAKE_ENV = "AUTORESEARCH_FAKE_GPUS"


def enough_ahead(slots: int, factor: float) -> int:
    """Proposals beyond the slots so that none waits on a model ``factor`` times slower than a trial."""
    return max(1, math.ceil(slots * factor) - slots + 2)


def steady_utilization(intervals: list[tuple[str, float, float]]) -> float:
    """Per slot, busy share from its first evaluation's start to its last one's; pooled over slots."""
    busy = span = 0.0
    by_slot: dict[str, list[tuple[float, float]]] = {}
    for slot, start, end in intervals:
        by_slot.setdefault(slot, []).append((start, end))
    for evs in by_slot.values():
        evs.sort()
        if len(evs) < 2:
            continue
        span += evs[-1][0] - evs[0][0]
        busy += sum(min(end, evs[-1][0]) - start for start, end in evs[:-1])
    return busy / span if span > 0 else float("nan")


def _util_loop_class():
    from mlflow_autoresearch.loop import Loop
    from mlflow_autoresearch.trial import BASELINE

    class UtilLoop(Loop):
        """The real loop, recording when each slot evaluated what."""

        def __init__(self, *a, **kw) -> None:
            super().__init__(*a, **kw)
            self.intervals: list[tuple[str, float, float]] = []

        def _evaluate(self, trial, gpu):
            t0 = time.monotonic()
            try:
                return super()._evaluate(trial, gpu)
            finally:
                if trial.specialist != BASELINE:
                    self.intervals.append((str(gpu), t0, time.monotonic()))

        def _log_report(self) -> None:  # once per run, after the figures are taken
            return None

    return UtilLoop


def trial_seconds(recipe, tracking_uri: str, repeats: int = 2) -> float:
    """A slot's time for one trial of ``recipe``: create, evaluate in-process, record (median)."""
    from mlflow_autoresearch.lineage import MlflowStore
    from mlflow_autoresearch.trial import create_trial, evaluate_trial, recipe_files

    store = MlflowStore(f"bench-calibrate-{uuid.uuid4().hex[:8]}", tracking_uri)
    times = []
    for i in range(repeats):
        t = create_trial(store, recipe, recipe_files(recipe), specialist="calibrate", hypothesis=f"calibration {i}")
        t0 = time.perf_counter()
        evaluate_trial(store, t.run_id, recipe=recipe)
        times.append(time.perf_counter() - t0)
    return median(times)


def run_config(recipe, tracking_uri: str, slots: int, latency: float, ahead: int, trials: int) -> dict:
    from mlflow_autoresearch.lineage import MlflowStore
    from mlflow_autoresearch.settings import make_settings

    saved = os.environ.get(FAKE_ENV)
    os.environ[FAKE_ENV] = ",".join(str(i) for i in range(slots))
    try:
        name = f"bench-slots-{uuid.uuid4().hex[:8]}"
        settings = make_settings(tracking_uri=tracking_uri, experiment=name, trials=trials, in_process=True,
                                 proposals_ahead=ahead, agent="offline")
        loop = _util_loop_class()(recipe, settings, store=MlflowStore(name, tracking_uri),
                                  specialist=InstantSpecialist(latency), echo=lambda m: None)
        result = loop.run()
    finally:
        if saved is None:
            os.environ.pop(FAKE_ENV, None)
        else:
            os.environ[FAKE_ENV] = saved
    if result.trials != trials:
        raise RuntimeError(f"slots={slots} latency={latency:.2f}: {result.trials} of {trials} trials "
                           f"({result.stop_reason}; {dict(result.outcomes)})")
    return {"slots": len(loop.slots), "proposals_ahead": ahead, "trials": trials,
            "outcomes": dict(result.outcomes), "steady": steady_utilization(loop.intervals),
            "whole": result.utilization, "wall_s": result.wall_seconds}


def measure(sleep: float = 1.0, factors=(0.5, 1.0, 3.0), slot_counts=(1, 2, 3, 4), trials_per_slot: int = 5,
            default_ahead: bool = True, log=print, work: Path | None = None) -> dict:
    """Every (factor, slots) pair, with enough proposals ahead and (``default_ahead``) with the default."""
    from mlflow_autoresearch.recipe import load_recipe
    from mlflow_autoresearch.settings import Settings

    own = work is None
    work = Path(tempfile.mkdtemp(prefix="bench-slots-")) if own else work
    try:
        with in_folder(work):
            recipe = load_recipe(noop_recipe(work / "sleep", sleep=sleep, name="bench-sleep"))
            uri, _db = sqlite_store(work / "store")
            trial_s = trial_seconds(recipe, uri)
            log(f"trial time: {trial_s:.2f} s per trial on a slot (training sleeps {sleep:g} s)")
            default = Settings.model_fields["proposals_ahead"].default
            rows = []
            for factor in factors:
                latency = factor * trial_s
                for s in slot_counts:
                    modes = [("enough", enough_ahead(s, factor))]
                    if default_ahead and enough_ahead(s, factor) != default:
                        modes.insert(0, ("default", default))
                    for mode, ahead in modes:
                        t0 = time.perf_counter()
                        row = run_config(recipe, uri, s, latency, ahead, max(trials_per_slot * s, 4))
                        row.update(factor=factor, latency_s=latency, mode=mode,
                                   meets_target=(row["steady"] >= TARGET) if mode == "enough" else None)
                        if mode == "enough" and ahead == default:
                            row["mode"] = "enough = default"
                        rows.append(row)
                        log(f"latency {factor:g}x ({latency:.2f} s), {s} slot(s), proposals_ahead {ahead} ({mode}): "
                            f"steady {row['steady']:.1%}, whole run {row['whole']:.1%} "
                            f"[{time.perf_counter() - t0:.0f} s]")
            enough = [r for r in rows if r["meets_target"] is not None]
            return {"trial_s": trial_s, "sleep_s": sleep, "rows": rows, "target": TARGET,
                    "meets_target": all(r["meets_target"] for r in enough) if enough else None}
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sleep", type=float, default=1.0, help="seconds each trial's training sleeps")
    ap.add_argument("--factors", default="0.5,1,3", help="model latency as multiples of the trial time")
    ap.add_argument("--slots", default="1,2,3,4")
    ap.add_argument("--trials-per-slot", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    out = measure(args.sleep, tuple(float(x) for x in args.factors.split(",")),
                  tuple(int(x) for x in args.slots.split(",")), args.trials_per_slot,
                  log=lambda m: print(m, file=sys.stderr, flush=True))
    if args.json:
        print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
