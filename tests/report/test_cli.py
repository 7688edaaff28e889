"""``autoresearch report``: the command a user runs, on a real store."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from mlflow_autoresearch import schema as S
from mlflow_autoresearch.cli import _load_plugins, cli

pytestmark = pytest.mark.slow  # shares the module lineage of six real evaluations


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    _load_plugins()  # as main() does: registers `report`
    return CliRunner()


def test_report_command_writes_the_page_and_logs_a_summary_run(toy_lineage, runner, tmp_path):
    out = tmp_path / "report"
    before = len(toy_lineage.store.trials())
    result = runner.invoke(cli, ["report", "--recipe", str(toy_lineage.recipe.root), "--experiment", "report-toy",
                                 "--tracking-uri", toy_lineage.uri, "--out", str(out), "--log"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == str(out / "report.html")
    assert "t0004" in (out / "report.html").read_text()
    assert {p.name for p in out.glob("*.png")} == {"best_by_trial.png", "best_by_time.png", "tree.png",
                                                   "specialists.png", "cost.png"}

    client = MlflowClient(toy_lineage.uri)
    run_id = re.search(r"report logged to run (\w+)", result.output).group(1)
    run = client.get_run(run_id)
    assert run.data.tags[S.KIND] == "summary"
    assert run.info.run_name.startswith("report-") and run.info.status == "FINISHED"
    assert run.data.metrics["trials"] == 6 and run.data.metrics["kept_improvements"] == 2
    assert run.data.metrics["best_loss"] == pytest.approx(0.3)
    assert "t0004" in run.data.tags[S.NOTE] and "report/report.html" in run.data.tags[S.NOTE]
    logged = {f.path for f in client.list_artifacts(run.info.run_id, "report")}
    assert {"report/report.html", "report/tree.png", "report/summary.json"} <= logged
    assert len(toy_lineage.store.trials()) == before  # the summary run is not a trial


def test_report_command_refuses_unclear_input(toy_lineage, runner, tmp_path):
    result = runner.invoke(cli, ["report", "--out", str(tmp_path), "--tracking-uri", f"sqlite:///{tmp_path}/none.db"])
    assert result.exit_code == 2 and "there is no tracking store at" in result.output
    assert not (tmp_path / "none.db").exists()
    result = runner.invoke(cli, ["report", "--experiment", "no-such-study", "--tracking-uri", toy_lineage.uri,
                                 "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "no experiment named 'no-such-study'" in result.output and "report-toy" in result.output

