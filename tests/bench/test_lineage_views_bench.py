"""bench/lineage_views.py in its tiny mode, so the benchmark cannot rot."""

from __future__ import annotations

import pytest

from bench.lineage_views import main


@pytest.mark.slow
def test_lineage_views_bench_runs_and_syncs_incrementally(live_mlflow_server, capsys):
    result = main(["--trials", "200", "--views", "3", "--naive", "1", "--json",
                   "--tracking-uri", live_mlflow_server.url, "--db", str(live_mlflow_server.db)])
    assert result["trials"] == 200
    # After the first sync a view fetches only the RUNNING trials and the newly ended ones,
    # not the 200 (the bench raises when a view misses the other loop's new trial).
    assert result["sync_rows_median"] <= 10
    assert 0 < result["view_median_s"] < 10 and result["naive_median_s"] > 0
    assert result["view_chars_max"] < 45_000
    assert '"meets_target"' in capsys.readouterr().out
