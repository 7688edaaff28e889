"""``autoresearch doctor``: what a new machine, recipe or store gets wrong, said before any trial exists.

Each check returns a :class:`Check`: ``ok``, or a problem with its cause and
its fix on one line.  :func:`preflight` runs the cheap ones (a fraction of a
second, the sandboxed interpreter check included; it is cached, so the first
evaluation does not pay it again) at the start of ``run``, ``evaluate`` and
``init`` and raises :class:`DoctorError` (exit code 2) before the tracking
store is opened, so a failed check writes nothing.  ``autoresearch doctor``
runs them all and prints one line per check, the GPUs included (reported,
never a failure).

Nothing here contacts the model API or the tracking server: credentials are
checked for presence only (the loop's ``check_backend`` makes the one real
request later).
"""

from __future__ import annotations

import difflib
import logging
import os
import shlex
import shutil
import sqlite3
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import click

from mlflow_autoresearch._errors import HarnessError, UsageError
from mlflow_autoresearch.recipe import IGNORE_FILE, Recipe, ignore_patterns, in_snapshot, is_ignored

logger = logging.getLogger(__name__)

MIN_FREE_BYTES = 512 * 1024**2  # below this, trials and the store fail in confusing ways
PYTHONS = ("python", "python3")


@dataclass(frozen=True)
class Check:
    """One check's verdict.  ``fix`` is set exactly when ``ok`` is False; ``fatal`` problems stop a command."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    fatal: bool = True

    def line(self) -> str:
        if self.ok:
            return f"ok       {self.name}: {self.detail}"
        word = "problem " if self.fatal else "warning "
        return f"{word} {self.name}: {self.detail}. Fix: {self.fix}"


class DoctorError(UsageError):
    """A setup problem found before any trial ran (exit code 2); the message is one line per problem."""


# ----- the checks ------------------------------------------------------------

def check_interpreter() -> Check:
    """The trial uid can start this interpreter inside the sandbox (the evaluator's own check, cached)."""
    from mlflow_autoresearch.evaluator import check_trial_interpreter, sandbox_level

    try:
        check_trial_interpreter()
    except HarnessError as e:
        msg = str(e)
        cause, _, fix = msg.partition(" Fix: ") if " Fix: " in msg else msg.partition("; ")
        return Check("interpreter", False, cause.rstrip("."), fix or "see docs/security.md")
    return Check("interpreter", True, f"{sys.executable} runs inside the sandbox ({sandbox_level()})")


def _trial_path() -> str:
    """The PATH a trial gets (see ``_sandbox.scrubbed_env``)."""
    return f"{Path(sys.executable).parent}:{os.environ.get('PATH') or '/usr/local/bin:/usr/bin:/bin'}"


def _hidden_from_trials(path: str) -> str | None:
    """The folder that hides ``path`` from a trial (a hidden home, a private tmp), unless it is bound back in."""
    from mlflow_autoresearch.evaluator._sandbox import hidden_homes, interpreter_paths
    from mlflow_autoresearch.evaluator._supervisor import PRIVATE_TMP

    real = os.path.realpath(path)

    def under(folder: str) -> bool:
        return (real + "/").startswith(os.path.realpath(folder).rstrip("/") + "/")

    if any(under(p) for p in interpreter_paths()):
        return None
    # Both modes cover the homes and make the tmp folders private (where the kernel gives a mount namespace).
    return next((h for h in (*hidden_homes(), *PRIVATE_TMP) if under(h)), None)


def check_commands(recipe: Recipe) -> list[Check]:
    """Every command of the recipe starts a program a trial can see, and a script of the recipe."""
    checks = []
    files = set(recipe.snapshot_files())
    for field in ("command", "preflight", "evaluate"):
        command = getattr(recipe, field)
        if not command:
            continue
        problem = _command_problem(command, recipe, files, field)
        name = f"recipe {field}"
        checks.append(Check(name, False, *problem) if problem else Check(name, True, f"`{command}`"))
    return checks


def _command_problem(command: str, recipe: Recipe, files: set[str], field: str) -> tuple[str, str] | None:
    where = f"{recipe.yaml_path} field '{field}'"
    try:
        argv = shlex.split(command)
    except ValueError as e:
        return f"`{command}` cannot be split into words ({e})", f"fix the quoting in {where}"
    if not argv:
        return "the command is empty", f"set {where}"
    prog = argv[0]
    if prog in PYTHONS:
        script = next((a for a in argv[1:] if not a.startswith("-")), None) if "-m" not in argv[1:2] else None
        if script and script.endswith(".py") and not os.path.isabs(script):
            rel = PurePosixPath(script).as_posix()
            if rel not in files:
                near = difflib.get_close_matches(rel, sorted(f for f in files if f.endswith(".py")), n=1)
                hint = f"did you mean {near[0]}? " if near else ""
                return (f"`{command}` runs {rel}, which is not a file of the recipe folder {recipe.root}",
                        f"{hint}correct {where}, or add {rel} to the recipe")
        return None
    found = prog if "/" in prog else shutil.which(prog, path=_trial_path())
    if "/" in prog and not os.path.isabs(prog):
        found = None if PurePosixPath(prog).as_posix() not in files else prog
        if found is None:
            return (f"`{command}` starts {prog}, which is not a file of the recipe folder",
                    f"correct {where} (`python` means this interpreter)")
        return None
    if found is None or not os.path.exists(found):
        return (f"`{command}` starts {prog}, which is not on the trials' PATH",
                f"use `python` (this interpreter, {sys.executable}) or a program under /usr or /opt in {where}")
    hidden = _hidden_from_trials(found)
    if hidden:
        return (f"`{command}` starts {found}, which lies under {hidden}, a folder trials never see",
                f"start it as `python` (this interpreter) in {where}, or install it under /usr or /opt")
    return None


def _hidden_paths_in_code(recipe: Recipe) -> list[tuple[str, str, str]]:
    """(file, path, hiding folder) for each existing absolute path written in the recipe's code that trials never see.

    Only the hidden homes count: a path under /tmp exists for a trial too (its private, writable /tmp).
    """
    import ast

    from mlflow_autoresearch._pysource import parse
    from mlflow_autoresearch.evaluator._sandbox import hidden_homes, interpreter_paths

    homes = [os.path.realpath(h) for h in hidden_homes()]
    bound = [os.path.realpath(p) for p in interpreter_paths()]
    found = []
    for rel in sorted(recipe.own_files()):
        if not rel.endswith(".py"):
            continue
        try:
            tree = parse((recipe.root / rel).read_bytes(), rel)
        except (OSError, SyntaxError, ValueError):
            continue  # the evaluator reports a broken file as the trial's outcome
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Constant) and isinstance(node.value, str) and 1 < len(node.value) < 1024
                    and node.value.startswith(("/", "~/")) and "\n" not in node.value):
                continue
            path = os.path.realpath(os.path.expanduser(node.value))
            home = next((h for h in homes if (path + "/").startswith(h + "/") and path != h), None)
            if home and os.path.exists(path) and not any((path + "/").startswith(b + "/") for b in bound):
                found.append((rel, node.value, home))
    return found


