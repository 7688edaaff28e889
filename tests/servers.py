"""Real servers for tests: ``mlflow server --workers 1`` on 127.0.0.1, a local ``moto_server`` for S3.

Each server is a child process in its own session (so a kill reaches its
workers), bound to a free loopback port, with its files in a folder of its own.
Starting an MLflow server takes about 8 s on 2 cores: the fixtures in
``tests/conftest.py`` share one per session; tests isolate themselves by
experiment name (:func:`unique_name`).

Nothing here is a mock: the MLflow server is the one a team would run, with a
SQLite backend, optionally artifacts proxied to ``s3://`` on moto, optionally
MLflow's basic-auth app with real users.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import requests

ADMIN = ("admin", "admin-password-1234")
WRITER = ("writer", "writer-password-1234")
READER = ("reader", "reader-password-1234")
# Dummy keys: moto accepts any; they live only in the server's environment (and boto3 calls in tests).
AWS_DUMMY = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unique_name(prefix: str = "exp") -> str:
    """An experiment name no other test uses (servers are shared)."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def migrated_db(path: Path) -> Path:
    """An empty MLflow SQLite database with every migration applied: a template servers copy.

    Migrating takes most of a server's first start (about 15 s of 24 s on a busy 2-core
    machine); a session migrates once and each server starts from a copy.
    """
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    path.parent.mkdir(parents=True, exist_ok=True)
    store = SqlAlchemyStore(f"sqlite:///{path}", str(path.parent / "unused-artifacts"))
    store.engine.dispose()
    return path


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def _stop(proc: subprocess.Popen | None, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    """Signal the process group; SIGKILL whatever is left after ``timeout``."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(5)


@dataclass
class MotoServer:
    """``moto_server`` on a free loopback port, with one bucket."""

    root: Path
    bucket: str = "autoresearch-artifacts"
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> MotoServer:
        self.root.mkdir(parents=True, exist_ok=True)
        log = self.root / "moto.log"
        with open(log, "ab") as out:
            self.proc = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
                                         stdout=out, stderr=subprocess.STDOUT, cwd=self.root,
                                         env={**os.environ, **AWS_DUMMY}, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto_server exited with {self.proc.returncode}:\n{_tail(log)}")
            try:
                requests.get(self.endpoint, timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.2)
        else:
            self.stop()
            raise RuntimeError(f"moto_server did not answer within {timeout} s:\n{_tail(log)}")
        self.s3().create_bucket(Bucket=self.bucket)
        return self

    def s3(self):
        """A boto3 S3 client for the bucket (dummy keys passed explicitly, not through the environment)."""
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def keys(self, prefix: str = "") -> list[str]:
        out, token = [], None
        while True:
            kw = {"Bucket": self.bucket, "Prefix": prefix, **({"ContinuationToken": token} if token else {})}
            page = self.s3().list_objects_v2(**kw)
            out += [o["Key"] for o in page.get("Contents", [])]
            token = page.get("NextContinuationToken")
            if not token:
                return out

    def stop(self) -> None:
        _stop(self.proc)


@dataclass
class MlflowServer:
    """``mlflow server --workers 1`` with a SQLite backend on 127.0.0.1.

    ``s3``: proxy artifacts to ``s3://<bucket>/`` on that moto server.
    ``auth``: MLflow's basic-auth app; the admin is :data:`ADMIN`, and
    :meth:`start` creates the users :data:`WRITER` and :data:`READER`
    (the reader keeps the default READ permission).
    The database and the port survive :meth:`kill` and :meth:`restart`.
    """

    root: Path
    s3: MotoServer | None = None
    auth: bool = False
    template: Path | None = None  # a migrated database to start from (see migrated_db)
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def db(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    def command(self) -> list[str]:
        dest = f"s3://{self.s3.bucket}/" if self.s3 else str(self.root / "artifacts")
        cmd = [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
               "--backend-store-uri", f"sqlite:///{self.db}", "--artifacts-destination", dest]
        if self.auth:
            cmd += ["--app-name", "basic-auth"]
        return cmd

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_TRACKING_", "AWS_"))}
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
        if self.s3:
            env.update(AWS_DUMMY, MLFLOW_S3_ENDPOINT_URL=self.s3.endpoint)
        if self.auth:
            ini = self.root / "basic_auth.ini"
            ini.write_text("[mlflow]\ndefault_permission = READ\n"
                           f"database_uri = sqlite:///{self.root / 'auth.db'}\n"
                           f"admin_username = {ADMIN[0]}\n"
                           "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
                           # Without the cache every request re-hashes the password (PBKDF2): 1-2 s each here.
                           "auth_cache_ttl_seconds = 60\n")
            env.update(MLFLOW_AUTH_CONFIG_PATH=str(ini), MLFLOW_AUTH_ADMIN_PASSWORD=ADMIN[1],
                       MLFLOW_FLASK_SERVER_SECRET_KEY="test-secret-key-not-for-production")
        return env

    def start(self, timeout: float = 90.0) -> MlflowServer:
        self.root.mkdir(parents=True, exist_ok=True)
        if self.template is not None and not self.db.exists():
            shutil.copyfile(self.template, self.db)
        with open(self.log, "ab") as out:
            out.write(f"\n=== start {self.starts} ===\n".encode())
            out.flush()
            self.proc = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT, cwd=self.root,
                                         env=self.env(), start_new_session=True)
        self.starts += 1
        self.wait_healthy(timeout)
        if self.auth and self.starts == 1:
            for user, password in (WRITER, READER):
                self.admin_post("/api/2.0/mlflow/users/create", {"username": user, "password": password})
        return self

    def wait_healthy(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {self.proc.returncode}:\n{_tail(self.log)}")
            try:
                if requests.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"mlflow server not healthy within {timeout} s:\n{_tail(self.log)}")

    def healthy(self) -> bool:
        try:
            return requests.get(self.url + "/health", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def admin_post(self, path: str, body: dict) -> dict:
        r = requests.post(self.url + path, json=body, auth=ADMIN, timeout=30)
        r.raise_for_status()
        return r.json() if r.content else {}

    def kill(self) -> None:
        """SIGKILL the server and its workers, as a crash would."""
        _stop(self.proc, signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM: uvicorn shuts down in about a second; the ``mlflow`` CLI parent lingers for
        seconds more doing nothing useful, so whatever is left after 3 s is killed."""
        _stop(self.proc, timeout=3.0)

    def restart(self, down_seconds: float = 0.0) -> None:
        """Kill, stay down ``down_seconds``, start again on the same port and database."""
        self.kill()
        time.sleep(down_seconds)
        self.start()


class LossyProxy:
    """An HTTP proxy in front of a server that loses chosen answers.

    For each request, ``drop(method, path, seen)`` (``seen``: how many requests
    with that method and path came before) decides; the proxy always forwards
    the request and lets the server do the work, then:

    - falsy: relays the answer;
    - ``True`` or ``"lose"``: closes the client's connection without an answer
      (a crash between the database commit and the response);
    - ``"truncate"``: sends the status and headers, then closes before the body
      (a crash while answering: the client reads ``IncompleteRead``).

    ``dropped`` lists what it lost, as ``(method, path)``.
    """

    def __init__(self, upstream: str, drop) -> None:
        import http.client
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import urlsplit

        up = urlsplit(upstream)
        self.dropped: list[tuple[str, str]] = []
        counts: dict[tuple[str, str], int] = {}
        lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    data = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0], 16)
                        if size == 0:
                            self.rfile.readline()
                            return data
                        data += self.rfile.read(size)
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _forward(self) -> None:
                body = self._body()
                path = self.path.split("?")[0]
                with lock:
                    seen = counts.get((self.command, path), 0)
                    counts[(self.command, path)] = seen + 1
                    lose = drop(self.command, path, seen)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "transfer-encoding", "connection", "content-length")}
                conn = http.client.HTTPConnection(up.hostname, up.port, timeout=120)
                conn.request(self.command, self.path, body=body or None, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                if lose:
                    with lock:
                        proxy.dropped.append((self.command, path))
                    self.close_connection = True
                    if lose != "truncate":
                        return
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length", "date", "server"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if lose == "truncate":
                    self.wfile.write(data[: len(data) // 2])
                    return
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _forward

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
