"""Fixtures for the sweep suites; helpers live in sweepkit.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from sweepkit import Swept, empty_tracking_db, make_swept


@pytest.fixture(scope="session")
def tracking_db_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return empty_tracking_db(tmp_path_factory.mktemp("sweep-template") / "mlflow.db")


@pytest.fixture
def swept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tracking_db_template: Path) -> Swept:
    """A toy experiment whose baseline is the accepted trial to sweep; optuna.db beside mlflow.db."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AUTORESEARCH_SWEEP_STORAGE", raising=False)
    return make_swept(tmp_path, template=tracking_db_template)