def check_data(recipe: Recipe) -> Check:
    """The data a recipe declares is there for trials (or its ``data.prepare`` will make it), and its code
    names no file that trials cannot see."""
    from mlflow_autoresearch.evaluator import _data

    hidden = _hidden_paths_in_code(recipe)
    if hidden:
        rel, path, home = hidden[0]
        return Check("recipe data", False, f"{rel} reads {path}, which lies under {home}: trials never see it",
                     f"move the data under $AUTORESEARCH_DATA_DIR (default {_data.cache_root()}, which trials read), "
                     "or into a data/ folder of the recipe declared as data.local, and read it from there")
    if not recipe.data.declared:
        return Check("recipe data", True, "none declared (trials see only the recipe's files)")
    missing = _data.missing(recipe)
    if missing and not recipe.data.prepare:
        return Check("recipe data", False, f"declared data missing: {', '.join(missing[:3])} "
                     f"(looked in {_data.cache_root()})",
                     f"put it there, set $AUTORESEARCH_DATA_DIR, or add data.prepare to {recipe.yaml_path}")
    # The cache is bound read-only into every trial wherever it lies (even under /tmp): nothing to check there.
    note = f"; missing, data.prepare will make it: {', '.join(missing[:3])}" if missing else ""
    return Check("recipe data", True, f"{_data.cache_root()}{note}")


def _store_paths(uri: str, experiment: str | None) -> tuple[Path | None, Path | None]:
    """(the local store file or folder, the artifact folder) of a tracking URI; None for a server."""
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///").split("?", 1)[0])
        artifacts = Path.cwd() / "mlruns"  # MLflow's default artifact root for a SQLite store
        if experiment and db.is_file():
            try:  # read-only: the doctor never creates or migrates a store
                with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
                    row = con.execute("SELECT artifact_location FROM experiments WHERE name = ?",
                                      (experiment,)).fetchone()
                if row and row[0] and str(row[0]).startswith(("/", "file:")):
                    artifacts = Path(str(row[0]).removeprefix("file://").removeprefix("file:"))
            except sqlite3.Error:
                pass
        return db, artifacts
    if uri.startswith("file:") or ("://" not in uri and not uri.startswith(("databricks", "uc:"))):
        folder = Path(uri.removeprefix("file://").removeprefix("file:"))
        return folder, folder
    return None, None


