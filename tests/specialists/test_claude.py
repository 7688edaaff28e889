"""The Claude backend with the real ``anthropic`` SDK against a local Messages API server.

The server (``fake_messages_server.py``) plays the model from a script; the
SDK, HTTP, the edit session, the lineage store and the prompts are real.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace

import pytest

from mlflow_autoresearch import schema as S
from mlflow_autoresearch._errors import HarnessError, ModelUnavailable, UsageError
from mlflow_autoresearch.lineage import Lineage
from mlflow_autoresearch.specialists import ProposalContext, Usage, make_specialist, roster
from mlflow_autoresearch.specialists._claude import ClaudeSpecialist
from mlflow_autoresearch.specialists._retry import RetryPolicy
from mlflow_autoresearch.trial import create_trial, recipe_files
from tests.specialists.conftest import TRAIN  # noqa: F401  (the toy's code, for readers)
from tests.specialists.fake_messages_server import FakeMessagesServer, Reply, Request, error, reply, text, tool_use

FAST_RETRY = RetryPolicy(budget_seconds=10, base_seconds=0.1, max_seconds=0.5)
MODEL = "claude-sonnet-5-5"  # $2 / $10 per Mtok in the shipped price table; cache $2.50 write, $0.10 read


def make_ctx(recipe, store, **kw) -> ProposalContext:
    lineage = Lineage.load(store, recipe.metric.goal)
    parent = lineage.baseline
    role = next(r for r in roster(recipe) if r.name == "optimization")
    return ProposalContext(recipe=recipe, role=role, parent=parent, parent_files=store.code(parent.run_id),
                           lineage=lineage, store=store, **kw)


def claude(server: FakeMessagesServer, **kw) -> ClaudeSpecialist:
    options = {"model": MODEL, "base_url": server.url, "api_key": "test-key", "max_turns": 8, "max_tokens": 1000,
               "tracing": False, "retry": FAST_RETRY, **kw}
    return make_specialist("claude", **options)


EDIT = tool_use("edit_file", {"path": "train.py", "old_text": "SCORE = 0.5", "new_text": "SCORE = 0.25"})
SUBMIT = tool_use("submit", {"hypothesis": "halve SCORE: the toy prints it as the loss",
                             "expected_effect": "loss 0.25 (-0.25)"})


def test_full_proposal_reads_edits_and_submits(recipe, store):
    seen: list[Usage] = []
    script = [
        reply(text("Let me look."), tool_use("read_file", {"path": "train.py"}), input_tokens=1200, output_tokens=40,
              cache_write=3000),
        reply(EDIT, input_tokens=50, output_tokens=60, cache_read=3000, cache_write=1300),
        reply(tool_use("check_syntax", {}), input_tokens=30, output_tokens=10, cache_read=4300),
        reply(tool_use("submit", {"hypothesis": "halve SCORE: the toy prints it as the loss",
                                  "expected_effect": "loss 0.25 (-0.25)",
                                  "knobs": [{"name": "SCORE", "low": 0.1, "high": 1.0, "log": True},
                                            {"name": "WIDTH", "low": 16, "high": 256}]}),
              input_tokens=20, output_tokens=80, cache_read=4400),
    ]
    with FakeMessagesServer(script) as server:
        proposal = claude(server).propose(make_ctx(recipe, store, on_usage=seen.append))

    assert proposal.invalid_reason is None
    assert proposal.backend == "claude" and proposal.specialist == "optimization"
    assert proposal.hypothesis == "halve SCORE: the toy prints it as the loss"
    assert proposal.expected_effect == "loss 0.25 (-0.25)"
    assert b"SCORE = 0.25  # what this toy prints" in proposal.files["train.py"]
    assert proposal.files["helper.py"] == b"SECRET = 1\n"  # the rest of the snapshot rides along
    assert [(e.file, e.old, e.new) for e in proposal.edits] == [("train.py", "SCORE = 0.5", "SCORE = 0.25")]
    score, width = proposal.knobs
    assert (score.name, score.low, score.high, score.log, score.integer, score.file) == \
        ("SCORE", 0.1, 1.0, True, False, "train.py")
    assert width.integer  # WIDTH = 64 is an int literal

    # the model saw the file it asked for, and each tool_result answers its tool_use
    assert len(server.requests) == 4 and not server.exhausted
    (read_result,) = server.requests[1].tool_results()
    assert "SCORE = 0.5  # what this toy prints" in read_result["content"] and not read_result.get("is_error")
    assert read_result["tool_use_id"] == server.requests[1].messages[1]["content"][1]["id"]
    assert "edited train.py" in server.requests[2].tool_results()[0]["content"]
    assert "ok: every editable Python file parses" in server.requests[3].tool_results()[0]["content"]
    assert all(r.json["model"] == MODEL and r.json["max_tokens"] == 1000 for r in server.requests)

    # tokens and dollars, per call to the callback and summed on the proposal
    u = proposal.usage
    assert (u.tokens_in, u.tokens_out, u.cache_read, u.cache_write, u.calls) == (1300, 190, 11700, 4300, 4)
    expected = (1300 * 2 + 190 * 10 + 11700 * 0.1 + 4300 * 2.5) / 1e6
    assert u.cost_usd == pytest.approx(expected)
    assert len(seen) == 4 and sum(s.cost_usd for s in seen) == pytest.approx(expected)
    assert u.metrics()["llm_tokens_in"] == 1300

    transcript = json.loads(proposal.transcript)
    assert transcript["stop"] == "submitted" and transcript["turns"] == 4 and transcript["model"] == MODEL
    assert [m["role"] for m in transcript["messages"]] == ["user", "assistant"] * 4
    assert transcript["usage"]["calls"] == 4


def test_first_request_carries_cache_markers_steering_and_lineage(recipe, store):
    ctx = make_ctx(recipe, store, steering="Try halving SCORE before anything else.",
                   saturation="Your last 3 trials moved the score less than the noise.")
    with FakeMessagesServer([reply(EDIT), reply(SUBMIT)]) as server:
        claude(server).propose(ctx)
    first, second = server.requests
    ephemeral = {"type": "ephemeral"}
    # the stable prefix (tools, then system) is marked for caching
    assert first.json["system"][-1]["cache_control"] == ephemeral
    assert first.json["tools"][-1]["cache_control"] == ephemeral
    assert [t["name"] for t in first.json["tools"]] == ["read_file", "list_files", "lineage_view", "query_trial",
                                                        "edit_file", "check_syntax", "submit"]
    # one moving breakpoint on the newest user turn
    assert first.messages[-1]["content"][-1]["cache_control"] == ephemeral
    assert second.messages[-1]["content"][-1]["cache_control"] == ephemeral
    assert "cache_control" not in second.messages[0]["content"][-1]
    # the same stable prefix in every request of the session
    assert first.json["system"] == second.json["system"] and first.json["tools"] == second.json["tools"]

    system = first.json["system"][0]["text"]
    assert "Optimization specialist" in system and "optimizer choice" in system  # role brief
    assert "`accuracy >= 0.85`" in system and "training 20 s per seed" in system and "memory 2 GB" in system
    assert "Seeds per evaluation: 2" in system
    assert "a gain is kept only after paired confirmation" in system and "at confidence 0.95" in system
    assert "Halving SCORE is the classic trick." in system  # knowledge notes
    assert "Steering" not in system and "t0000" not in system  # per-proposal text stays out of the prefix

    turn = first.messages[0]["content"][0]["text"]
    assert "## Steering note from the user (follow it)\nTry halving SCORE before anything else." in turn
    assert "### Leaderboard (kept trials, best first" in turn and "| 1 | t0000 " in turn
    assert "### Near misses not yet repaired" in turn and "### Your (optimization) last trials" in turn
    assert "baseline feedback 4242" in turn and "(ok, score 0.5)" in turn
    assert "Your last 3 trials moved the score less than the noise." in turn
    assert "```python\nimport os\nSCORE = 0.5  # what this toy prints" in turn
    assert "SECRET = 1" not in turn  # only the editable code is inlined


def test_rate_limited_and_overloaded_answers_are_retried(recipe, store):
    script = [error(429, "slow down", retry_after=0.4), error(529), reply(EDIT), error(500), reply(SUBMIT)]
    with FakeMessagesServer(script) as server:
        t0 = time.monotonic()
        proposal = claude(server).propose(make_ctx(recipe, store))
        elapsed = time.monotonic() - t0
    assert proposal.invalid_reason is None and b"SCORE = 0.25" in proposal.files["train.py"]
    at = [r.at for r in server.requests]
    assert len(at) == 5
    assert at[1] - at[0] >= 0.39  # retry-after honoured
    assert 0.04 <= at[2] - at[1] < 2.0  # backoff: base 0.1 s with jitter in [0.5, 1]
    assert elapsed < 8
    retries = json.loads(proposal.transcript)["retries"]
    assert [r["status"] for r in retries] == [429, 529, 500]
    assert retries[0]["wait_seconds"] == 0.4 and retries[0]["retry_after"] == 0.4
    assert "HTTP 429 rate_limit_error: slow down" in retries[0]["problem"]
    assert proposal.usage.calls == 2  # failed attempts cost nothing


def test_timeouts_are_retried(recipe, store):
    script = [reply(EDIT, delay=1.5), reply(EDIT), reply(SUBMIT)]
    with FakeMessagesServer(script) as server:
        proposal = claude(server, request_timeout=0.5).propose(make_ctx(recipe, store))
    assert proposal.invalid_reason is None
    assert json.loads(proposal.transcript)["retries"][0]["problem"] == "timeout"
    assert len(server.requests) == 3 and proposal.usage.calls == 2


def test_model_unavailable_past_the_retry_budget_raises_typed_error(recipe, store):
    with FakeMessagesServer(lambda req, i: error(529, "Overloaded", retry_after=0.2)) as server:
        spec = claude(server, retry=RetryPolicy(budget_seconds=0.5, base_seconds=0.1))
        t0 = time.monotonic()
        with pytest.raises(ModelUnavailable) as e:
            spec.propose(make_ctx(recipe, store))
        elapsed = time.monotonic() - t0
    err = e.value
    assert isinstance(err, HarnessError)
    assert err.status == 529 and err.retry_after == 0.2 and 0.35 <= err.waited_seconds <= 0.5
    assert "HTTP 529 overloaded_error: Overloaded" in str(err) and "retry budget of 0.5 s" in str(err)
    assert len(server.requests) == 3 and elapsed < 3


def test_malformed_tool_input_comes_back_as_errors(recipe, store):
    script = [
        reply(tool_use("edit_file", {"path": "train.py"}), tool_use("read_file", {"path": 7}),
              tool_use("frobnicate", {}), tool_use("lineage_view", {"name": "everything"}),
              tool_use("submit", {"hypothesis": "x", "expected_effect": 3, "knobs": [{"name": "LR"}]})),
        reply(EDIT),
        reply(SUBMIT),
    ]
    with FakeMessagesServer(script) as server:
        proposal = claude(server).propose(make_ctx(recipe, store))
    results = server.requests[1].tool_results()
    assert len(results) == 5 and all(r["is_error"] for r in results)
    texts = [r["content"] for r in results]
    assert texts[0] == "invalid input for edit_file: missing field 'old_text'; missing field 'new_text'"
    assert texts[1] == "invalid input for read_file: field 'path' must be a string, got int"
    assert texts[2].startswith("no tool 'frobnicate'; tools: read_file, list_files")
    assert "field 'name' must be one of leaderboard, best_path" in texts[3]
    assert "field 'expected_effect' must be a string, got int" in texts[4]
    assert "knobs[0]: missing field 'low'" in texts[4]
    assert proposal.invalid_reason is None  # the session went on and the model recovered


def _correcting_model(req: Request, i: int) -> Reply:
    """A scripted model that quotes a line wrongly, then uses the hint it gets back."""
    if i == 0:
        return reply(tool_use("edit_file", {"path": "train.py", "old_text": "SCORE=0.5", "new_text": "SCORE = 0.3"}))
    (result,) = req.tool_results()
    if result.get("is_error"):
        hint = result["content"].split("the closest line is: ")[1].split("'")[1]
        return reply(tool_use("edit_file", {"path": "train.py", "old_text": hint,
                                            "new_text": "SCORE = 0.3  # lower is better"}))
    return reply(tool_use("submit", {"hypothesis": "lower SCORE to 0.3", "expected_effect": "loss 0.3"}))


def test_edit_that_does_not_apply_is_corrected_in_the_same_session(recipe, store):
    with FakeMessagesServer(_correcting_model) as server:
        proposal = claude(server).propose(make_ctx(recipe, store))
    failed = server.requests[1].tool_results()[0]
    assert failed["is_error"] is True
    assert "old_text not found in train.py; the closest line is: 'SCORE = 0.5  # what this toy prints'" \
        in failed["content"]
    assert server.requests[2].tool_results()[0].get("is_error") is None
    assert proposal.invalid_reason is None and len(proposal.edits) == 1
    assert b"SCORE = 0.3  # lower is better\n" in proposal.files["train.py"]
    # one session: the first user turn is the same message throughout
    first_turn = server.requests[0].messages[0]["content"][0]["text"]
    assert [r.messages[0]["content"][0]["text"] for r in server.requests] == [first_turn] * 3


def test_protected_file_and_escaping_paths_refused_then_no_submit_is_invalid(recipe, store):
    script = [
        reply(tool_use("edit_file", {"path": "helper.py", "old_text": "SECRET = 1", "new_text": "SECRET = 2"}),
              tool_use("edit_file", {"path": "../toy/train.py", "old_text": "SCORE", "new_text": "X"}),
              tool_use("read_file", {"path": "/etc/passwd"})),
        reply(text("I think we are done."), stop_reason="end_turn"),
        reply(text("Really done."), stop_reason="end_turn"),
    ]
    with FakeMessagesServer(script) as server:
        proposal = claude(server).propose(make_ctx(recipe, store))
    protected, escape, absolute = (r["content"] for r in server.requests[1].tool_results())
    assert protected == "helper.py is protected: only train.py may be edited"
    assert "'../toy/train.py' leaves the recipe folder" in escape and "leaves the recipe folder" in absolute
    assert "You ended your turn without submitting" in server.requests[2].last_user_text()
    assert proposal.invalid_reason == "the model ended its turn twice without submitting"
    assert proposal.files["helper.py"] == b"SECRET = 1\n" and not proposal.edits


def test_max_turns_reached_is_an_invalid_proposal(recipe, store):
    script = [reply(tool_use("lineage_view", {"name": "leaderboard"})), reply(tool_use("query_trial", {"ref": "t0000"})),
              reply(tool_use("list_files", {}))]
    with FakeMessagesServer(script) as server:
        proposal = claude(server, max_turns=3).propose(make_ctx(recipe, store))
    assert proposal.invalid_reason == "max turns (3) reached without a submit"
    assert len(server.requests) == 3 and proposal.usage.calls == 3
    assert "| 1 | t0000 " in server.requests[1].tool_results()[0]["content"]
    assert "baseline feedback 4242" in server.requests[2].tool_results()[0]["content"]
    assert json.loads(proposal.transcript)["stop"] == "max turns"


def test_an_argparse_flag_default_is_a_knob_the_model_may_name(recipe, store):
    flags = ("SCORE = 0.25\nimport argparse\np = argparse.ArgumentParser()\n"
             "p.add_argument('--lr', type=float, default=0.01)\np.add_argument('--epochs', default=5)\n"
             "args = p.parse_args()")
    script = [reply(tool_use("edit_file", {"path": "train.py", "old_text": "SCORE = 0.5", "new_text": flags}),
                    tool_use("submit", {"hypothesis": "h", "expected_effect": "e",
                                        "knobs": [{"name": "lr", "low": 0.001, "high": 0.1, "log": True},
                                                  {"name": "epochs", "low": 1, "high": 20},
                                                  {"name": "momentum", "low": 0, "high": 1}]})),
              reply(tool_use("submit", {"hypothesis": "h", "expected_effect": "e",
                                        "knobs": [{"name": "lr", "low": 0.001, "high": 0.1, "log": True},
                                                  {"name": "epochs", "low": 1, "high": 20}]}))]
    with FakeMessagesServer(script) as server:
        proposal = claude(server).propose(make_ctx(recipe, store))
    (refused,) = [r["content"] for r in server.requests[1].tool_results() if r.get("is_error")]
    assert "knob 'momentum' is not a module-level constant of train.py, nor an argparse flag's default" in refused
    lr, epochs = proposal.knobs
    assert (lr.name, lr.file, lr.integer, lr.log) == ("lr", "train.py", False, True)
    assert (epochs.name, epochs.integer) == ("epochs", True)


def test_submit_refused_until_it_is_ready(recipe, store):
    script = [
        reply(SUBMIT),  # no edit yet
        reply(tool_use("edit_file", {"path": "train.py", "old_text": "SCORE = 0.5", "new_text": "SCORE = = 0.5"}),
              SUBMIT),  # does not parse
        reply(tool_use("edit_file", {"path": "train.py", "old_text": "SCORE = = 0.5", "new_text": "SCORE = 0.5"}),
              SUBMIT),  # back to the baseline's code: already evaluated
        reply(EDIT, tool_use("submit", {"hypothesis": "h", "expected_effect": "e",
                                        "knobs": [{"name": "NOPE", "low": 1, "high": 2}]})),
        reply(tool_use("submit", {"hypothesis": "h", "expected_effect": "e",
                                  "knobs": [{"name": "SCORE", "low": 2, "high": 1}]})),
        reply(tool_use("submit", {"hypothesis": "  ", "expected_effect": "e"})),
        reply(SUBMIT),
    ]
    with FakeMessagesServer(script) as server:
        proposal = claude(server).propose(make_ctx(recipe, store))
    said = [[r["content"] for r in req.tool_results() if r.get("is_error")] for req in server.requests[1:]]
    assert said[0] == ["nothing to submit: make at least one edit with edit_file first."]
    assert said[1][0].startswith("cannot submit: the code does not parse:\ntrain.py line 2")
    assert said[2] == ["cannot submit: this exact code was already evaluated as t0000. Change something else."]
    assert "knob 'NOPE' is not a module-level constant of train.py" in said[3][0]
    assert "knob 'SCORE': low (2.0) must be below high (1.0)" in said[4][0]
    assert "the hypothesis is empty" in said[5][0]
    assert proposal.invalid_reason is None and proposal.knobs == ()


def test_rejected_credentials_are_a_usage_error(recipe, store):
    with FakeMessagesServer([error(401, "invalid x-api-key")]) as server:
        with pytest.raises(UsageError, match=r"refused the credentials \(HTTP 401 authentication_error"):
            claude(server).propose(make_ctx(recipe, store))
        assert server.requests[0].headers["authorization"] == "Bearer test-key"


def test_base_url_from_environment_and_no_key_needed_for_a_local_server(recipe, store, monkeypatch):
    with FakeMessagesServer([reply(EDIT), reply(SUBMIT)]) as server:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
        monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
        monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
        proposal = ClaudeSpecialist(model=MODEL, tracing=False).propose(make_ctx(recipe, store))
    assert proposal.invalid_reason is None and len(server.requests) == 2


def test_no_credentials_and_no_server_is_a_usage_error(monkeypatch, tmp_path):
    for var in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL", "ANTHROPIC_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("ANTHROPIC_CONFIG_DIR", str(tmp_path))  # no profile on disk either
    with pytest.raises(UsageError, match=r"needs Anthropic credentials \(.*\): set ANTHROPIC_API_KEY"):
        ClaudeSpecialist()


def test_concurrent_proposals_keep_their_own_sessions(recipe, store):
    def model(req: Request, i: int) -> Reply:
        role = req.json["system"][0]["text"].split("You are the ")[1].split(" on ")[0]
        if len(req.messages) == 1:
            time.sleep(0.2)  # let the sessions interleave
            return reply(tool_use("edit_file", {"path": "train.py", "old_text": "SCORE = 0.5",
                                                "new_text": f"SCORE = 0.4  # {role}"}))
        return reply(tool_use("submit", {"hypothesis": f"{role} idea", "expected_effect": "less loss"}))

    spent: list[float] = []
    lock = threading.Lock()

    def count(u: Usage) -> None:
        with lock:
            spent.append(u.cost_usd)

    base = make_ctx(recipe, store, on_usage=count)
    roles = roster(recipe)
    with FakeMessagesServer(model) as server:
        spec = claude(server)
        out: dict[str, object] = {}
        threads = [threading.Thread(target=lambda r=r: out.__setitem__(r.name, spec.propose(replace(base, role=r))))
                   for r in roles]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert sorted(out) == sorted(r.name for r in roles)
    for r in roles:
        p = out[r.name]
        assert p.invalid_reason is None and p.hypothesis == f"{r.title} idea"
        assert f"SCORE = 0.4  # {r.title}".encode() in p.files["train.py"] and p.usage.calls == 2
    assert len(server.requests) == 2 * len(roles) and len(spent) == 2 * len(roles)


@pytest.fixture
def traced_store(recipe, tmp_path, monkeypatch):
    """An MLflow store on SQLite with a baseline, mlflow pointed at it; autolog switched off afterwards."""
    import mlflow

    from mlflow_autoresearch.lineage import MlflowStore
    from mlflow_autoresearch.specialists import _tracing

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    store = MlflowStore("claude-traces", uri)
    base = create_trial(store, recipe, recipe_files(recipe), specialist="baseline",
                        hypothesis="baseline: the recipe's own code", backend="none")
    store.record_result(base.run_id, tags={S.OUTCOME: "ok", S.DECISION: "baseline", S.SCORE_NAME: "loss"},
                        metrics={"loss": 0.5}, artifacts={})
    yield store
    mlflow.anthropic.autolog(disable=True)
    _tracing._autolog_on = None
    mlflow.set_tracking_uri(before)


@pytest.mark.slow
def test_model_calls_are_traced_and_linked_to_the_trial_run(recipe, traced_store):
    import mlflow

    from mlflow_autoresearch.specialists import link_trace

    store = traced_store
    ctx = make_ctx(recipe, store)
    with FakeMessagesServer([reply(EDIT), reply(SUBMIT), reply(EDIT), reply(SUBMIT)]) as server:
        spec = claude(server, tracing=True)
        proposal = spec.propose(ctx)
        # the loop's path: the trial run is created after the proposal, then linked
        trial = create_trial(store, recipe, proposal.files, specialist=proposal.specialist,
                             hypothesis=proposal.hypothesis, parent=ctx.parent)
        assert link_trace(proposal.trace_id, trial.run_id)
        # the other path: the run exists before the proposal
        early = create_trial(store, recipe, proposal.files, specialist="optimization", hypothesis="early",
                             parent=ctx.parent)
        second = spec.propose(replace(ctx, trace_run_id=early.run_id))
    assert "traceparent" in server.requests[0].headers  # autolog wrapped the real SDK call

    (trace,) = mlflow.search_traces(run_id=trial.run_id, return_type="list", flush=True,
                                      locations=[store.experiment_id])
    assert trace.info.trace_id == proposal.trace_id == json.loads(proposal.transcript)["trace_id"]
    assert trace.info.experiment_id == store.experiment_id
    assert trace.info.tags[S.SPECIALIST] == "optimization" and trace.info.tags[S.PARENT] == ctx.parent.run_id
    names = [s.name for s in trace.data.spans]
    assert names[0] == "propose optimization"
    chat = [s for s in trace.data.spans if s.span_type == "CHAT_MODEL"]
    assert len(chat) == 2 and all(s.parent_id == trace.data.spans[0].span_id for s in chat)

    (early_trace,) = mlflow.search_traces(run_id=early.run_id, return_type="list", flush=True,
                                      locations=[store.experiment_id])
    assert early_trace.info.trace_id == second.trace_id != proposal.trace_id
    assert early_trace.info.trace_metadata["mlflow.sourceRun"] == early.run_id


def test_prices_can_be_overridden_and_an_unpriced_model_is_warned_about(recipe, store, caplog):
    with FakeMessagesServer([reply(EDIT, input_tokens=1_000_000, output_tokens=0), reply(SUBMIT)] * 2) as server:
        priced = claude(server, model="local-llama", prices='{"local-llama": [1.5, 6]}').propose(make_ctx(recipe, store))
        unpriced = claude(server, model="local-mystery").propose(make_ctx(recipe, store))
    assert priced.usage.cost_usd == pytest.approx((1_000_100 * 1.5 + 20 * 6) / 1e6)
    assert unpriced.usage.cost_usd == 0 and unpriced.usage.tokens_in == 1_000_100
    assert "no price for model 'local-mystery'" in caplog.text
    with pytest.raises(UsageError, match=r"prices: 'x': expected \[input, output\]"):
        claude(server, prices={"x": "cheap"})


def test_transcript_stays_bounded():
    from mlflow_autoresearch.specialists._session import TRANSCRIPT_CHARS, bounded_json

    big = {"messages": [{"role": "user", "content": [{"type": "text", "text": "x" * 50_000}]}] * 40}
    out = bounded_json(big)
    assert len(out) <= TRANSCRIPT_CHARS and "characters clipped" in out
    assert len(json.loads(out)["messages"]) == 40  # clipped strings, every message kept


def test_close_interrupts_a_retry_wait(recipe, store):
    with FakeMessagesServer(lambda req, i: error(529, retry_after=30)) as server:
        spec = claude(server, retry=RetryPolicy(budget_seconds=120))
        threading.Timer(0.3, spec.close).start()  # e.g. the loop stopping on Ctrl-C
        t0 = time.monotonic()
        with pytest.raises(ModelUnavailable, match="stopped while waiting to retry"):
            spec.propose(make_ctx(recipe, store))
    assert time.monotonic() - t0 < 5 and len(server.requests) == 1
