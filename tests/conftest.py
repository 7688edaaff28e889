"""Shared fixtures.  Server-backed fixtures (mlflow server, moto) live in tests/servers.py."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "recipes" / "digits-speedrun"

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("MLFLOW_MODEL_CATALOG_URI", "")  # no network here: no price-catalog fetches by tracing


@pytest.fixture
def sqlite_uri(tmp_path: Path) -> str:
    """A fresh local SQLite tracking store (artifacts beside it)."""
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture
def mlflow_store(sqlite_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from mlflow_autoresearch.lineage import MlflowStore

    monkeypatch.chdir(tmp_path)  # ./mlruns artifacts land in the test's folder
    return MlflowStore("test-experiment", sqlite_uri)


def write_recipe(root: Path, spec: dict, files: dict[str, str]) -> Path:
    """Create a recipe folder: ``recipe.yaml`` from ``spec`` plus the given files."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text))
    (root / "recipe.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return root


TOY_TRAIN = """\
import os
SCORE = 0.5  # what this toy prints
print(f"loss: {SCORE}")
print(f"accuracy: {0.9 + 0.01 * int(os.environ.get('AUTORESEARCH_SEED', '0'))}")
"""

TOY_SPEC = {
    "name": "toy",
    "editable": ["train.py"],
    "command": "python train.py",
    "metric": {"name": "loss", "goal": "minimize"},
    "gates": [{"metric": "accuracy", "op": ">=", "value": 0.85, "near_miss": 0.01}],
    "limits": {"train_seconds": 20, "grace_seconds": 1},
    "seeds": 1,
}


@pytest.fixture
def toy_recipe(tmp_path: Path) -> Path:
    """A recipe whose training is a one-line Python script (no torch): runs in ~0.1 s."""
    return write_recipe(tmp_path / "toy", TOY_SPEC, {"train.py": TOY_TRAIN})


# ----- real servers (tests/servers.py): started once per session, shared by experiment name -----

@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory: pytest.TempPathFactory):
    """A local ``moto_server`` with one bucket (``.bucket``; ``.s3()`` is a boto3 client, ``.keys()`` lists)."""
    from tests.servers import MotoServer

    server = MotoServer(tmp_path_factory.mktemp("moto")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mlflow_db_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated, empty MLflow SQLite database: each server of the session starts from a copy."""
    from tests.servers import migrated_db

    return migrated_db(tmp_path_factory.mktemp("mlflow-template") / "mlflow.db")


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory, moto_s3, mlflow_db_template):
    """``mlflow server --workers 1`` on 127.0.0.1: SQLite backend, artifacts proxied to ``s3://`` on moto.

    Shared by the session: use a fresh experiment name (``servers.unique_name``).  A test may
    ``kill()``/``restart()`` it (same port and database) but must leave it healthy.
    """
    from tests.servers import MlflowServer

    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"), s3=moto_s3, template=mlflow_db_template).start()
    yield server
    server.stop()


@pytest.fixture
def live_mlflow_server(mlflow_server):
    """:func:`mlflow_server`, restarted first if an earlier test left it down."""
    if not mlflow_server.healthy():
        mlflow_server.restart()
    return mlflow_server


@pytest.fixture(scope="session")
def auth_mlflow_server(tmp_path_factory: pytest.TempPathFactory, mlflow_db_template):
    """An MLflow server with the basic-auth app: users ``servers.ADMIN``, ``WRITER`` and ``READER``.

    Clients authenticate through ``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD``
    (use ``monkeypatch.setenv``).  Artifacts stay on local disk.
    """
    from tests.servers import MlflowServer

    server = MlflowServer(tmp_path_factory.mktemp("mlflow-auth"), auth=True, template=mlflow_db_template).start()
    yield server
    server.stop()