def _inside(path: Path, root: Path) -> str | None:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return None


def _would_be_trial_code(rel: str, root: Path, is_dir: bool) -> bool:
    """Whether a path of the recipe folder would count as the recipe's files (not ignored, not hidden)."""
    patterns = ignore_patterns(root)
    parts = PurePosixPath(rel).parts
    for i in range(1, len(parts)):
        if is_ignored("/".join(parts[:i]), True, patterns):
            return False
    return in_snapshot(rel + ("/x" if is_dir else "")) and not is_ignored(rel, is_dir, patterns)


def check_store(recipe_root: Path | None, uri: str, experiment: str | None) -> Check:
    """The tracking store and its artifacts are outside the recipe folder, or ignored by it."""
    store, artifacts = _store_paths(uri, experiment)
    if store is None:
        return Check("tracking store", True, f"{uri} (a server; not contacted here)")
    if recipe_root is not None:
        for path, what, is_dir in ((store, "tracking store", store == artifacts), (artifacts, "artifact folder", True)):
            rel = _inside(path, recipe_root) if path is not None else None
            if rel == ".":
                return Check("tracking store", False, f"the {what} {path} is the recipe folder itself",
                             "point --tracking-uri (or $MLFLOW_TRACKING_URI) at a place outside the recipe folder")
            seen = [rel] if is_dir else [rel, f"{rel}-journal"]  # SQLite writes its journal beside the file
            if rel and any(_would_be_trial_code(r, recipe_root, is_dir) for r in seen):
                entry = rel + ("/" if is_dir else "*")
                return Check("tracking store", False,
                             f"the {what} {path} lies in the recipe folder and is not ignored: every trial would "
                             "see it change and be a protected_violation",
                             f"--tracking-uri sqlite:///{recipe_root.resolve().parent / 'mlflow.db'} (outside it), "
                             f"or add `{entry}` to {recipe_root / IGNORE_FILE}")
    target = store if store.exists() else store.parent
    if store == artifacts:  # a file store: MLflow makes the folder and its parents
        while not target.exists() and target != target.parent:
            target = target.parent
    if not target.is_dir() and not target.is_file():
        return Check("tracking store", False, f"{target} does not exist", "create it or pick another --tracking-uri")
    if not os.access(target, os.W_OK):
        return Check("tracking store", False, f"{target} is not writable by you",
                     "fix its permissions or pick another --tracking-uri")
    inside = recipe_root is not None and any(_inside(p, recipe_root) for p in (store, artifacts) if p is not None)
    return Check("tracking store", True, f"{uri}, artifacts in {artifacts}"
                 + (" (inside the recipe folder, ignored by its ignore list)" if inside else ""))


def check_backend_credentials(agent: str | None, provider: str | None, base_url: str | None) -> Check:
    """When the Claude backend is chosen: its credentials are set (presence only; no request is made)."""
    from mlflow_autoresearch.specialists._providers import has_credentials
    from mlflow_autoresearch.specialists._registry import resolve_agent

    provider = provider or "auto"
    chosen = resolve_agent(agent or "auto", provider=provider, base_url=base_url)
    if chosen != "claude":
        return Check("model backend", True, f"{chosen} (no model API needed)" if chosen == "offline" else chosen)
    if not has_credentials(provider, base_url):
        return Check("model backend", False, "--agent claude, but no credentials are set (ANTHROPIC_API_KEY is "
                     "empty and no other provider is configured)",
                     "export ANTHROPIC_API_KEY=..., or pass --anthropic-base-url for a local server, or --agent "
                     "offline (see docs/claude.md)")
    via = base_url or os.environ.get("ANTHROPIC_BASE_URL") or provider
    return Check("model backend", True, f"claude via {via}: credentials set (not contacted here; the loop checks "
                 "the endpoint before the baseline)")


def check_disk(folders: Iterable[Path], need: int = MIN_FREE_BYTES) -> Check:
    """Free space where trials run (the temporary folder) and where the store writes."""
    worst: tuple[int, Path] | None = None
    for folder in folders:
        probe = folder
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        try:
            free = shutil.disk_usage(probe).free
        except OSError:
            continue
        if worst is None or free < worst[0]:
            worst = (free, probe)
    if worst is None:
        return Check("free disk", True, "not measurable here")
    free, where = worst
    if free < need:
        return Check("free disk", False, f"only {free / 1024**2:.0f} MiB free on {where}",
                     f"free at least {need / 1024**2:.0f} MiB there, or set TMPDIR to a larger disk")
    return Check("free disk", True, f"{free / 1024**3:.1f} GiB free on {where}")


