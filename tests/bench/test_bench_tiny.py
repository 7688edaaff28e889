"""Every benchmark of ``python -m bench`` in its tiny mode, so that none can rot.

Tiny sizes on a toy recipe: these assert that each benchmark runs, measures
what it says and writes its section of docs/benchmarks.md with sane numbers,
never that a speed target is met (the CPU here is shared).
"""

from __future__ import annotations

import math

import pytest

from bench._common import knob_recipe
from bench.run_all import BENCHMARKS, parse_args, run_all
from bench.slot_utilization import enough_ahead, steady_utilization


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, mlflow_server):
    """One tiny run of every benchmark against the session's server; its figures and its markdown."""
    if not mlflow_server.healthy():
        mlflow_server.restart()
    folder = tmp_path_factory.mktemp("bench-tiny")
    args = parse_args(["--tiny"])
    args.tiny_recipe = knob_recipe(folder / "knobs")
    out = folder / "benchmarks.md"
    results = run_all(tiny=True, out=out, server=mlflow_server, args=args, command="python -m bench --tiny",
                      log=lambda m: None)
    return results, out.read_text()


def _ok(results: dict, key: str):
    data = results[key]
    assert not (isinstance(data, dict) and "error" in data), f"benchmark {key} failed: {data}"
    return data


@pytest.mark.slow
def test_every_benchmark_runs_and_the_document_has_every_section(tiny):
    results, md = tiny
    for key in BENCHMARKS:
        _ok(results, key)
    for heading in ("## Targets at a glance", "## 1. Loop overhead per trial", "### 6. Peak memory",
                    "## 2. Evaluator and submission overhead", "### 7. The bench-knobs baseline",
                    "## 3. Slot utilization", "## 4. Lineage views", "## 5. Search yield"):
        assert heading in md
    assert "Tiny mode" in md and "shared with other engineers" in md
    assert "2 cores" in md or "cores (" in md  # the machine is named
    assert "**failed" not in md.lower()


@pytest.mark.slow
def test_loop_overhead_rows_are_sane(tiny):
    rows = _ok(tiny[0], "loop")["rows"]
    assert {r["store"] for r in rows} == {"sqlite", "server"}
    for r in rows:
        assert r["trials"] == 20 and r["iterations"] == 3
        # Everything around the trial costs something, and less than the whole trial's wall time.
        assert 0 < r["evaluate_code_s"] < r["wall_per_trial_s"] < 60
        assert math.isclose(r["overhead_per_trial_s"], r["wall_per_trial_s"] - r["evaluate_code_s"], abs_tol=1e-3)
        assert r["syncs_per_trial"] >= 1 and r["claims_per_trial"] >= 1 and r["create_s"] > 0
        # Peak memory of a real child process: more than an interpreter with mlflow, less than the machine.
        assert 100 < r["rss_trials_mb"] <= r["peak_rss_mb"] < 8000


@pytest.mark.slow
def test_evaluator_pairs_and_the_baseline_figure(tiny):
    ev = _ok(tiny[0], "evaluator")
    t, sub, d = ev["trivial"], ev["submission"], ev["digits"]
    assert 0 < t["direct_s"] and t["evaluate_code_s"] > 0 and t["ratio"] > 0
    # A submitted evaluation starts new processes that import MLflow: never cheaper than in-process.
    assert sub["projects_run_s"] > sub["in_process_s"] > 0 and 0 < sub["submit_return_s"] < sub["projects_run_s"]
    assert d["recipe"] == "bench-knobs" and d["eval_train_s"] > 0 and d["direct_train_s"] > 0
    assert d["score"] is not None and d["meets_target"] in (True, False)


@pytest.mark.slow
def test_slot_utilization_is_a_share(tiny):
    sl = _ok(tiny[0], "slots")
    assert sl["trial_s"] > 0.2  # the recipe sleeps 0.2 s
    for r in sl["rows"]:
        assert r["slots"] == 2 and r["outcomes"].get("ok", 0) == r["trials"] + 1  # the baseline too
        assert 0 < r["whole"] <= r["steady"] <= 1.0 + 1e-9


@pytest.mark.slow
def test_views_and_search_yield(tiny):
    results, md = tiny
    (views,) = _ok(results, "views")
    assert views["trials"] == 200 and views["sync_rows_median"] <= 10 and views["naive_median_s"] > 0
    yd = _ok(results, "yield")
    assert set(yd["summary"]) == {"offline", "optuna", "random"}
    for method, runs in yd["runs"].items():
        (run,) = runs
        assert run["evaluations"] == 2, method  # the baseline plus the one-trial budget
        assert run["baseline"] is not None and run["best"] <= run["baseline"]  # loss: lower is better
    assert "| claude | 0 |" in md  # the Claude row says why it is missing


def test_steady_utilization_counts_gaps_between_a_slots_evaluations():
    # Slot 0: busy 0-1, idle 1-1.5, busy 1.5-2.5, then its last evaluation starts at 3 (drain not counted).
    intervals = [("0", 0.0, 1.0), ("0", 1.5, 2.5), ("0", 3.0, 9.0), ("1", 0.0, 2.0), ("1", 2.0, 4.0)]
    # slot 0: busy 2.0 of a 3.0 span; slot 1: busy 2.0 of 2.0
    assert math.isclose(steady_utilization(intervals), 4.0 / 5.0)
    assert math.isnan(steady_utilization([("0", 0.0, 1.0)]))  # one evaluation: no steady state


def test_enough_proposals_cover_the_models_latency():
    assert enough_ahead(1, 0.5) == 2
    assert enough_ahead(4, 3.0) == 10  # 14 in flight: 12 thinking for 4 slots at 3x, 2 spare
    assert all(s + enough_ahead(s, f) - 1 >= s * f for s in (1, 2, 3, 4) for f in (0.5, 1.0, 3.0))
