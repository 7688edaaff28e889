"""Shared pieces of the benchmarks: the machine, timing, a no-op recipe, an instant specialist, a big lineage.

Nothing here is a mock of the product: the recipes are real recipes run by
the real evaluator, the stores are real MLflow stores.  The only stand-in is
the model (the specialist), which the benchmarks must control: instant, or a
fixed sleep.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as _dt
import itertools
import os
import platform
import random
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # bench.* and tests.servers import from the repository root

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

Log = Callable[[str], None]

# ----- the machine --------------------------------------------------------------------------


def _cmd(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=10, cwd=ROOT).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def machine() -> dict[str, str]:
    """What ran the benchmarks: cores, memory, CPU model, load, date, git commit."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor()
    free = _cmd(["free", "-g"]).splitlines()
    mem = next((ln.split()[1] for ln in free if ln.startswith("Mem:")), "?")
    dirty = bool(_cmd(["git", "status", "--porcelain", "--untracked-files=no"]))
    return {
        "nproc": _cmd(["nproc"]) or str(os.cpu_count()),
        "memory_gib": mem,
        "cpu": cpu or "?",
        "python": platform.python_version(),
        "date": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "commit": (_cmd(["git", "rev-parse", "--short", "HEAD"]) or "?") + (" (+ uncommitted changes)" if dirty else ""),
        "load": " / ".join(f"{x:.1f}" for x in os.getloadavg()),
    }


# ----- timing -------------------------------------------------------------------------------


def median(xs: Iterable[float]) -> float:
    xs = list(xs)
    return statistics.median(xs) if xs else float("nan")


class Timer:
    """Accumulates wall seconds of calls, thread-safe: ``with timer: ...`` or :meth:`wrap`."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._lock = threading.Lock()

    def add(self, seconds: float) -> None:
        with self._lock:
            self.seconds.append(seconds)

    def wrap(self, fn):
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(time.perf_counter() - t0)

        timed.__wrapped__ = fn
        return timed

    @property
    def total(self) -> float:
        return sum(self.seconds)

    @property
    def count(self) -> int:
        return len(self.seconds)


# ----- a no-op recipe -----------------------------------------------------------------------

NOOP_TRAIN = """\
import time
VARIANT = 0  # changed by every proposal, so that each trial's code is new
SLEEP = {sleep!r}  # seconds of fake training
if SLEEP:
    time.sleep(SLEEP)
