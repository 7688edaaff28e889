"""How fast an agent's lineage view is on a big lineage behind a tracking server.

    python bench/lineage_views.py [--trials 10000] [--views 5] [--naive 2] [--json]
    python bench/lineage_views.py --trials 200 --tracking-uri http://127.0.0.1:5000 --db /path/mlflow.db

Starts ``mlflow server --workers 1`` on 127.0.0.1 with a SQLite backend (unless
``--tracking-uri``/``--db`` name a running one), fills one experiment with N
finished trials written straight into the database (the fast way to get 10,000
runs; their start and end times are spread over the past N minutes, two are
still RUNNING), then measures through :class:`MlflowStore`, in one run:

- first sync: a new store fetching every trial (what the first view costs);
- view after the first sync: ``Lineage(store.trials()).render(role)`` -- an
  incremental sync plus rendering -- while a second loop adds and finishes a
  trial before each view (through the server's API, as a real loop would);
- naive view: a fresh store fetching everything, then rendering, each time.

Target (issue 6): a view of a 10,000-trial lineage under 0.5 s after the first sync.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # tests.servers starts the server

from mlflow_autoresearch import schema as S  # noqa: E402
from mlflow_autoresearch.lineage import Lineage, MlflowStore, TrialDraft  # noqa: E402

ROLES = ["architecture", "optimization", "data", "systems"]
OUTCOMES = ["ok", "ok", "ok", "gate_failed", "crashed", "timed_out"]
TARGET_S = 0.5


def populate(db: Path, experiment_id: str, ledger_id: str, n: int, running: int = 2) -> None:
    """Write ``n`` trials straight into the server's SQLite database (12 tags and 6 metrics each)."""
    now = int(time.time() * 1000)
    runs, tags, metrics, params = [], [], [], []
    best, best_id = 100.0, None
    for i in range(n):
        run_id = uuid.uuid4().hex
        role = "baseline" if i == 0 else ROLES[i % 4]
        start = now - (n - i) * 60_000
        is_running = i >= n - running
        end = None if is_running else start + 45_000
        outcome = "ok" if i == 0 else OUTCOMES[i % len(OUTCOMES)]
        score = best - (0.01 if i % 7 == 0 else -0.5) if outcome == "ok" else None
        decision = "baseline" if i == 0 else ("keep" if score is not None and score < best else "discard")
        hypothesis = f"{role} idea {i}: shorten the warmup and raise the peak learning rate by {i % 13} percent"
        run_tags = {
            S.KIND: "trial", S.TRIAL: str(i), S.SPECIALIST: role, S.HYPOTHESIS: hypothesis,
            S.WORKER: f"loop-{i % 3}", S.BACKEND: "offline", S.CODE_SHA: uuid.uuid4().hex * 2,
            S.SCORE_NAME: "train_seconds", S.RECIPE: "bench", "mlflow.runName": f"t{i:04d}-{role}",
        }
        if best_id:
            run_tags[S.PARENT] = best_id
        if not is_running:
            run_tags.update({
                S.OUTCOME: outcome, S.DECISION: decision, S.NEAR_MISS: "false",
                S.FEEDBACK: f"outcome: {outcome}\nscore train_seconds = {score}\ngate accuracy: 0.97, margin +0.001\n"
                            "time: 3.1 s per seed of the 30 s limit (evaluator clock)\ndecision: " + decision,
            })
        runs.append((run_id, f"t{i:04d}-{role}", "LOCAL", "", "", "bench", "RUNNING" if is_running else "FINISHED",
                     start, end, "", "active", f"mlflow-artifacts:/{experiment_id}/{run_id}/artifacts",
                     int(experiment_id)))
        tags += [(k, v, run_id) for k, v in run_tags.items()]
        if not is_running:
            values = {"accuracy": 0.97, "accuracy_std": 0.002, "artifact_bytes": 1e5, "llm_cost_usd": 0.02,
                      "eval_seconds": 1.0}
            if score is not None:
                values["train_seconds"] = score
            metrics += [(k, v, end, 0, 0, run_id) for k, v in values.items()]
        params.append((f"n/{i}", run_id, ledger_id))
        if decision in ("keep", "baseline"):
            best, best_id = (score if score is not None else best), run_id
    con = sqlite3.connect(db, timeout=60)
    with con:
        con.executemany("INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, user_id, "
                        "status, start_time, end_time, source_version, lifecycle_stage, artifact_uri, experiment_id) "
                        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", runs)
        con.executemany('INSERT INTO tags ("key", value, run_uuid) VALUES (?,?,?)', tags)
        con.executemany('INSERT INTO metrics ("key", value, timestamp, step, is_nan, run_uuid) VALUES (?,?,?,?,?,?)',
                        metrics)
        con.executemany('INSERT INTO latest_metrics ("key", value, timestamp, step, is_nan, run_uuid) '
                        "VALUES (?,?,?,?,?,?)", metrics)
        con.executemany('INSERT INTO params ("key", value, run_uuid) VALUES (?,?,?)', params)
        # The ledger was made with the experiment, before the first trial (as in a real lineage).
        con.execute("UPDATE runs SET start_time = ?, end_time = ? WHERE run_uuid = ?",
                    (now - (n + 1) * 60_000, now - (n + 1) * 60_000, ledger_id))
    con.close()


def _view(store: MlflowStore) -> tuple[int, str]:
    lineage = Lineage(store.trials(), "minimize")
    return len(lineage.trials), lineage.render("optimization")


def measure(url: str, db: Path, n: int, views: int, naive: int, log=print) -> dict:
    name = f"bench-views-{uuid.uuid4().hex[:8]}"
    setup = MlflowStore(name, url)
    t0 = time.perf_counter()
    populate(db, setup.experiment_id, setup._ledger(), n)
    populate_s = time.perf_counter() - t0
    log(f"populated {n} trials in {populate_s:.1f} s (straight into {db.name})")

    store = MlflowStore(name, url)
    t0 = time.perf_counter()
    first_n = len(store.trials())
    first_sync_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    count, text = _view(store)
    first_view_s = time.perf_counter() - t0
    log(f"first sync: {first_n} trials in {first_sync_s:.2f} s; next view {first_view_s:.3f} s")

    other = MlflowStore(name, url)  # a second loop writing beside this one
    view_s, sync_s, render_s, rows, chars = [], [], [], [], []
    expected = count
    for k in range(views):
        t = other.create_trial(TrialDraft(files={"train.py": f"# other {k}\n".encode()}, specialist="data",
                                          hypothesis=f"other loop idea {k}", worker="other"))
        other.record_result(t.run_id, tags={S.OUTCOME: "crashed", S.DECISION: "discard",
                                            S.SCORE_NAME: "train_seconds"}, metrics={}, artifacts={})
        expected += 1
        t0 = time.perf_counter()
        records = store.trials()  # the incremental sync
        t1 = time.perf_counter()
        lineage = Lineage(records, "minimize")
        text = lineage.render("optimization")
        t2 = time.perf_counter()
        rows.append(store.last_sync_rows)
        if len(lineage.trials) != expected or t.run_id not in lineage.by_id:
            raise RuntimeError(f"view {k} missed the other loop's trial: {len(lineage.trials)} != {expected}")
        sync_s.append(t1 - t0)
        render_s.append(t2 - t1)
        view_s.append(t2 - t0)
        chars.append(len(text))
    log(f"views after the first sync: median {statistics.median(view_s):.3f} s, max {max(view_s):.3f} s "
        f"(sync {statistics.median(sync_s):.3f} s returning {statistics.median(rows):.0f} runs, "
        f"render {statistics.median(render_s):.3f} s); {max(chars)} characters")

    naive_s = []
    for _ in range(naive):
        t0 = time.perf_counter()
        fresh = MlflowStore(name, url)
        c, _text = _view(fresh)
        naive_s.append(time.perf_counter() - t0)
        if c != expected:
            raise RuntimeError(f"naive view saw {c} trials, expected {expected}")
    result = {
        "trials": n, "populate_s": round(populate_s, 2), "first_sync_s": round(first_sync_s, 3),
        "view_median_s": round(statistics.median(view_s), 4), "view_max_s": round(max(view_s), 4),
        "sync_median_s": round(statistics.median(sync_s), 4), "sync_rows_median": statistics.median(rows),
        "naive_median_s": round(statistics.median(naive_s), 3) if naive_s else None,
        "view_chars_max": max(chars), "target_s": TARGET_S,
    }
    if naive_s:
        result["naive_over_view"] = round(result["naive_median_s"] / max(result["view_median_s"], 1e-9), 1)
        log(f"naive full fetch + render: median {result['naive_median_s']:.2f} s "
            f"({result['naive_over_view']}x the incremental view)")
    result["meets_target"] = result["view_median_s"] < TARGET_S
    log(f"target: view < {TARGET_S} s after the first sync: {'met' if result['meets_target'] else 'MISSED'}")
    return result


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=10_000)
    ap.add_argument("--views", type=int, default=5, help="views measured after the first sync")
    ap.add_argument("--naive", type=int, default=2, help="naive full fetches measured")
    ap.add_argument("--tracking-uri", default=None, help="a running server (needs --db)")
    ap.add_argument("--db", type=Path, default=None, help="that server's SQLite file")
    ap.add_argument("--json", action="store_true", help="print the result as one JSON line at the end")
    args = ap.parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally that stops the server
    logging.getLogger("mlflow").setLevel(logging.WARNING)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    if args.tracking_uri:
        if args.db is None:
            ap.error("--tracking-uri needs --db (trials are written straight into the database)")
        result = measure(args.tracking_uri, args.db, args.trials, args.views, args.naive, log)
    else:
        from tests.servers import MlflowServer

        with tempfile.TemporaryDirectory(prefix="bench-views-") as tmp:
            t0 = time.perf_counter()
            server = MlflowServer(Path(tmp)).start()
            log(f"mlflow server --workers 1 on {server.url} started in {time.perf_counter() - t0:.1f} s")
            try:
                result = measure(server.url, server.db, args.trials, args.views, args.naive, log)
            finally:
                server.stop()
    if args.json:
        print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