def check_gpus(import_torch: bool) -> Check:
    """The GPUs trials would get (reported, never a failure)."""
    from mlflow_autoresearch.loop._slots import visible_gpus

    gpus = visible_gpus()
    detail = f"{len(gpus)} visible ({', '.join(gpus)})" if gpus else "none visible: trials run on the CPU"
    if "torch" in sys.modules or import_torch:
        try:
            import torch

            detail += f"; torch {torch.__version__}, cuda available: {torch.cuda.is_available()}"
        except Exception as e:  # a broken torch is the recipe's problem, reported here
            detail += f"; torch does not import ({type(e).__name__})"
    return Check("GPUs", True, detail)


# ----- putting them together -------------------------------------------------

def run_checks(recipe: Recipe | None, *, tracking_uri: str | None = None, experiment: str | None = None,
               agent: str | None = None, provider: str | None = None, base_url: str | None = None,
               store: bool = True, full: bool = False, recipe_root: Path | None = None,
               trials_here: bool = True) -> list[Check]:
    """The checks for this recipe (or none), store and backend; ``full`` adds the slower report-only ones.

    ``trials_here``: trials run on this machine (not on a cluster backend), so its sandbox must start them.
    """
    from mlflow_autoresearch.settings import tracking_uri as resolve_uri

    checks = [check_interpreter()] if trials_here else []
    root = recipe.root if recipe is not None else recipe_root
    if recipe is not None:
        checks += check_commands(recipe)
        checks.append(check_data(recipe))
    uri = resolve_uri(tracking_uri)
    if store:
        checks.append(check_store(root, uri, experiment or (recipe.name if recipe else None)))
    if agent is not None or full:
        checks.append(check_backend_credentials(agent, provider, base_url))
    local, _ = _store_paths(uri, None) if store else (None, None)
    checks.append(check_disk([Path(tempfile.gettempdir()), *([local.parent] if local is not None else [])]))
    if full:
        checks.append(check_gpus(import_torch=True))
    return checks


def preflight(recipe: Recipe | None, *, echo: Callable[[str], None] | None = None, **kwargs) -> list[Check]:
    """The cheap checks before ``run``, ``evaluate`` or ``init`` touch anything.

    Raises:
        DoctorError: one line per fatal problem, each with its cause and fix (exit code 2).
    """
    checks = run_checks(recipe, **kwargs)
    problems = [c for c in checks if not c.ok and c.fatal]
    for c in checks:
        if not c.ok and not c.fatal and echo:
            echo(f"autoresearch: warning: {c.detail}. Fix: {c.fix}")
    if problems:
        raise DoctorError("\n".join(f"{c.name}: {c.detail}. Fix: {c.fix}" for c in problems)
                          + "\n(nothing was run or recorded; `autoresearch doctor` lists every check)")
    return checks


@click.command("doctor")
@click.option("--recipe", "recipe_dir", default=None, help="Recipe folder to check as well (with recipe.yaml).")
@click.option("--profile", default=None, help="A profile of the recipe (e.g. quick, tiny).")
@click.option("--experiment", default=None, help="Experiment name [default: the recipe's name].")
@click.option("--tracking-uri", default=None,
              help="Tracking store [default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db].")
@click.option("--agent", default=None, help="Specialist backend to check: offline, claude, auto [default: auto].")
@click.option("--provider", type=click.Choice(["auto", "anthropic", "bedrock", "vertex", "foundry"]), default=None,
              help="Where Claude is served [default: auto].")
@click.option("--anthropic-base-url", default=None, help="An Anthropic-compatible server [default: $ANTHROPIC_BASE_URL].")
def doctor_command(recipe_dir, profile, experiment, tracking_uri, agent, provider, anthropic_base_url) -> None:
    """Check this machine, a recipe and the tracking store before any trial: one line per check, with its fix.

    Exit code 2 when a check finds a problem; nothing is run on the store or the model API.
    """
    from mlflow_autoresearch.cli import handles_errors
    from mlflow_autoresearch.recipe import load_recipe

    def go() -> None:
        recipe = load_recipe(recipe_dir, profile or None) if recipe_dir else None
        checks = run_checks(recipe, tracking_uri=tracking_uri, experiment=experiment or None, agent=agent,
                            provider=provider, base_url=anthropic_base_url, full=True,
                            recipe_root=None if recipe_dir is None else Path(recipe_dir))
        for c in checks:
            click.echo(c.line())
        bad = [c for c in checks if not c.ok and c.fatal]
        if bad:
            click.echo(f"autoresearch doctor: {len(bad)} problem(s)", err=True)
            sys.exit(2)

    handles_errors(go)()
