"""One suite for every lineage store (Optuna's STORAGE_MODES style).

``memory``: InMemoryStore.  ``sqlite``: MlflowStore on a local SQLite file.
``server``: MlflowStore through a real ``mlflow server --workers 1`` whose
artifacts go to S3 on a local moto server.  Each test opens stores on a fresh
experiment; "another store" is a second handle on it (a second MlflowStore, as
another loop would open; the same object for the in-memory store, which is
shared by threads, not processes).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from mlflow_autoresearch import schema as S
from mlflow_autoresearch._errors import StoreError
from mlflow_autoresearch.lineage import InMemoryStore, Lineage, LineageStore, MlflowStore, TrialDraft, query_trial
from tests.servers import unique_name

STORE_MODES = ["memory", "sqlite", "server"]
MARKER = "…[truncated; full text in artifacts]"


@pytest.fixture(params=STORE_MODES)
def open_store(request, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[], LineageStore]:
    """A factory of store handles on one fresh experiment."""
    name = unique_name(request.node.name[:20])
    if request.param == "memory":
        store = InMemoryStore(name)
        return lambda: store
    if request.param == "sqlite":
        monkeypatch.chdir(tmp_path)  # ./mlruns artifacts stay in the test's folder
        shutil.copyfile(request.getfixturevalue("mlflow_db_template"), tmp_path / "mlflow.db")  # skips migrating
        uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    else:
        uri = request.getfixturevalue("live_mlflow_server").url
    return lambda: MlflowStore(name, uri)


def draft(i: int = 0, **kw) -> TrialDraft:
    fields = dict(files={"train.py": f"LR = {i}  # learning rate\n".encode(), "lib/util.py": b"X = 1\n"},
                  specialist="optimization", hypothesis=f"idea {i}: lower the learning rate",
                  patch=f"-LR = 0\n+LR = {i}\n", artifacts={"proposal.json": json.dumps({"i": i})},
                  metrics={"llm_cost_usd": 0.01 * i}, worker="w1")
    fields.update(kw)
    return TrialDraft(**fields)


def finish(store: LineageStore, run_id: str, score: float = 1.0, decision: str = "keep", tmp: Path | None = None,
           **tags):
    files = {}
    if tmp is not None:
        log = tmp / f"{run_id}.stderr.txt"
        log.write_text("\n".join(f"line {i}" for i in range(100)) + "\nValueError: boom\n")
        files = {f"{S.LOGS_DIR}/seed0.stderr.txt": log}
    return store.record_result(
        run_id,
        tags={S.OUTCOME: "ok", S.DECISION: decision, S.FEEDBACK: f"outcome: ok, score {score}",
              S.SCORE_NAME: "loss", **tags},
        metrics={"loss": score, "loss_std": 0.01},
        artifacts={S.FEEDBACK_JSON: json.dumps({"score": score})},
        files=files, step_metrics={"loss_curve": [3.0, 2.0, score]},
    )


def test_create_trial_records_code_patch_and_tags(open_store):
    store = open_store()
    parent = store.create_trial(draft(0, specialist="baseline"))
    t = store.create_trial(draft(1, parent_id=parent.run_id, expected_effect="-5% loss"))

    assert (parent.number, t.number) == (0, 1)
    assert t.status == "RUNNING" and not t.finished and t.outcome is None
    assert t.name.startswith("t0001-optimization-idea-1")
    assert t.parent_id == parent.run_id and t.specialist == "optimization" and t.worker == "w1"
    assert t.tags[S.EXPECTED] == "-5% loss" and len(t.code_sha256) == 64
    assert store.get(t.run_id) == t
    assert store.code(t.run_id) == {"train.py": b"LR = 1  # learning rate\n", "lib/util.py": b"X = 1\n"}
    assert store.read_artifact(t.run_id, S.PATCH) == "-LR = 0\n+LR = 1\n"
    assert json.loads(store.read_artifact(t.run_id, "proposal.json")) == {"i": 1}
    assert store.read_artifact(t.run_id, "no/such/file.txt") is None
    assert [x.run_id for x in store.trials()] == [parent.run_id, t.run_id]


def test_record_result_finishes_the_trial_with_everything_written(open_store, tmp_path):
    store = open_store()
    t = store.create_trial(draft(0))
    rec = finish(store, t.run_id, score=0.25, tmp=tmp_path)

    assert rec.finished and rec.status == "FINISHED" and rec.end_time is not None
    assert rec.outcome.value == "ok" and rec.decision == "keep" and rec.score == 0.25 and rec.kept
    assert rec.metrics["llm_cost_usd"] == 0.0 and rec.metrics["loss_curve"] == 0.25
    assert store.read_artifact(t.run_id, "logs/seed0.stderr.txt").endswith("ValueError: boom\n")
    assert json.loads(store.read_artifact(t.run_id, S.FEEDBACK_JSON)) == {"score": 0.25}
    assert store.trials()[0] == rec


def test_finished_trial_is_immutable(open_store, tmp_path):
    store = open_store()
    t = store.create_trial(draft(0))
    done = finish(store, t.run_id, score=0.5)

    with pytest.raises(StoreError, match="immutable"):
        finish(store, t.run_id, score=0.1, decision="discard")
    with pytest.raises(StoreError, match="immutable"):
        store.set_tags(t.run_id, {S.DECISION: "discard"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        done.score = 0.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        done.tags[S.DECISION] = "discard"  # type: ignore[index]
    again = open_store().get(t.run_id)
    assert again.score == 0.5 and again.decision == "keep"
    store.set_tags(t.run_id, {S.LEASE: "host:1:abc|0"})  # bookkeeping tags stay writable
    assert store.get(t.run_id).tags[S.LEASE] == "host:1:abc|0"


def test_claim_is_first_come_and_idempotent_for_its_owner(open_store):
    a, b = open_store(), open_store()
    assert a.claim("sweep/t0003", "loop-a")
    assert not b.claim("sweep/t0003", "loop-b")
    assert a.claim("sweep/t0003", "loop-a") and b.claim("sweep/t0003", "loop-a")
    assert b.claim("sweep/t0004", "loop-b")


def test_trial_numbers_unique_under_concurrent_threads(open_store):
    store, other = open_store(), open_store()
    results, errors = [], []

    def work(s: LineageStore, k: int) -> None:
        try:
            for i in range(2):
                results.append(s.create_trial(draft(10 * k + i)).number)
        except Exception as e:  # surfaced by the assertion below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(store if k % 2 else other, k)) for k in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert not errors
    assert sorted(results) == list(range(6))
    assert [t.number for t in open_store().trials()] == list(range(6))


def test_incremental_sync_sees_other_stores_trials_and_changes(open_store):
    mine, theirs = open_store(), open_store()
    assert mine.trials() == []  # first sync: empty experiment
    a = theirs.create_trial(draft(0, worker="loop-b"))
    b = theirs.create_trial(draft(1, worker="loop-b"))
    seen = {t.run_id: t for t in mine.trials()}
    assert set(seen) == {a.run_id, b.run_id} and seen[a.run_id].status == "RUNNING"

    theirs.set_tags(b.run_id, {S.LEASE: "other-host:7:x|99"})  # a RUNNING trial's tag changes
    finish(theirs, a.run_id, score=0.75)
    seen = {t.run_id: t for t in mine.trials()}
    assert seen[a.run_id].finished and seen[a.run_id].score == 0.75
    assert seen[b.run_id].tags[S.LEASE] == "other-host:7:x|99"
    assert Lineage(mine.trials()).best.run_id == a.run_id


def test_long_text_is_clipped_with_a_marker_and_kept_whole_in_artifacts(open_store):
    store = open_store()
    hypothesis = "try a much longer warmup " * 500  # 12,500 characters
    t = store.create_trial(draft(0, hypothesis=hypothesis))
    assert len(t.hypothesis) <= 2000 and t.hypothesis.endswith(MARKER)
    assert store.read_artifact(t.run_id, f"tags/{S.HYPOTHESIS}.txt") == hypothesis

    note = "# a long note\n" + "x" * 20_000
    rec = store.record_result(t.run_id, tags={S.OUTCOME: "crashed", S.DECISION: "discard", S.NOTE: note},
                              metrics={}, artifacts={})
    assert len(rec.tags[S.NOTE]) == S.TAG_LIMIT and rec.tags[S.NOTE].endswith(MARKER)
    assert store.read_artifact(t.run_id, f"tags/{S.NOTE}.txt") == note


def test_unknown_run_is_a_store_error(open_store):
    store = open_store()
    with pytest.raises(StoreError):
        store.get("0" * 32)
    with pytest.raises(StoreError):
        finish(store, "0" * 32)


def test_views_and_query_read_through_the_store(open_store, tmp_path):
    store = open_store()
    base = store.create_trial(draft(0, specialist="baseline", hypothesis="baseline: the recipe's own code"))
    finish(store, base.run_id, score=1.0, decision="baseline")
    kid = store.create_trial(draft(1, parent_id=base.run_id))
    finish(store, kid.run_id, score=0.8, decision="keep", tmp=tmp_path)

    lineage = Lineage.load(store, "minimize")
    assert lineage.best.run_id == kid.run_id and [t.short for t in lineage.path_to(lineage.best)] == ["t0000", "t0001"]
    text = lineage.render("optimization")
    assert "t0001" in text and "idea 1" in text
    detail = query_trial(store, lineage, "t0001")
    assert "+LR = 1" in detail and "ValueError: boom" in detail and "line 99" in detail


# ----- several processes on one experiment, through the server ------------------------------------

WORKER = """
import json, sys
from mlflow_autoresearch.lineage import MlflowStore, TrialDraft
url, name, k, who = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
store = MlflowStore(name, url)
out = []
for i in range(k):
    t = store.create_trial(TrialDraft(files={"train.py": f"# {who} {i}\\n".encode()}, specialist="data",
                                      hypothesis=f"{who} idea {i}", worker=who))
    out.append([t.run_id, t.number])
