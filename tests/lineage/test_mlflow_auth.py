"""A team server with MLflow's basic-auth app: writers write, readers are refused before any trial starts."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from mlflow_autoresearch._errors import PermissionDenied
from mlflow_autoresearch.lineage import MlflowStore
from mlflow_autoresearch.outcome import Outcome
from mlflow_autoresearch.recipe import load_recipe
from mlflow_autoresearch.trial import evaluate_folder
from tests.servers import ADMIN, READER, WRITER, unique_name


def login(monkeypatch: pytest.MonkeyPatch, user: tuple[str, str]) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", user[1])


@pytest.mark.slow
def test_writer_succeeds_and_reader_is_refused_with_a_clear_message(auth_mlflow_server, monkeypatch, toy_recipe):
    url = auth_mlflow_server.url
    name = unique_name("team")
    recipe = load_recipe(toy_recipe)

    login(monkeypatch, WRITER)
    writer = MlflowStore(name, url)
    writer.check_write_access()
    base = evaluate_folder(writer, recipe)
    assert base.outcome is Outcome.OK and base.decision == "baseline"

    login(monkeypatch, READER)
    reader = MlflowStore(name, url)
    assert [t.run_id for t in reader.trials()] == [base.run_id]  # reading is allowed
    with pytest.raises(PermissionDenied) as refused:
        reader.check_write_access()
    message = str(refused.value)
    assert "user 'reader'" in message and f"grant EDIT on experiment {name!r}" in message and url in message
    assert refused.value.exit_code == 2
    with pytest.raises(PermissionDenied, match="user 'reader'"):
        evaluate_folder(reader, recipe)  # refused at the first write: nothing ran

    login(monkeypatch, WRITER)
    runs = MlflowClient(url).search_runs([writer.experiment_id])
    assert sorted(r.info.run_id for r in runs) == sorted([base.run_id, writer._ledger()])

    # The fix the message names: an admin grants EDIT; then the same user may write.
    login(monkeypatch, ADMIN)
    from mlflow.server import get_app_client

    get_app_client("basic-auth", tracking_uri=url).grant_user_permission(
        READER[0], "experiment", writer.experiment_id, "EDIT")
    login(monkeypatch, READER)
    reader.check_write_access()
    assert reader.create_trial(base_draft(reader, base)).number == 1


def base_draft(store: MlflowStore, parent):
    from mlflow_autoresearch.lineage import TrialDraft

    return TrialDraft(files=store.code(parent.run_id), specialist="manual", hypothesis="reader, now an editor",
                      parent_id=parent.run_id)


def test_wrong_password_names_the_variables_to_set(auth_mlflow_server, monkeypatch):
    login(monkeypatch, (WRITER[0], "not-the-password"))
    with pytest.raises(PermissionDenied) as refused:
        MlflowStore(unique_name("badpw"), auth_mlflow_server.url)
    assert "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD" in str(refused.value)
    assert "UNAUTHENTICATED" in str(refused.value)
