"""The Claude backend at the API's edges: stop reasons, the context window, account errors, endpoints, providers.

Real ``anthropic`` SDK clients over HTTP to the local server of
``fake_messages_server.py``, which validates every request as the real API
does; ``server.rejections`` stays empty when the backend speaks correctly.
"""

from __future__ import annotations

import json
import time

import pytest

from mlflow_autoresearch import schema as S
from mlflow_autoresearch._errors import BackendError, UsageError
from mlflow_autoresearch.lineage import InMemoryStore
from mlflow_autoresearch.specialists._claude import ClaudeSpecialist
from mlflow_autoresearch.specialists._pricing import PriceTable, canonical_model
from mlflow_autoresearch.specialists._retry import RetryPolicy
from mlflow_autoresearch.trial import create_trial, recipe_files
from tests.specialists.fake_messages_server import (
    FakeMessagesServer,
    Reply,
    Request,
    SilentServer,
    closed_port_url,
    count_tokens,
    error,
    refusal,
    reply,
    text,
    thinking,
    tool_use,
)
from tests.specialists.test_claude import EDIT, MODEL, SUBMIT, claude, make_ctx

KNOBBED = tool_use("submit", {"hypothesis": "halve SCORE", "expected_effect": "loss 0.25",
                              "knobs": [{"name": "SCORE", "low": 0.1, "high": 1.0}]})


def transcript(proposal) -> dict:
    return json.loads(proposal.transcript)


# ----- stop reasons -----------------------------------------------------------
def test_a_cut_off_submit_is_never_run_and_the_limit_is_raised_once(recipe, store):
    cut = tool_use("submit", {"hypothesis": "halve SC"})  # the knobs and the effect were still to come
    script = [reply(EDIT), reply(cut, stop_reason="max_tokens"), reply(KNOBBED)]
    with FakeMessagesServer(script) as server:
        proposal = claude(server).propose(make_ctx(recipe, store))
    assert server.rejections == []
    assert proposal.invalid_reason is None and [k.name for k in proposal.knobs] == ["SCORE"]
    assert proposal.hypothesis == "halve SCORE"  # the accepted submit is the complete one
    third = server.requests[2]
    assert [r.json["max_tokens"] for r in server.requests] == [1000, 1000, 2000]  # raised once, to twice
    assert not any(b.get("type") == "tool_use" and b["name"] == "submit"
                   for m in third.messages for b in m["content"])  # the cut-off reply was not sent back
    assert "cut off at the output limit (1,000 tokens)" in third.last_user_text()
    assert "no tool call in it was run" in third.last_user_text()
    t = transcript(proposal)
    assert t["stop_reasons"] == ["tool_use", "max_tokens", "tool_use"]
    assert t["events"][1]["discarded"][0]["input"] == {"hypothesis": "halve SC"}


def test_replies_cut_off_three_times_end_the_proposal_naming_the_limit(recipe, store):
    all_thinking = reply(thinking("Let me think about SCORE at length " * 20), stop_reason="max_tokens")
    with FakeMessagesServer([all_thinking] * 3) as server:
        proposal = claude(server, thinking="adaptive").propose(make_ctx(recipe, store))
    assert server.rejections == [] and len(server.requests) == 3  # no nudging to max_turns
    assert "cut off at the output limit (2,000 tokens, thinking included) 3 times" in proposal.invalid_reason
    assert "Raise --max-tokens" in proposal.invalid_reason
    assert transcript(proposal)["stop"] == "cut off"


def test_a_full_context_window_reply_is_not_run_either(recipe, store):
    script = [reply(EDIT), reply(tool_use("check_syntax", {}), stop_reason="model_context_window_exceeded"),
              reply(SUBMIT)]
    with FakeMessagesServer(script) as server:
        proposal = claude(server).propose(make_ctx(recipe, store))
    assert server.rejections == [] and proposal.invalid_reason is None
    assert "filled the context window" in server.requests[2].last_user_text()
    assert [r.json["max_tokens"] for r in server.requests] == [1000] * 3  # only max_tokens raises the limit
    assert "model_context_window_exceeded" in transcript(proposal)["stop_reasons"]


