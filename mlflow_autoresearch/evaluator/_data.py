"""What each step of a trial may read of the recipe's data (``recipe.yaml``'s ``data``).

Training sees only the ``train`` paths of the dataset cache; the ``eval`` paths
(and ``pkg:`` files inside installed packages) are made empty for it.  The
protected evaluation step sees both.  ``local`` folders of the recipe folder
are bound read-only into every step's working folder.  Without a ``data``
section, the whole cache is visible read-only (unsealed, as before).
"""

from __future__ import annotations

import fcntl
import importlib.util
import logging
import os
import subprocess
from pathlib import Path

from mlflow_autoresearch._errors import HarnessError
from mlflow_autoresearch.evaluator._sandbox import (
    DEFAULT_DATA_DIR,
    View,
    command_argv,
    data_dirs,
    scrubbed_env,
)
from mlflow_autoresearch.recipe import PKG_PREFIX, Recipe

logger = logging.getLogger(__name__)

FINGERPRINT_ENTRIES = 20_000


def cache_root() -> Path:
    """The dataset cache the recipe's paths are relative to."""
    return Path(os.environ.get("AUTORESEARCH_DATA_DIR") or DEFAULT_DATA_DIR)


def package_file(entry: str) -> str | None:
    """The real path of a ``pkg:<package>/<path>`` entry in this interpreter, or None if it is not installed."""
    rel = entry[len(PKG_PREFIX):]
    top, _, rest = rel.partition("/")
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    locations = list(spec.submodule_search_locations or []) if spec else []
    for loc in locations:
        p = os.path.join(loc, rest)
        if os.path.lexists(p):
            return os.path.realpath(p)
    return None


def _cache_path(rel: str) -> str:
    return os.path.join(os.path.realpath(cache_root()), rel)


def _sealed(recipe: Recipe) -> list[str]:
    """Every path training must find empty: eval paths under each cache folder, and package files."""
    out = []
    for entry in recipe.data.eval:
        if entry.startswith(PKG_PREFIX):
            p = package_file(entry)
            if p:
                out.append(p)
        else:
            for root in {os.path.realpath(cache_root()), *data_dirs()}:
                out.append(os.path.join(root, entry))
    return out


def _local(recipe: Recipe, workdir: Path) -> list[tuple[str, str]]:
    return [(str(recipe.root / rel), str(workdir / rel)) for rel in recipe.data.local]


def training_view(recipe: Recipe, workdir: Path) -> View:
    """What training (and the preflight) sees: its ``train`` data only, evaluation data sealed."""
    if not (recipe.data.train or recipe.data.eval):
        return View(binds_ro=tuple(data_dirs()), masks=tuple(_sealed(recipe)),
                    local_binds=tuple(_local(recipe, workdir)))
    binds = [(_cache_path(rel), _cache_path(rel)) for rel in recipe.data.train if os.path.exists(_cache_path(rel))]
    return View(covers=tuple(data_dirs()), masks=tuple(_sealed(recipe)),
                local_binds=tuple(binds + _local(recipe, workdir)))


def evaluation_view(recipe: Recipe, workdir: Path) -> View:
    """What the protected evaluation sees: its train and eval data, read-only."""
    if not (recipe.data.train or recipe.data.eval):
        return View(binds_ro=tuple(data_dirs()), local_binds=tuple(_local(recipe, workdir)))
    rels = [*recipe.data.train, *(e for e in recipe.data.eval if not e.startswith(PKG_PREFIX))]
    binds = [(_cache_path(rel), _cache_path(rel)) for rel in rels if os.path.exists(_cache_path(rel))]
    return View(covers=tuple(data_dirs()), local_binds=tuple(binds + _local(recipe, workdir)))


def unsealed(recipe: Recipe) -> bool:
    """True when the recipe declares no data: every step sees the whole cache."""
    return not (recipe.data.train or recipe.data.eval)


def missing(recipe: Recipe) -> list[str]:
    return [rel for rel in (*recipe.data.train, *recipe.data.eval)
            if not rel.startswith(PKG_PREFIX) and not os.path.exists(_cache_path(rel))]


def ensure_prepared(recipe: Recipe) -> None:
    """Run the recipe's ``data.prepare`` once when a declared path is missing (under a lock).

    The command is the recipe's own trusted code: it runs in the recipe
    folder as the evaluator's user, outside the sandbox, with the cache
    writable, a scrubbed environment and ``limits.prepare_seconds``.

    Raises:
        HarnessError: the command failed, or a declared path is still missing.
    """
    if not missing(recipe):
        return
    root = cache_root()
    if recipe.data.prepare is None:
        raise HarnessError(f"the recipe's data is missing from {root}: {', '.join(missing(recipe))} "
                           "(download it first; the recipe has no data.prepare command)")
    root.mkdir(parents=True, exist_ok=True)
    try:
        os.chmod(root, 0o755)
    except OSError:
        pass
    with open(root / f".prepare-{recipe.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not missing(recipe):
            return
        logger.info("preparing the data of %s: %s", recipe.name, recipe.data.prepare)
        env = scrubbed_env(recipe.root, {"AUTORESEARCH_DATA_DIR": str(root)})
        env["HOME"] = os.environ.get("HOME", str(recipe.root))
        env.pop("TMPDIR", None)
        try:
            r = subprocess.run(command_argv(recipe.data.prepare), cwd=recipe.root, env=env, capture_output=True,
                               timeout=recipe.limits.prepare_seconds)
        except subprocess.TimeoutExpired:
            raise HarnessError(f"data.prepare `{recipe.data.prepare}` ran past {recipe.limits.prepare_seconds:g} s") from None
        except OSError as e:
            raise HarnessError(f"data.prepare `{recipe.data.prepare}` could not start: {e}") from None
        if r.returncode != 0:
            tail = r.stderr.decode(errors="replace").strip().splitlines()[-5:]
            raise HarnessError(f"data.prepare `{recipe.data.prepare}` failed (exit {r.returncode}): "
                               + " | ".join(tail))
    still = missing(recipe)
    if still:
        raise HarnessError(f"data.prepare `{recipe.data.prepare}` ran, but {', '.join(still)} is still missing "
                           f"from {root}")


def fingerprint(recipe: Recipe) -> dict[str, tuple]:
    """(size, mtime, inode) of every declared data file and ``local`` folder file: what a tamper check compares.

    Cheap (no hashing of gigabytes); bounded to FINGERPRINT_ENTRIES entries.
    """
    roots = [_cache_path(rel) for rel in (*recipe.data.train, *recipe.data.eval) if not rel.startswith(PKG_PREFIX)]
    roots += [str(recipe.root / rel) for rel in recipe.data.local]
    out: dict[str, tuple] = {}
    stack = list(roots)
    while stack and len(out) < FINGERPRINT_ENTRIES:
        p = stack.pop()
        try:
            st = os.lstat(p)
        except OSError:
            out[p] = ("missing",)
            continue
        out[p] = (st.st_mode, st.st_size, st.st_mtime_ns, st.st_ino)
        if os.path.isdir(p) and not os.path.islink(p):
            try:
                stack.extend(os.path.join(p, n) for n in os.listdir(p))
            except OSError:
                pass
    return out