seen = [t.number for t in store.trials()]
print(json.dumps({"mine": out, "seen": seen}))
"""


@pytest.mark.slow
def test_trial_numbers_unique_across_processes(live_mlflow_server):
    name = unique_name("procs")
    MlflowStore(name, live_mlflow_server.url)  # the experiment and its ledger exist before the race
    env = {**os.environ, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, live_mlflow_server.url, name, "3", f"loop-{k}"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for k in range(3)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err[-2000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))
    numbers = [n for o in outs for _, n in o["mine"]]
    assert sorted(numbers) == list(range(9))
    everyone = MlflowStore(name, live_mlflow_server.url).trials()
    assert sorted(t.number for t in everyone) == list(range(9))
    assert {t.worker for t in everyone} == {"loop-0", "loop-1", "loop-2"}
    for o in outs:  # each loop's own lineage holds its trials beside the others' it had seen
        assert {n for _, n in o["mine"]} <= set(o["seen"])


def test_decision_is_written_once_after_the_facts(open_store):
    store, other = open_store(), open_store()
    t = store.create_trial(draft(0))
    with pytest.raises(StoreError, match="no outcome yet"):
        store.record_decision(t.run_id, {S.DECISION: "keep"}, {})
    assert other.trials()  # the other handle has synced once: the decision must reach it incrementally
    measured = store.record_result(t.run_id, tags={S.OUTCOME: "ok", S.SCORE_NAME: "loss"},
                                   metrics={"loss": 0.5, "loss.seed0": 0.5}, artifacts={})
    assert measured.measured and not measured.finished and measured.status == "FINISHED"
    with pytest.raises(StoreError, match="only decision tags"):
        store.record_decision(t.run_id, {S.OUTCOME: "crashed"}, {})
    rec = store.record_decision(t.run_id, {S.DECISION: "keep", S.REASON: "kept: -10%",
                                           S.EVIDENCE: json.dumps({"rule": "paired", "pairs": [[0.5, 0.6]]})},
                                {S.DECISION_JSON: "{}"})
    assert rec.finished and rec.kept and rec.evidence["pairs"] == [[0.5, 0.6]]
    assert store.read_artifact(t.run_id, S.DECISION_JSON) == "{}"
    with pytest.raises(StoreError, match="written once"):
        store.record_decision(t.run_id, {S.DECISION: "discard"}, {})
    seen = {x.run_id: x for x in other.trials()}
    assert seen[t.run_id].decision == "keep"


def test_confirmation_runs_are_nested_and_never_trials(open_store):
    store = open_store()
    parent = finish(store, store.create_trial(draft(0)).run_id, score=1.0)
    cand = store.create_trial(draft(1, parent_id=parent.run_id))
    run_id = store.create_measurement(parent, cand, seed=10_064, role="incumbent")
    store.record_measurement(run_id, tags={S.OUTCOME: "ok"}, metrics={"loss": 0.9})
    assert [t.run_id for t in store.trials()] == [parent.run_id, cand.run_id]
    m = store.get(run_id)
    assert m.tags[S.KIND] == "confirm" and m.tags[S.MEASURES] == parent.run_id and m.tags[S.PARENT_RUN] == cand.run_id
    assert m.tags[S.SEED] == "10064" and m.tags[S.CODE_SHA] == parent.code_sha256 and m.score == 0.9