def test_a_refusal_ends_the_conversation_at_once_with_its_category(recipe, store):
    why = "The request may assist the development of competing AI models."
    with FakeMessagesServer([reply(EDIT), refusal("frontier_llm", why)]) as server:
        proposal = claude(server).propose(make_ctx(recipe, store))
    assert len(server.requests) == 2  # no nudge, no retry
    assert proposal.invalid_reason == (f"the model {MODEL} refused (stop_reason refusal, category frontier_llm): "
                                       f"{why}; the conversation ended at once")
    t = transcript(proposal)
    assert t["stop"] == "refusal" and t["refusals"] == [{"model": MODEL, "category": "frontier_llm",
                                                         "explanation": why}]
    assert t["events"][-1]["stop_details"]["category"] == "frontier_llm"


def test_a_refused_proposal_starts_over_on_the_fallback_model(recipe, store):
    def model(req: Request, i: int) -> Reply:
        if req.json["model"] == MODEL:
            return reply(EDIT) if len(req.messages) == 1 else refusal("cyber", None)
        return reply(EDIT) if len(req.messages) == 1 else reply(SUBMIT)

    with FakeMessagesServer(model) as server:
        proposal = claude(server, fallback_model="claude-opus-5-5").propose(make_ctx(recipe, store))
    assert server.rejections == [] and proposal.invalid_reason is None
    models = [r.json["model"] for r in server.requests]
    assert models == [MODEL, MODEL, "claude-opus-5-5", "claude-opus-5-5"]
    assert len(server.requests[2].messages) == 1  # the same request, from the start, on the other model
    assert proposal.edits and len(proposal.edits) == 1  # the refused session's edit did not carry over twice
    t = transcript(proposal)
    assert t["model"] == "claude-opus-5-5" and t["refusals"][0]["category"] == "cyber"


def test_refusals_in_a_row_stop_the_backend_with_the_fix(recipe, store):
    with FakeMessagesServer(lambda req, i: refusal("frontier_llm", "competing models")) as server:
        spec = claude(server, refusals_to_stop=2)
        first, second = (spec.propose(make_ctx(recipe, store)) for _ in range(2))
        with pytest.raises(BackendError) as e:
            spec.propose(make_ctx(recipe, store))
    assert "category frontier_llm" in first.invalid_reason and second.invalid_reason == first.invalid_reason
    assert len(server.requests) == 2  # the third proposal asked nothing
    assert "refused 2 proposals in a row" in str(e.value) and "--fallback-model" in e.value.fix


def test_pause_turn_is_sent_back_unchanged_and_the_turn_continues(recipe, store):
    paused = reply(text("Reading the lineage first."), stop_reason="pause_turn")
    with FakeMessagesServer([paused, reply(EDIT), reply(SUBMIT)]) as server:
        proposal = claude(server).propose(make_ctx(recipe, store))
    assert server.rejections == [] and proposal.invalid_reason is None
    second, third = server.requests[1], server.requests[2]
    assert second.messages[-1] == {"role": "assistant", "content": [text("Reading the lineage first.")]}
    assert [b["type"] for b in third.messages[1]["content"]] == ["text", "tool_use"]  # one assistant turn
    assert transcript(proposal)["stop_reasons"] == ["pause_turn", "tool_use", "tool_use"]


def test_thinking_blocks_go_back_unchanged_with_thinking_and_effort_set(recipe, store):
    script = [reply(thinking("SCORE is printed as the loss."), EDIT), reply(thinking("Now submit."), SUBMIT)]
    with FakeMessagesServer(script) as server:
        proposal = claude(server, thinking="adaptive", effort="high").propose(make_ctx(recipe, store))
    assert server.rejections == [] and proposal.invalid_reason is None
    second = server.requests[1]
    assert second.json["thinking"] == {"type": "adaptive"} and second.json["output_config"] == {"effort": "high"}
    sent = second.messages[1]["content"][0]
    assert sent == {"type": "thinking", "thinking": "SCORE is printed as the loss.", "signature": "sig_0001"}


