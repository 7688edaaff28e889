"""The report of an experiment: best-score plots, the lineage tree, the leaderboard, cost, repairs.

``build_report`` writes PNGs (matplotlib, Agg) and one self-contained HTML page;
``log_report`` logs them as a summary run of the experiment.  Importing this
package is cheap (the CLI registers ``report_command`` at every start);
matplotlib and mlflow load when a report is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlflow_autoresearch.report._cli import report_command

if TYPE_CHECKING:
    from mlflow_autoresearch.report._build import ReportPaths, build_report, log_report


def __getattr__(name: str):
    if name in ("build_report", "log_report", "ReportPaths", "summary"):
        from mlflow_autoresearch.report import _build

        return getattr(_build, name)
    raise AttributeError(name)


__all__ = ["ReportPaths", "build_report", "log_report", "report_command"]
