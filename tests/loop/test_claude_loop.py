"""The loop on the Claude path: the real anthropic SDK against a local Messages API server.

The scripted model (the only fake) reads train.py, lowers SCORE by 20%, and submits.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from mlflow_autoresearch import schema as S
from mlflow_autoresearch._errors import BackendError
from mlflow_autoresearch.loop import run_loop
from mlflow_autoresearch.recipe import load_recipe
from mlflow_autoresearch.settings import make_settings

from ..specialists.fake_messages_server import (
    FakeMessagesServer,
    Reply,
    Request,
    closed_port_url,
    error,
    refusal,
    reply,
    text,
    tool_use,
)


def is_check(req: Request) -> bool:
    """The backend check the loop sends before the baseline: one short request."""
    return req.json.get("max_tokens") == 32 and len(req.messages) == 1


class ToyModel:
    """Turn 1: read train.py.  Turn 2: edit SCORE down 20%.  Turn 3: submit."""

    def __init__(self, on_submit=None, input_tokens: int = 100) -> None:
        self.sessions: list[Request] = []  # the first request of each proposal session
        self.on_submit = on_submit
        self.input_tokens = input_tokens

    def __call__(self, req: Request, i: int) -> Reply:
        if is_check(req):
            return reply(text("ok"), input_tokens=12, output_tokens=1)
        turn = (len(req.messages) + 1) // 2
        if turn == 1:
            self.sessions.append(req)
            return reply(tool_use("read_file", {"path": "train.py"}), input_tokens=self.input_tokens)
        if turn == 2:
            content = req.tool_results()[0]["content"]
            score = float(re.search(r"SCORE = ([0-9.]+)", content).group(1))
            return reply(tool_use("edit_file", {"path": "train.py", "old_text": f"SCORE = {score}",
                                                "new_text": f"SCORE = {score * 0.8:.6f}"}))
        if self.on_submit:
            self.on_submit(len(self.sessions))
        return reply(tool_use("submit", {"hypothesis": "lower SCORE by 20%", "expected_effect": "-20% loss"}))


def _settings(uri: str, url: str, **kw):
    return make_settings(agent="claude", in_process=True, proposals_ahead=0, tracking_uri=uri,
                         anthropic_base_url=url, **kw)


def test_steering_note_changed_mid_run_reaches_the_next_prompt(toy_recipe, mlflow_store, tmp_path, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    steering = tmp_path / "steering.md"
    steering.write_text("Prefer changes to SCORE. (note A)")

    def change_note(session: int) -> None:
        if session == 1:  # the user edits the note while the loop runs
            steering.write_text("Stop touching SCORE soon. (note B)")

    model = ToyModel(on_submit=change_note)
    with FakeMessagesServer(model) as server:
        result = run_loop(load_recipe(toy_recipe), _settings(mlflow_store.tracking_uri, server.url, trials=3,
                                                             steering_file=str(steering)),
                          store=mlflow_store, echo=lambda m: None)
    assert result.trials == 3
    first, later = model.sessions[0].prompt_text(), model.sessions[-1].prompt_text()
    assert "note A" in first and "note B" not in first
    assert "note B" in later and "note A" not in later
    trials = mlflow_store.trials()
    assert all(t.backend == "claude" for t in trials[1:])
    kept = [t for t in trials if t.decision == "keep"]
    assert kept and kept[-1].metrics["llm_tokens_in"] > 0
    transcript = mlflow_store.read_artifact(kept[-1].run_id, "agent/transcript.json")
    assert json.loads(transcript)["stop"] == "submitted"


def test_dollar_budget_stops_the_loop_cleanly(toy_recipe, mlflow_store, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    model = ToyModel(input_tokens=200_000)  # three calls a proposal: about $1.8 at $3/Mtok
    lines: list[str] = []
    with FakeMessagesServer(model) as server:
        result = run_loop(load_recipe(toy_recipe), _settings(mlflow_store.tracking_uri, server.url, trials=10,
                                                             dollars=2.0, prices='{"claude-sonnet-5-5": [3, 15]}'),
                          store=mlflow_store, echo=lines.append)
    assert "dollar budget reached" in result.stop_reason
    assert 1 <= result.trials < 10 and result.dollars >= 2.0
    assert any("stopped: dollar budget reached" in ln for ln in lines)
    assert all(t.finished for t in mlflow_store.trials())


def test_model_api_down_pauses_then_recovers(toy_recipe, mlflow_store, monkeypatch):
    """529 for longer than the retry budget: the loop reports a pause, keeps going, and finishes."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    monkeypatch.setattr("mlflow_autoresearch.loop._loop.PAUSE_FIRST", 1.0)
    model = ToyModel()
    outage: list[float] = []  # starts with the first request, lasts 6 s

    def script(req: Request, i: int) -> Reply:
        outage.append(outage[0] if outage else time.monotonic())
        if time.monotonic() < outage[0] + 6.0:
            return error(529, "Overloaded")
        return model(req, i)

    lines: list[str] = []
    with FakeMessagesServer(script) as server:
        result = run_loop(load_recipe(toy_recipe), _settings(mlflow_store.tracking_uri, server.url, trials=2,
                                                             model_retry_seconds=2),
                          store=mlflow_store, echo=lines.append)
    assert any(ln.startswith("paused: the model API is unavailable") for ln in lines), lines
    assert result.trials == 2 and "trial budget" in result.stop_reason
    assert all(t.finished for t in mlflow_store.trials())


