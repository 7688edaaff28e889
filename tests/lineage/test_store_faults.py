"""MlflowStore under server faults: lost answers and a server killed and restarted mid-write.

MLflow's HTTP client retries with backoff; what these tests pin down is that a
retry never makes a second trial, never reuses a number, and loses nothing.
"""

from __future__ import annotations

import threading
import time

import pytest
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from mlflow_autoresearch import schema as S
from mlflow_autoresearch.lineage import MlflowStore, TrialDraft
from tests.servers import LossyProxy, unique_name


def draft(who: str, i: int) -> TrialDraft:
    return TrialDraft(files={"train.py": f"# {who} {i}\n".encode()}, specialist="systems",
                      hypothesis=f"{who} idea {i}", worker=who, patch=f"+# {who} {i}\n")


def finish(store: MlflowStore, run_id: str, score: float) -> None:
    store.record_result(run_id, tags={S.OUTCOME: "ok", S.DECISION: "discard", S.SCORE_NAME: "loss"},
                        metrics={"loss": score}, artifacts={S.FEEDBACK_JSON: "{}"})


def runs(url: str, exp_id: str, view: int = ViewType.ACTIVE_ONLY) -> list:
    return MlflowClient(url).search_runs([exp_id], run_view_type=view, max_results=1000)


def test_lost_answers_are_retried_without_duplicate_or_lost_trials(live_mlflow_server):
    url = live_mlflow_server.url
    name = unique_name("lossy")
    direct = MlflowStore(name, url)  # experiment and ledger made without faults

    def drop(method: str, path: str, seen: int) -> bool | str:
        if path.endswith("/runs/create"):
            return seen in (0, 2)  # the run is created, the answer lost: the client creates it again
        if path.endswith(("/runs/log-parameter", "/runs/update")) or path.endswith("/runs/log-batch") and seen < 3:
            return seen == 1
        if path.endswith(("/runs/log-batch", "/runs/get", "/runs/search")):
            return "truncate" if seen in (1, 3) else False  # the answer breaks off after its headers
        if "/mlflow-artifacts/artifacts/" in path:
            return seen == 0 if method == "PUT" else ("truncate" if seen == 0 else False)
        return False

    proxy = LossyProxy(url, drop)
    try:
        lossy = MlflowStore(name, proxy.url)
        made = [lossy.create_trial(draft("lossy", i)) for i in range(3)]
        finish(lossy, made[0].run_id, 0.5)
        assert lossy.read_artifact(made[1].run_id, S.PATCH) == "+# lossy 1\n"  # its first answer is cut
    finally:
        proxy.close()

    assert sum(p.endswith("/runs/create") for _, p in proxy.dropped) == 2
    assert {p.rsplit("/", 1)[-1] for _, p in proxy.dropped} >= {"create", "log-parameter", "log-batch", "get",
                                                                "search"}, proxy.dropped
    assert sum(p.endswith("/runs/log-batch") for _, p in proxy.dropped) == 2  # one lost, one cut off
    assert any(m == "PUT" for m, _ in proxy.dropped)
    assert [t.number for t in made] == [0, 1, 2]
    seen = MlflowStore(name, url).trials()
    assert [t.run_id for t in seen] == [t.run_id for t in made]
    assert seen[0].finished and seen[0].score == 0.5
    for t in made:
        assert direct.code(t.run_id) == {"train.py": f"# lossy {t.number}\n".encode()}
    active = runs(url, direct.experiment_id)
    assert len(active) == 4  # three trials and the ledger: no placeholder left behind
    deleted = runs(url, direct.experiment_id, ViewType.DELETED_ONLY)
    assert len(deleted) == 2 and all(r.data.tags.get(S.KIND) is None for r in deleted)


@pytest.mark.slow
def test_server_killed_and_restarted_mid_writes_loses_and_duplicates_nothing(live_mlflow_server, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")  # retry sooner than the default 2 (tests only)
    server = live_mlflow_server
    name = unique_name("restart")
    store = MlflowStore(name, server.url)
    errors: list[BaseException] = []
    made: list = []
    first = threading.Event()

    def loop(who: str) -> None:
        try:
            mine = MlflowStore(name, server.url)
            for i in range(3):
                t = mine.create_trial(draft(who, i))
                made.append(t)
                first.set()
                finish(mine, t.run_id, float(i))
        except BaseException as e:  # reported by the assertion below
            errors.append(e)
            first.set()

    threads = [threading.Thread(target=loop, args=(f"loop-{k}",)) for k in range(2)]
    for th in threads:
        th.start()
    assert first.wait(120)
    t0 = time.monotonic()
    server.kill()  # SIGKILL: requests in flight die with it
    time.sleep(1.0)
    server.start()
    down = time.monotonic() - t0
    for th in threads:
        th.join(300)
    assert not errors, errors
    assert down > 1.0

    trials = store.trials()
    assert sorted(t.number for t in trials) == list(range(6))
    assert len({t.run_id for t in trials}) == 6 and {t.run_id for t in made} == {t.run_id for t in trials}
    assert all(t.finished for t in trials)
    for t in trials:
        assert store.code(t.run_id) == {"train.py": f"# {t.worker} {t.hypothesis.split()[-1]}\n".encode()}
    assert len(runs(server.url, store.experiment_id)) == 7  # six trials and the ledger
    more = store.create_trial(draft("after", 0))  # a store opened before the crash carries on
    assert more.number == 6 and len(store.trials()) == 7
