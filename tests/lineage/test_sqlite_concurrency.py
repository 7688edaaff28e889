"""A local SQLite lineage store under as many writing threads as a loop with many proposals in flight."""

from __future__ import annotations

import threading

import pytest

from mlflow_autoresearch.lineage import TrialDraft


@pytest.mark.slow
def test_many_threads_create_trials_at_once_on_local_sqlite(mlflow_store):
    """24 threads (4 slots + 20 proposals in flight) create trials at the same moment: every one is recorded.

    MLflow's SQLite pool holds 15 connections and creating a run takes two; unbounded, such a burst
    waited 30 s on the pool and then failed ("QueuePool limit of size 5 overflow 10 reached").
    """
    n = 24
    barrier = threading.Barrier(n)
    errors: list[str] = []

    def create(i: int) -> None:
        barrier.wait()
        try:
            mlflow_store.create_trial(TrialDraft(files={"train.py": f"# variant {i}\n".encode()},
                                                 specialist="data", hypothesis=f"idea {i}"))
        except Exception as e:  # collected: the assertion shows what failed
            errors.append(f"{type(e).__name__}: {str(e)[:200]}")

    threads = [threading.Thread(target=create, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert sorted(t.number for t in mlflow_store.trials()) == list(range(n))  # unique and dense
