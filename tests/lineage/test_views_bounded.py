"""The views an agent reads stay bounded however long the lineage grows (2,000 trials here)."""

from __future__ import annotations

import random
import time

from mlflow_autoresearch import schema as S
from mlflow_autoresearch.lineage import InMemoryStore, Lineage, TrialDraft, query_trial
from mlflow_autoresearch.lineage._views import VIEW_CHARS

ROLES = ["architecture", "optimization", "data", "systems"]
OUTCOMES = ["ok", "ok", "gate_failed", "crashed", "timed_out", "size_exceeded"]


def big_lineage(n: int = 2000) -> tuple[InMemoryStore, Lineage]:
    rng = random.Random(7)
    store = InMemoryStore("big")
    base = store.create_trial(TrialDraft(files={"train.py": b"x"}, specialist="baseline", hypothesis="baseline"))
    store.record_result(base.run_id, tags={S.OUTCOME: "ok", S.DECISION: "baseline", S.SCORE_NAME: "loss"},
                        metrics={"loss": 100.0}, artifacts={})
    best, best_score = base, 100.0
    for i in range(1, n):
        role = ROLES[i % 4]
        parent = best if rng.random() < 0.7 else base
        hypothesis = f"{role} idea {i}: " + "change the schedule and widen the model | " * rng.randint(1, 40)
        t = store.create_trial(TrialDraft(files={"train.py": f"# {i}\n".encode()}, specialist=role,
                                          hypothesis=hypothesis, parent_id=parent.run_id,
                                          patch="".join(f"+line {k}\n" for k in range(rng.randint(1, 3000)))))
        outcome = rng.choice(OUTCOMES)
        score = best_score - rng.random() if outcome == "ok" else None
        keep = outcome == "ok" and parent is best and rng.random() < 0.5
        feedback = f"outcome: {outcome}\n" + "Traceback (most recent call last):\n  File x\n" * rng.randint(0, 200)
        store.record_result(t.run_id, tags={
            S.OUTCOME: outcome, S.DECISION: "keep" if keep else "discard", S.SCORE_NAME: "loss",
            S.FEEDBACK: S.clip(feedback, S.FEEDBACK_TAG_LIMIT),
            S.NEAR_MISS: "true" if outcome == "gate_failed" and rng.random() < 0.3 else "false",
        }, metrics={"loss": score} if score is not None else {},
            artifacts={f"{S.LOGS_DIR}/seed0.stderr.txt": "error line\n" * rng.randint(0, 50_000)})
        if keep:
            best, best_score = store.get(t.run_id), score
    return store, Lineage(store.trials(), "minimize")


def test_views_of_2000_trials_render_bounded_and_fast():
    store, lineage = big_lineage()
    assert len(lineage.trials) == 2000 and len(lineage.path_to(lineage.best)) > 50

    t0 = time.perf_counter()
    text = lineage.render("optimization")
    elapsed = time.perf_counter() - t0
    views = text.split("\n\n### ")
    assert len(views) == 7
    assert all(len(v) <= VIEW_CHARS + 10 for v in views)
    assert len(text) <= 7 * (VIEW_CHARS + 10)
    assert elapsed < 2.0  # in memory: milliseconds; generous for a shared CPU
    assert lineage.best.short in text and "steps omitted" in text  # a long best path is elided, not cut off
    for line in text.splitlines():
        assert len(line) <= 500, line[:80]

    worst = max(lineage.trials, key=lambda t: len(store.read_artifact(t.run_id, S.PATCH) or ""))
    detail = query_trial(store, lineage, worst.short)
    assert worst.short in detail and len(detail) <= 12_100
    assert query_trial(store, lineage, "t9999").startswith("no trial")
