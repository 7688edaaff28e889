"""One trial id in every command (issue 14): t0007, a run id, or a unique run-id prefix; errors exit 2."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from mlflow_autoresearch import schema as S
from mlflow_autoresearch._errors import UsageError
from mlflow_autoresearch.cli import _load_plugins, cli
from mlflow_autoresearch.lineage import Lineage, MlflowStore, TrialDraft, match_trial, parse_ref
from mlflow_autoresearch.lineage._record import record_from_parts


def _trial(store: MlflowStore, score: float, decision: str, parent=None, specialist="data"):
    t = store.create_trial(TrialDraft(files={"train.py": f"SCORE = {score}\n".encode()}, specialist=specialist,
                                      hypothesis=f"try {score}", parent_id=parent.run_id if parent else None))
    return store.record_result(t.run_id, tags={S.OUTCOME: "ok", S.DECISION: decision, S.SCORE_NAME: "loss"},
                               metrics={"loss": score}, artifacts={})


@pytest.fixture
def two_studies(tmp_path, monkeypatch):
    """Two experiments in one SQLite store, each with t0000 (baseline) and t0001."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = {}
    for name in ("study-a", "study-b"):
        store = MlflowStore(name, uri)
        base = _trial(store, 1.0, "baseline", specialist="baseline")
        out[name] = (store, base, _trial(store, 0.5, "discard", parent=base))
    _load_plugins()
    return uri, out


def _runs(uri: str) -> int:
    client = MlflowClient(uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    return len(client.search_runs(ids, max_results=1000))


def refused(result, *says: str) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    for s in says:
        assert s in result.output, result.output
    return result.output


def test_parse_ref_accepts_the_three_forms_and_names_them_when_wrong():
    assert parse_ref("t0007").number == 7 and parse_ref("#12").number == 12 and parse_ref("7").number == 7
    assert parse_ref("1A2B3C").prefix == "1a2b3c" and parse_ref("a" * 32).full
    for bad, says in [("abc", "at least 6"), ("t00x7", "not a trial id"), ("x" * 40, "not a trial id"),
                      ("", "not a trial id"), ("t0007; rm -rf /", "not a trial id")]:
        with pytest.raises(UsageError, match=says) as e:
            parse_ref(bad)
        assert "t0007 (a trial number), a run id, or a unique prefix" in str(e.value)


def test_match_trial_refuses_an_ambiguous_prefix_naming_the_candidates():
    recs = [record_from_parts(rid, f"t{n:04d}-x", "FINISHED", n, n, {S.KIND: "trial", S.TRIAL: str(n)}, {})
            for n, rid in enumerate(["abcdef01" + "0" * 24, "abcdef02" + "0" * 24, "99999999" + "0" * 24])]
    assert match_trial(recs, "abcdef01").number == 0
    assert match_trial(recs, "t0002").run_id.startswith("9999")
    with pytest.raises(UsageError) as e:
        match_trial(recs, "abcdef")
    assert "2 trials match" in str(e.value) and "t0000 (abcdef01" in str(e.value) and "t0001 (abcdef02" in str(e.value)
    with pytest.raises(UsageError, match="no trial with that id"):
        match_trial(recs, "t0042")


def test_lineage_takes_every_form_and_shows_run_ids(two_studies, toy_recipe):
    uri, studies = two_studies
    store, base, t1 = studies["study-a"]
    runner = CliRunner()
    common = ["lineage", "--recipe", str(toy_recipe), "--experiment", "study-a", "--tracking-uri", uri]
    view = runner.invoke(cli, common)
    assert view.exit_code == 0, view.output
    assert f"t0000 {base.run_id[:8]}" in view.output  # the leaderboard names the run
    assert f"t0001 {t1.run_id[:8]}" in view.output  # recent trials too
    for ref in ("t0001", t1.run_id, t1.run_id[:8], t1.run_id[:6].upper()):
        r = runner.invoke(cli, [*common, "--trial", ref])
        assert r.exit_code == 0, r.output
        assert f"({t1.run_id})" in r.output
    refused(runner.invoke(cli, [*common, "--trial", "t0042"]), "--trial t0042: no trial with that id",
            "in experiment 'study-a'")
    refused(runner.invoke(cli, [*common, "--trial", "abc"]), "at least 6 characters")


def test_evaluate_sweep_confirm_resolve_numbers_and_prefixes(two_studies):
    uri, studies = two_studies
    before = _runs(uri)
    runner = CliRunner()
    a1 = studies["study-a"][2]
    # t0001 is in both experiments: named with both, and the fix
    for command in ("evaluate", "sweep", "confirm"):
        out = refused(runner.invoke(cli, [command, "--trial", "t0001", "--tracking-uri", uri]),
                      "--trial t0001: 2 trials match", "'study-a'", "'study-b'", "add --experiment")
        assert studies["study-b"][2].run_id in out
    # a unique prefix finds the trial in whichever experiment holds it: the command gets past the id
    refused(runner.invoke(cli, ["sweep", "--trial", a1.run_id[:7], "--tracking-uri", uri, "--no-submit"]),
            f"t0001 ({a1.run_id}) is not an accepted trial")
    refused(runner.invoke(cli, ["confirm", "--trial", "t0001", "--experiment", "study-a", "--tracking-uri", uri]),
            "--trial t0001 names no recipe folder; pass --recipe")
    # unknown ids: exit 2 (sweep used to exit 1), naming the store
    for command in ("evaluate", "sweep", "confirm"):
        refused(runner.invoke(cli, [command, "--trial", "t0099", "--tracking-uri", uri]),
                "--trial t0099: no trial with that id")
        refused(runner.invoke(cli, [command, "--trial", "ffffff00", "--tracking-uri", uri]), "no trial with that id")
        refused(runner.invoke(cli, [command, "--trial", "f" * 32, "--tracking-uri", uri]), "no such run")
        refused(runner.invoke(cli, [command, "--trial", "t0001", "--experiment", "nope", "--tracking-uri", uri]),
                "no experiment named 'nope'")
    assert _runs(uri) == before  # nothing written by any refusal


def test_no_store_is_created_for_a_trial_id(tmp_path):
    _load_plugins()
    db = tmp_path / "none.db"
    for command in ("evaluate", "sweep", "confirm"):
        refused(CliRunner().invoke(cli, [command, "--trial", "t0001", "--tracking-uri", f"sqlite:///{db}"]),
                "there is no tracking store at")
    assert not db.exists()


def test_evaluate_rescores_a_trial_given_by_prefix(toy_recipe, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _load_plugins()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    runner = CliRunner()
    first = runner.invoke(cli, ["evaluate", "--recipe", str(toy_recipe), "--tracking-uri", uri])
    assert first.exit_code == 0, first.output
    run_id = first.stdout.strip().splitlines()[-1]
    again = runner.invoke(cli, ["evaluate", "--trial", run_id[:8], "--recipe", str(toy_recipe),
                                "--tracking-uri", uri])
    assert again.exit_code == 0, again.output
    new = MlflowStore("toy", uri, create=False).get(again.stdout.strip().splitlines()[-1])
    assert new.parent_id == run_id and new.specialist == "rescore" and new.number == 1
    lineage = Lineage(MlflowStore("toy", uri, create=False).trials())
    assert [t.short for t in lineage.trials] == ["t0000", "t0001"]