print("accuracy: 0.9")
"""


def noop_recipe(folder: Path, sleep: float = 0.0, name: str = "bench-noop") -> Path:
    """A recipe whose training does nothing (or sleeps ``sleep`` s): the score is the evaluator's clock.

    No torch, no data: what is left of a trial is the harness.
    """
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.py").write_text(NOOP_TRAIN.format(sleep=float(sleep)))
    spec = {
        "name": name, "editable": ["train.py"], "command": "python train.py",
        "metric": {"name": "train_seconds", "goal": "minimize"},
        "gates": [{"metric": "accuracy", "op": ">=", "value": 0.85}],
        "limits": {"train_seconds": max(30.0, 10 * sleep), "grace_seconds": 1},
        "seeds": 1, "specialists": ["architecture", "optimization", "data", "systems"],
    }
    (folder / "recipe.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return folder


_VARIANT = re.compile(rb"^VARIANT = \d+", re.M)


class InstantSpecialist:
    """The model, reduced to its latency: renders the lineage views a model would read, sleeps
    ``latency`` seconds, and changes ``VARIANT`` so the code is new.  Thread-safe."""

    backend = "bench"

    def __init__(self, latency: float = 0.0) -> None:
        self.latency = latency
        self._n = itertools.count(random.randrange(10**9))
        self.render = Timer()

    def propose(self, ctx):
        from mlflow_autoresearch.specialists import Edit, Proposal

        t0 = time.perf_counter()
        ctx.lineage.render(ctx.role.name)  # the views every specialist reads
        self.render.add(time.perf_counter() - t0)
        if self.latency:
            time.sleep(self.latency)
        n = next(self._n)
        old = ctx.parent_files["train.py"]
        match = _VARIANT.search(old)
        new = _VARIANT.sub(f"VARIANT = {n}".encode(), old, count=1)
        files = {**ctx.parent_files, "train.py": new}
        edit = Edit("train.py", match.group(0).decode() if match else "", f"VARIANT = {n}")
        return Proposal(specialist=ctx.role.name, hypothesis=f"variant {n}", files=files, edits=(edit,),
                        backend=self.backend)


# ----- a big lineage, fast ------------------------------------------------------------------


def populate_lineage(store, db: Path, n: int, artifact_root: Path | None, recipe_dir: Path) -> float:
    """Fill ``store``'s experiment with ``n`` finished trials, straight into the SQLite file ``db``.

    Rows come from :func:`bench.lineage_views.populate` (the lineage-views
    benchmark's generator); then every trial gets a ``code/train.py`` artifact
    (the no-op recipe's, so that the policy may pick any of them as a parent).
    Where the artifact goes: a local store's runs are moved to the
    experiment's own artifact location and the files written there; behind a
    server, into ``artifact_root`` (its ``--artifacts-destination``) when
    given, else uploaded through the server (slow: for small lineages).
    Returns the seconds it took.
    """
    from bench.lineage_views import populate
    from mlflow_autoresearch import schema as S

    t0 = time.perf_counter()
    exp = store.experiment_id
    populate(db, exp, store._ledger(), n)
    con = sqlite3.connect(db, timeout=60)
    with con:
        ids = [r[0] for r in con.execute(
            "SELECT r.run_uuid FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
            "WHERE r.experiment_id = ? AND t.key = ? AND t.value = 'trial'", (int(exp), S.KIND))]
        folder: Path | None = artifact_root / exp if artifact_root is not None else None
        if store.tracking_uri.startswith("sqlite:"):
            location = store.client.get_experiment(exp).artifact_location
            base = location[len("file://"):] if location.startswith("file://") else location
            con.executemany("UPDATE runs SET artifact_uri = ? WHERE run_uuid = ?",
                            [(f"{base}/{rid}/artifacts", rid) for rid in ids])
            folder = Path(base)
    con.close()
    code = recipe_dir / "train.py"
    for rid in ids:
        if folder is None:
            store.client.log_artifact(rid, str(code), S.CODE_DIR)
            continue
        d = folder / rid / "artifacts" / S.CODE_DIR
        d.mkdir(parents=True, exist_ok=True)
        (d / "train.py").write_bytes(code.read_bytes())
    return time.perf_counter() - t0


@contextlib.contextmanager
def in_folder(folder: Path):
    """Run with ``folder`` as the working folder (where a local store's ``./mlruns`` goes)."""
    folder.mkdir(parents=True, exist_ok=True)
    old = os.getcwd()
    os.chdir(folder)
    try:
        yield folder
    finally:
        os.chdir(old)


_TEMPLATE: list[Path] = []


def sqlite_store(folder: Path) -> tuple[str, Path]:
    """A fresh local SQLite tracking store in ``folder``: (tracking URI, database file).

    Copied from a migrated empty database made once per process (migrating
    takes 10-25 s on a busy 2-core machine).  MLflow puts a local store's
    artifacts under ``./mlruns`` of the working folder at the time an
    experiment is created: benchmarks run with their work folder as cwd.
    """
    if not _TEMPLATE or not _TEMPLATE[0].exists():
        from tests.servers import migrated_db

        folder_ = Path(tempfile.mkdtemp(prefix="bench-template-"))
        atexit.register(shutil.rmtree, folder_, True)
        _TEMPLATE[:] = [migrated_db(folder_ / "mlflow.db")]
    folder.mkdir(parents=True, exist_ok=True)
    db = folder / "mlflow.db"
    shutil.copyfile(_TEMPLATE[0], db)
    return f"sqlite:///{db}", db


def start_server(root: Path, log: Log):
    """``mlflow server --workers 1`` on 127.0.0.1 (tests/servers.py), artifacts under ``root/artifacts``."""
    from tests.servers import MlflowServer

    t0 = time.perf_counter()
    server = MlflowServer(root).start(timeout=180)
    log(f"mlflow server --workers 1 on {server.url} started in {time.perf_counter() - t0:.1f} s")
    return server


def fmt(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and x != x):
        return "—"
    return f"{x:.{digits}g}" if abs(x) < 1000 else f"{x:,.0f}"


KNOB_TRAIN = """\
import math

EPOCHS = 20  # passes over the training set
LR = 0.02  # peak learning rate
WARMUP_FRAC = 0.0  # share of steps with a linear warmup
BATCH_SIZE = 32  # examples per optimizer step

# A made-up response surface, instant to compute: the loss falls with more steps at a good learning rate.
steps = EPOCHS * 1797 // BATCH_SIZE
loss = 1.0 / (1 + steps * min(LR, 0.1) * (1 - 0.5 * WARMUP_FRAC) / 50) + abs(math.log10(LR / 0.05)) * 0.05
print(f"loss: {loss:.6f}")
print(f"accuracy: {1 - loss / 2:.6f}")
"""


def knob_recipe(folder: Path) -> Path:
    """A toy recipe with the digits recipe's knobs and an instant, deterministic score (tiny mode)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.py").write_text(KNOB_TRAIN)
    spec = {
        "name": "bench-knobs", "editable": ["train.py"], "command": "python train.py",
        "metric": {"name": "loss", "goal": "minimize"},
        "gates": [{"metric": "accuracy", "op": ">=", "value": 0.5}],
        "limits": {"train_seconds": 30, "grace_seconds": 1}, "seeds": 1,
        "specialists": ["architecture", "optimization", "data", "systems"],
        "knobs": [{"name": "LR", "low": 0.002, "high": 0.5, "log": True},
                  {"name": "WARMUP_FRAC", "low": 0.0, "high": 0.3},
                  {"name": "EPOCHS", "low": 2, "high": 80, "integer": True}],
    }
    (folder / "recipe.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return folder