def test_the_fake_server_rejects_what_the_real_api_rejects():
    """The validation the tests above rely on: each rule refuses a request that breaks it."""
    server = FakeMessagesServer([])
    user = {"role": "user", "content": [{"type": "text", "text": "hi"}]}
    use = {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "x", "input": {}}]}
    mark = {"type": "ephemeral"}
    cases = {
        "A maximum of 4 blocks": {"system": [{"type": "text", "text": "s", "cache_control": mark}] * 3,
                                  "tools": [{"name": "t", "cache_control": mark}],
                                  "messages": [{"role": "user", "content": [{"type": "text", "text": "x",
                                                                             "cache_control": mark}]}]},
        "without `tool_result` blocks immediately after": {"messages": [user, use, user]},
        "must end with a user message": {"messages": [user, {"role": "assistant", "content": [text("ok")]}]},
        "Invalid `signature`": {"messages": [user, {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "edited", "signature": "sig_9"}, text("a")]}, user]},
        "Extra inputs are not permitted": {"messages": [{"role": "user", "content": [
            {"type": "text", "text": "x", "_note": 1}]}]},
        "prompt is too long": {"messages": [{"role": "user", "content": [text("x" * 4_000_100)]}]},
    }
    for expected, body in cases.items():
        problem = server.validate({"model": MODEL, "max_tokens": 100, **body}, "anthropic")
        assert problem and expected in problem, (expected, problem)
    ok = {"model": MODEL, "max_tokens": 100, "messages": [user, use, {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "r"}]}]}
    assert server.validate(ok, "anthropic") is None
    server._httpd.server_close()


# ----- the context window -----------------------------------------------------
def _reading_model(reads: int):
    def model(req: Request, i: int) -> Reply:
        n = (len(req.messages) - 1) // 2
        if n < reads:
            return reply(tool_use("query_trial", {"ref": "t0000"}))
        if n == reads:
            return reply(EDIT)
        return reply(SUBMIT)
    return model


def test_old_tool_results_are_cleared_to_fit_the_window(recipe):
    big = "a long stderr line from the baseline run\n" * 250  # query_trial shows its last 40 lines
    store = InMemoryStore()
    base = create_trial(store, recipe, recipe_files(recipe), specialist="baseline", hypothesis="baseline",
                        backend="none")
    store.record_result(base.run_id, tags={S.OUTCOME: "ok", S.DECISION: "baseline", S.SCORE_NAME: "loss"},
                        metrics={"loss": 0.5}, artifacts={"logs/seed0.stderr.txt": big})
    with FakeMessagesServer(_reading_model(1)) as probe:  # measure a first turn and one tool result
        claude(probe, max_turns=2).propose(make_ctx(recipe, store))
    first, one = (count_tokens(r.json) for r in probe.requests[:2])
    window = first + int(2.5 * (one - first)) + 1000 + 256  # room for two tool results, not four
    with FakeMessagesServer(_reading_model(4), context_window=window) as server:
        proposal = claude(server, context_window=window).propose(make_ctx(recipe, store))
    assert server.rejections == [], server.rejections  # nothing known to be too long was sent
    assert proposal.invalid_reason is None
    assert all(count_tokens(r.json) <= window - 1000 for r in server.requests)
    assert any("was cleared to fit the context window" in json.dumps(r.messages) for r in server.requests)
    assert server.counted  # the server's own count was asked near the limit
    assert "cleared older tool results" in transcript(proposal)["context"]["shrunk"]


def test_a_server_that_says_prompt_too_long_is_believed_and_the_lineage_shrinks(recipe, store):
    for i in range(30):  # a long lineage: the first turn's largest part
        t = create_trial(store, recipe, recipe_files(recipe), specialist="optimization",
                         hypothesis=f"idea {i}: " + "change the schedule of the learning rate " * 3, backend="offline")
        store.record_result(t.run_id, tags={S.OUTCOME: "crashed", S.DECISION: "discard", S.SCORE_NAME: "loss",
                                            S.FEEDBACK: "outcome: crashed — " + "a long traceback line " * 8},
                            metrics={}, artifacts={})
    with FakeMessagesServer([reply(EDIT)]) as probe:
        claude(probe, max_turns=1).propose(make_ctx(recipe, store))
    needed = count_tokens(probe.requests[0].json)
    window = needed - 100  # the first turn is too long; the specialist believes its window is 1M
    script = [reply(EDIT), reply(SUBMIT)]
    with FakeMessagesServer(script, context_window=window, count_tokens_route=False) as server:
        proposal = claude(server, max_tokens=300).propose(make_ctx(recipe, store))
    assert server.rejections[0].startswith(f"prompt is too long: {needed} tokens > {window} maximum")
    assert len(server.rejections) == 1 and proposal.invalid_reason is None
    assert "read them with the lineage_view tool" in server.requests[1].messages[0]["content"][0]["text"]
    t = transcript(proposal)
    assert t["context"]["window"] == window and t["context"]["shrunk"]  # learned from the error