def test_a_bad_key_stops_the_loop_before_the_baseline(toy_recipe, mlflow_store, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-wrong")
    lines: list[str] = []
    with FakeMessagesServer(lambda req, i: error(401, "invalid x-api-key")) as server:
        with pytest.raises(BackendError) as e:
            run_loop(load_recipe(toy_recipe), _settings(mlflow_store.tracking_uri, server.url, trials=3),
                     store=mlflow_store, echo=lines.append)
    assert len(server.requests) == 1 and mlflow_store.trials() == []  # nothing scored, nothing burned
    assert "refused the credentials (HTTP 401 authentication_error: invalid x-api-key)" in e.value.cause
    assert "ANTHROPIC_API_KEY" in e.value.fix and e.value.exit_code == 2


def test_an_endpoint_where_nothing_listens_stops_the_loop_instead_of_pausing(toy_recipe, mlflow_store, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-wrong")
    url = closed_port_url()
    t0 = time.monotonic()
    with pytest.raises(BackendError, match=f"the model endpoint {url} has never answered"):
        run_loop(load_recipe(toy_recipe), _settings(mlflow_store.tracking_uri, url, trials=3, model_retry_seconds=1),
                 store=mlflow_store, echo=lambda m: None)
    assert time.monotonic() - t0 < 20 and mlflow_store.trials() == []


def test_a_billing_error_mid_loop_exits_2_naming_the_fix_without_burning_trials(toy_recipe, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from mlflow_autoresearch.cli import cli
    from mlflow_autoresearch.lineage import MlflowStore

    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"

    def script(req: Request, i: int) -> Reply:
        return reply(text("ok")) if is_check(req) else error(402, "Your credit balance is too low.")

    with FakeMessagesServer(script) as server:
        result = CliRunner().invoke(cli, ["run", "--recipe", str(toy_recipe), "--agent", "claude", "--in-process",
                                          "--trials", "6", "--tracking-uri", uri, "--anthropic-base-url", server.url,
                                          "--proposals-ahead", "0"])
    assert result.exit_code == 2, result.output
    assert "refused for billing (HTTP 402 billing_error: Your credit balance is too low.)" in result.output
    assert "Fix: add credits or a payment method" in result.output
    trials = MlflowStore(load_recipe(toy_recipe).name, uri).trials()
    assert [t.specialist for t in trials] == ["baseline"]  # the 402 burned no trial
    assert len(server.requests) == 2  # the check, then one proposal's first call


def test_refusals_are_recorded_on_their_trials_and_repeated_ones_stop_the_loop(toy_recipe, mlflow_store, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    why = "Benign machine learning work can trigger this category."

    def script(req: Request, i: int) -> Reply:
        return reply(text("ok")) if is_check(req) else refusal("frontier_llm", why)

    lines: list[str] = []
    with FakeMessagesServer(script) as server:
        with pytest.raises(BackendError) as e:
            run_loop(load_recipe(toy_recipe), _settings(mlflow_store.tracking_uri, server.url, trials=10),
                     store=mlflow_store, echo=lines.append)
    assert "refused 3 proposals in a row" in str(e.value) and "--fallback-model" in e.value.fix
    refused = [t for t in mlflow_store.trials() if t.specialist != "baseline"]
    assert len(refused) == 3 and all(t.outcome.value == "invalid_proposal" for t in refused)
    for t in refused:
        assert "category frontier_llm" in t.tags[S.REASON] and why in t.feedback
        assert json.loads(mlflow_store.read_artifact(t.run_id, "agent/transcript.json"))["stop"] == "refusal"
    assert len(server.requests) == 1 + 3  # the check, then one call per refused proposal
    assert any("stopped: the specialist backend refused to work" in ln for ln in lines)
