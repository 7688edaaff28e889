"""Where studies live, and how a study recovers points that a dead process left behind.

A study lives in an Optuna RDB storage beside the tracking store: for
``sqlite:///dir/mlflow.db`` it is ``sqlite:///dir/optuna.db``; for any other
tracking store (a team's server) the URL comes from ``--storage`` or
``AUTORESEARCH_SWEEP_STORAGE`` (e.g. ``postgresql://...``), falling back to
``./optuna.db`` with a warning.  Optuna and MLflow both keep an
``alembic_version`` table, so they never share one database.

Recovery.  A point is RUNNING in the storage while a process evaluates it.
If that process dies (SIGKILL, a lost machine) the point must be neither lost
nor counted: it is marked FAIL and its exact parameters are queued again, so
the next run of the same command evaluates them first.  A dead process is
recognised two ways: on the same machine (hostname and kernel boot id) by its
pid and start time, at once; elsewhere by Optuna's heartbeat going stale.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow_autoresearch._errors import UsageError

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

logger = logging.getLogger(__name__)

STORAGE_ENV = "AUTORESEARCH_SWEEP_STORAGE"
STORAGE_FILE = "optuna.db"
HEARTBEAT_SECONDS = 30
GRACE_SECONDS = 120  # a point elsewhere whose heartbeat is older than this is taken as dead
# What a process sees when another one creates the same new database's tables at the same moment.
_CREATE_RACE = ("already exists", "UNIQUE constraint failed", "duplicate key", "database is locked")
MAX_RETRIES = 2  # a point that kills its process every time is given up after this many retries

OWNER = "owner"
RETRY_OF = "retry_of"
RETRIES = "retries"


def default_storage(tracking_uri: str) -> str | None:
    """The storage beside a local tracking store, or None when there is no local one."""
    for prefix in ("sqlite:///", "file://"):
        if tracking_uri.startswith(prefix):
            rest = tracking_uri[len(prefix):].split("?", 1)[0]
            if not rest or rest == ":memory:":
                return None
            return f"sqlite:///{(Path(rest).resolve().parent / STORAGE_FILE).as_posix()}"
    if "://" not in tracking_uri:  # a plain folder: the retired file store
        return f"sqlite:///{(Path(tracking_uri).resolve().parent / STORAGE_FILE).as_posix()}"
    return None


def resolve_storage(explicit: str | None, tracking_uri: str) -> str:
    """The flag, then ``$AUTORESEARCH_SWEEP_STORAGE``, then beside the tracking store."""
    url = explicit or os.environ.get(STORAGE_ENV) or default_storage(tracking_uri)
    if url is None:
        url = f"sqlite:///{(Path.cwd() / STORAGE_FILE).as_posix()}"
        logger.warning("the tracking store %s is not local: sweeps are stored in %s. Set --storage or %s to a "
                       "database URL the team shares.", tracking_uri, url, STORAGE_ENV)
    if "://" not in url:
        raise UsageError(f"--storage {url!r}: not a database URL (e.g. sqlite:///optuna.db, postgresql://host/db)")
    return url


def masked(url: str) -> str:
    """The URL with any password hidden, for messages and tags."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not parseable: show the scheme only
        return url.split("://", 1)[0] + "://…"


def open_storage(url: str, on_stale: Callable[[optuna.Study, FrozenTrial], None]) -> optuna.storages.RDBStorage:
    """An RDB storage with heartbeats; ``on_stale`` runs for each point found dead by heartbeat.

    Raises:
        UsageError: the URL cannot be opened.
    """
    import optuna

    kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    for attempt in range(5):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=HEARTBEAT_SECONDS,
                                                  grace_period=GRACE_SECONDS,
                                                  heartbeat_stale_trial_callback=on_stale)
        except Exception as e:  # sqlalchemy's errors: bad URL, missing driver, unreachable server
            # Two processes opening a new database race to create its tables: the loser retries.
            if any(w in str(e) for w in _CREATE_RACE) and attempt < 4:
                time.sleep(0.5 * (attempt + 1))
                continue
            raise UsageError(f"cannot open the sweep storage {masked(url)}: {type(e).__name__}: {e}") from None
    raise AssertionError("unreachable")


# ----- who runs a point ------------------------------------------------------
def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _stat(pid: int) -> list[str]:
    """Fields of /proc/<pid>/stat after the command name (state first), [] where unknown."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
    except OSError:
        return []


def _start_ticks(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux), '' where unknown."""
    fields = _stat(pid)
    return fields[19] if len(fields) > 19 else ""


def owner() -> dict[str, Any]:
    """This process, as recorded on the points it evaluates."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "boot": _boot_id(), "pid": pid, "start": _start_ticks(pid)}


def dead_here(who: Any) -> bool:
    """True when ``who`` was a process on this machine that no longer runs."""
    if not isinstance(who, dict) or who.get("host") != socket.gethostname() or who.get("boot") != _boot_id():
        return False
    pid = who.get("pid")
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, another user's
    fields = _stat(pid)
    if fields and fields[0] in ("Z", "X"):  # killed, not yet reaped by its parent
        return True
    return bool(who.get("start")) and _start_ticks(pid) != who.get("start")  # the pid was reused


# ----- recovery ----------------------------------------------------------------
def fail_dead_points(study: optuna.Study, on_dead: Callable[[optuna.Study, FrozenTrial], None]) -> int:
    """Mark RUNNING points whose process died on this machine FAIL; returns how many."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    storage = study._storage
    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not dead_here(t.user_attrs.get(OWNER)):
            continue
        try:
            if not storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
                continue
        except UpdateFinishedTrialError:
            continue  # another process got there first
        logger.info("point %d was left running by a process that died; it will be evaluated again", t.number)
        on_dead(study, storage.get_trial(t._trial_id))
        n += 1
    return n


def requeue_failed(study: optuna.Study) -> int:
    """Queue again the parameters of every FAIL point not yet retried; returns how many."""
    import optuna
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get(RETRY_OF) for t in trials}
    n = 0
    for t in trials:
        if t.state is not TrialState.FAIL or t.number in retried or not t.params:
            continue
        tries = int(t.user_attrs.get(RETRIES, 0)) + 1
        if tries > MAX_RETRIES:
            logger.warning("point %d failed %d times; not retried again", t.number, tries)
            continue
        study.add_trial(optuna.trial.create_trial(
            state=TrialState.WAITING, params=t.params, distributions=t.distributions,
            user_attrs={RETRY_OF: t.number, RETRIES: tries},
        ))
        n += 1
    return n