def test_a_first_turn_that_cannot_fit_is_a_backend_error_and_is_never_sent(recipe, store):
    with FakeMessagesServer([reply(EDIT)]) as server:
        with pytest.raises(BackendError) as e:
            claude(server, context_window=1200, max_tokens=300).propose(make_ctx(recipe, store))
    assert server.requests == []
    assert "the first turn of a proposal needs about" in str(e.value)
    assert "larger context window" in e.value.fix


# ----- account-level errors ---------------------------------------------------
@pytest.mark.parametrize("status,text_,cause,fix", [
    (402, "Your account has an outstanding balance.", "refused for billing", "add credits"),
    (400, "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or "
          "purchase credits.", "refused for billing", "payment method"),
    (400, "You have reached your specified API usage limits. You will regain access on 2027-01-01 at 00:00 UTC.",
     "spend limit", "spend limit"),
    (403, "Your API key does not have permission to use the specified resource.", "does not allow this key",
     "another --model"),
    (404, "model: claude-sonnet-9", "does not know model", "check --model"),
    (401, "invalid x-api-key", "refused the credentials", "ANTHROPIC_API_KEY"),
])
def test_account_errors_are_backend_errors_naming_cause_and_fix(recipe, store, status, text_, cause, fix):
    with FakeMessagesServer(lambda req, i: error(status, text_)) as server:
        with pytest.raises(BackendError) as e:
            claude(server).propose(make_ctx(recipe, store))
    assert len(server.requests) == 1  # not retried
    assert cause in e.value.cause and text_ in e.value.cause and fix in e.value.fix
    assert isinstance(e.value, UsageError) and e.value.exit_code == 2


def test_the_same_400_on_every_first_turn_stops_the_backend(recipe, store):
    bad = "thinking.type: Input tag 'adaptive' found using 'type' does not match any of the expected tags"
    with FakeMessagesServer(lambda req, i: error(400, bad)) as server:
        spec = claude(server)
        first, second = (spec.propose(make_ctx(recipe, store)) for _ in range(2))
        with pytest.raises(BackendError, match="every proposal's first request was refused the same way"):
            spec.propose(make_ctx(recipe, store))
    assert first.invalid_reason == f"the model API refused the request (HTTP 400 invalid_request_error: {bad})"
    assert len(server.requests) == 3


def test_overloaded_then_success_and_retry_after_zero_is_not_a_tight_loop(recipe, store):
    script = [error(529, "Overloaded", retry_after=0), error(529, "Overloaded"), reply(EDIT), reply(SUBMIT)]
    with FakeMessagesServer(script) as server:
        proposal = claude(server).propose(make_ctx(recipe, store))
    assert proposal.invalid_reason is None
    at = [r.at for r in server.requests]
    assert at[1] - at[0] >= 0.045  # the backoff (0.1 s, jitter 0.5-1), not "no wait"
    retries = transcript(proposal)["retries"]
    assert [r["status"] for r in retries] == [529, 529] and retries[0]["retry_after"] is None


# ----- endpoints that do not answer -------------------------------------------
@pytest.mark.parametrize("kind", ["silent", "closed"])
def test_an_endpoint_that_never_answered_is_a_backend_error_not_a_pause(recipe, store, kind):
    retry = RetryPolicy(budget_seconds=1.0, base_seconds=0.1, max_seconds=0.3)
    with SilentServer() as silent:
        url = silent.url if kind == "silent" else closed_port_url()
        spec = ClaudeSpecialist(model=MODEL, base_url=url, api_key="test-key", tracing=False, retry=retry,
                                request_timeout=0.3, connect_timeout=0.3)
        t0 = time.monotonic()
        with pytest.raises(BackendError) as e:
            spec.check()
        with pytest.raises(BackendError):
            spec.propose(make_ctx(recipe, store))
    assert time.monotonic() - t0 < 8
    assert f"the model endpoint {url} has never answered" in e.value.cause
    assert ("timeout" if kind == "silent" else "connection failed") in e.value.cause
    assert "ANTHROPIC_BASE_URL" in e.value.fix


