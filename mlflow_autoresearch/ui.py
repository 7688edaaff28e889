"""``autoresearch ui``: the MLflow UI on the store the other commands use, and a link to the trials.

A local SQLite store gets an ``mlflow server`` of its own on 127.0.0.1 (one
worker, no job runner: about 8 s to start, 0.6 GB, against 21 s and 3.4 GB
with MLflow's defaults); a tracking server (http/https) already is the UI,
so only the link is printed.  The link opens the experiment's runs table in
MLflow's model-training view (``workflowType=machine_learning``), not the
GenAI overview.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from mlflow_autoresearch._errors import HarnessError, UsageError
from mlflow_autoresearch.lineage._mlflow import open_client, sqlite_path

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
START_SECONDS = 90.0


def experiment_link(base_url: str, experiment_id: str | None) -> str:
    """The MLflow UI address of an experiment's runs table (or of the experiment list)."""
    base = base_url.rstrip("/")
    if experiment_id is None:
        return f"{base}/#/experiments?workflowType=machine_learning"
    return f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def pick_experiment(uri: str, name: str | None) -> tuple[str, str] | None:
    """(id, name) of experiment ``name``, else of the store's only experiment with runs of ours; None when several.

    Raises UsageError when ``name`` is not in the store.
    """
    from mlflow_autoresearch.report._cli import only_experiment

    client = open_client(uri)
    if name:
        exp = client.get_experiment_by_name(name)
        if exp is None or exp.lifecycle_stage == "deleted":
            known = ", ".join(repr(e.name) for e in client.search_experiments() if e.name != "Default") or "none"
            raise UsageError(f"--experiment {name!r}: no such experiment at {uri} (experiments there: {known})")
        return exp.experiment_id, exp.name
    try:
        only = only_experiment(uri, option="--experiment")
    except UsageError:
        return None  # several: the link opens the experiment list
    exp = client.get_experiment_by_name(only)
    return exp.experiment_id, exp.name


def port_free(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class UiServer:
    """A running ``mlflow server`` process (or None for a tracking server that is the UI)."""

    url: str
    link: str
    process: subprocess.Popen | None

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(5)


def start_ui(uri: str, *, experiment: str | None = None, port: int | None = None,
             say: Callable[[str], None] | None = None) -> UiServer:
    """Start the UI for tracking store ``uri`` and wait until it answers; returns where.

    Raises UsageError for a store that does not exist, an unknown experiment, or a port in use;
    HarnessError when the server does not come up (its last output is in the message).
    """
    db = sqlite_path(uri)
    if uri.startswith(("http://", "https://")):
        found = pick_experiment(uri, experiment)
        return UiServer(uri, experiment_link(uri, found[0] if found else None), None)
    if db is None:
        raise UsageError(f"--tracking-uri {uri}: `autoresearch ui` serves a local sqlite:/// store or links to "
                         "an http(s) tracking server")
    if not db.is_file():
        raise UsageError(f"there is no tracking store at {uri}: run `autoresearch run` first, or pass "
                         "--tracking-uri")
    found = pick_experiment(uri, experiment)
    if port is None:
        port = free_port()
    elif not port_free(port):
        raise UsageError(f"--port {port}: already in use on {HOST}; pick another or leave --port out for a free one")
    url = f"http://{HOST}:{port}"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", HOST,
           "--port", str(port), "--workers", "1"]
    if say:
        say(f"ui: starting mlflow server on {url} for {uri}")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    server = UiServer(url, experiment_link(url, found[0] if found else None), proc)
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (proc.stderr.read() if proc.stderr else "")[-1500:]
            raise HarnessError(f"mlflow server exited with code {proc.returncode} before answering:\n{tail}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return server
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    server.stop()
    raise HarnessError(f"mlflow server did not answer on {url} within {START_SECONDS:.0f} s")


def serve(uri: str, *, experiment: str | None, port: int | None, say: Callable[[str], None],
          show: Callable[[str], None]) -> None:
    """Start the UI, show its link, and keep it running until interrupted (Ctrl-C or SIGTERM)."""
    server = start_ui(uri, experiment=experiment, port=port, say=say)
    show(server.link)
    if server.process is None:
        say(f"ui: {uri} is a tracking server: it serves the UI itself")
        return
    say("ui: Ctrl-C stops it")
    old = signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        if server.process.stderr is not None:
            for _ in server.process.stderr:  # drain, so the server never blocks on a full pipe
                pass
        server.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        signal.signal(signal.SIGTERM, old)