def test_check_passes_a_working_endpoint_and_refuses_an_unpriced_dollar_budget(recipe, store):
    with FakeMessagesServer(lambda req, i: reply(text("ok"), input_tokens=12, output_tokens=1)) as server:
        line = claude(server).check(dollars=5)
        with pytest.raises(BackendError, match="has no price for model 'local-mystery'") as e:
            claude(server, model="local-mystery").check(dollars=5)
        assert claude(server, model="local-mystery", prices='{"local-mystery": [1, 2]}').check(dollars=5)
    assert f"{MODEL} via anthropic at {server.url} answered in" in line
    assert len(server.requests) == 2 and server.requests[0].json["max_tokens"] == 32
    assert "--prices" in e.value.fix


# ----- providers, streaming, prices --------------------------------------------
def test_bedrock_client_signs_and_uses_the_invoke_path(recipe, store, monkeypatch):
    for k, v in {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "dummy-secret",
                 "AWS_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    with FakeMessagesServer([reply(EDIT), reply(SUBMIT)]) as server:
        spec = claude(server, provider="bedrock", api_key=None)
        proposal = spec.propose(make_ctx(recipe, store))
    assert proposal.invalid_reason is None and server.rejections == []
    first = server.requests[0]
    assert first.route == "bedrock" and first.path == f"/model/anthropic.{MODEL}/invoke"
    assert first.headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert first.json["anthropic_version"] and "model" not in json.loads(json.dumps(first.json)).get("_", {})
    assert proposal.usage.cost_usd > 0  # anthropic.claude-… is priced as claude-…


def test_vertex_client_uses_the_raw_predict_path_with_the_token(recipe, store):
    options = {"region": "us-east5", "project_id": "my-project", "access_token": "dummy-token"}
    with FakeMessagesServer([reply(EDIT), reply(SUBMIT)]) as server:
        proposal = claude(server, provider="vertex", provider_options=options).propose(make_ctx(recipe, store))
    assert proposal.invalid_reason is None and server.rejections == []
    first = server.requests[0]
    assert first.route == "vertex"
    assert first.path == f"/projects/my-project/locations/us-east5/publishers/anthropic/models/{MODEL}:rawPredict"
    assert first.headers["authorization"] == "Bearer dummy-token"


def test_foundry_client_and_a_long_answer_streams(recipe, store):
    with FakeMessagesServer([reply(thinking("plan"), EDIT), reply(SUBMIT)]) as server:
        spec = claude(server, provider="foundry", api_key="foundry-key", max_tokens=20_000, thinking=2048)
        proposal = spec.propose(make_ctx(recipe, store))
    assert proposal.invalid_reason is None and server.rejections == []
    assert all(r.json.get("stream") is True for r in server.requests)
    assert server.requests[0].headers["x-api-key"] == "foundry-key"
    assert server.requests[1].messages[1]["content"][0]["signature"] == "sig_0001"  # rebuilt from the stream


def test_one_hour_cache_lifetime_marks_every_breakpoint_and_is_priced(recipe, store):
    with FakeMessagesServer([reply(EDIT, input_tokens=0, output_tokens=0, cache_write=1_000_000),
                             reply(SUBMIT, input_tokens=0, output_tokens=0)]) as server:
        proposal = claude(server, cache_ttl="1h").propose(make_ctx(recipe, store))
    first = server.requests[0].json
    marks = [b["cache_control"] for b in first["tools"] + first["system"] + first["messages"][0]["content"]
             if "cache_control" in b]
    assert marks == [{"type": "ephemeral", "ttl": "1h"}] * 3
    assert proposal.usage.cost_usd == pytest.approx(4.0)  # Sonnet 5.5: $4 per Mtok of 1-hour cache writes
    assert proposal.usage.metrics()["llm_cache_write_tokens"] == 1_000_000


def test_price_table_per_model_rates_tiers_and_provider_ids():
    table = PriceTable()
    assert table.as_of == "2026-12-03"
    assert canonical_model("us.anthropic.claude-haiku-4-5-20251001-v1:0") == "claude-haiku-4-5"
    assert canonical_model("claude-opus-4-1@20250805") == "claude-opus-4-1"
    haiku = table.price("claude-haiku-5-5")
    assert haiku.cost(100_000, 0) == pytest.approx(0.01)  # up to 100k prompt tokens: $0.10 / Mtok
    assert haiku.cost(100_001, 1_000) == pytest.approx((100_001 * 0.5 + 1_000 * 2.5) / 1e6)  # every token dearer
    opus = table.price("claude-opus-5-5")
    assert (opus.base.cache_read, opus.base.cache_write_5m, opus.base.cache_write_1h) == (0.2, 5, 8)  # not 0.1x
    assert table.price("claude-fable-5-1").base.cache_read == 0.25
    assert table.price("anthropic.claude-sonnet-4-5-20250929-v1:0").context_window == 200_000
    assert not table.knows("gpt-9") and table.cost("gpt-9", 10**6, 10**6) == 0
    custom = PriceTable({"my-model": {"input": 1, "output": 2, "cache_read": 0.3}})
    assert custom.price("my-model").base.cache_write_5m == 1.25  # the usual multiplier where not given


def test_bad_thinking_and_effort_settings_are_refused_by_name(recipe, store):
    with FakeMessagesServer([]) as server:
        with pytest.raises(UsageError, match=r"--thinking 512: a thinking budget must be at least 1024"):
            claude(server, thinking=512)
        with pytest.raises(UsageError, match="--effort 'extreme'"):
            claude(server, effort="extreme")
        with pytest.raises(UsageError, match="--provider 'azure'"):
            claude(server, provider="azure")


def test_the_docs_state_the_price_table_with_its_date_and_sources():
    from pathlib import Path

    from mlflow_autoresearch.specialists._pricing import shipped_table

    page = (Path(__file__).parents[2] / "docs" / "claude.md").read_text()
    table = shipped_table()
    assert f"checked {table['as_of']}" in page and "https://platform.claude.com/docs/en/about-claude/pricing" in page
    for model, v in table["models"].items():
        row = next(ln for ln in page.splitlines() if ln.startswith(f"| `{model}` |"))
        assert f"| ${v['input']:g} | ${v['output']:g} | ${v['cache_write_5m']:g} | ${v['cache_write_1h']:g} | " \
               f"${v['cache_read']:g} |" in row, model


def test_check_backend_from_settings_and_auto_agent_follows_the_credentials(monkeypatch, tmp_path):
    from mlflow_autoresearch.settings import make_settings
    from mlflow_autoresearch.specialists import check_backend, resolve_agent

    for var in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL", "ANTHROPIC_FOUNDRY_API_KEY",
                "ANTHROPIC_VERTEX_PROJECT_ID", "AWS_BEARER_TOKEN_BEDROCK", "CLAUDE_CODE_USE_BEDROCK"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")  # keys for S3 artifacts do not mean Bedrock
    assert resolve_agent("auto") == "offline"
    assert check_backend(make_settings(agent="auto")) == "offline: no model API to check"
    assert resolve_agent("auto", provider="bedrock") == "claude"
    monkeypatch.setenv("CLAUDE_CODE_USE_BEDROCK", "1")
    assert resolve_agent("auto") == "claude"
    monkeypatch.delenv("CLAUDE_CODE_USE_BEDROCK")
    with FakeMessagesServer(lambda req, i: reply(text("ok"))) as server:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)  # a local server, no key
        assert resolve_agent("auto") == "claude"
        line = check_backend(make_settings(agent="auto", thinking="adaptive", effort="low", cache_ttl="1h"))
    assert line.startswith(f"{MODEL} via anthropic at {server.url} answered in")
    (check,) = server.requests
    assert check.json["thinking"] == {"type": "adaptive"} and check.json["output_config"] == {"effort": "low"}
    assert check.headers["authorization"] == "Bearer no-key-for-local-server"


def test_claude_settings_are_validated_by_name():
    from mlflow_autoresearch.settings import make_settings

    for bad, field in [({"thinking": "lots"}, "--thinking"), ({"effort": "extreme"}, "--effort"),
                       ({"cache_ttl": "2h"}, "--cache-ttl"), ({"provider": "azure"}, "--provider"),
                       ({"max_tokens": 200_000}, "--max-tokens"), ({"connect_timeout": 0}, "--connect-timeout")]:
        with pytest.raises(UsageError, match=field):
            make_settings(**bad)


def test_connect_timeout_is_short_and_apart_from_the_request_timeout():
    with FakeMessagesServer([]) as server:
        spec = claude(server, request_timeout=600, connect_timeout=4)
        assert (spec.client.timeout.connect, spec.client.timeout.read) == (4, 600)
        assert ClaudeSpecialist(model=MODEL, base_url=server.url, tracing=False).client.timeout.connect == 10
