"""Evaluate one trial's code against its recipe.  Never asks a model anything.

:func:`evaluate_code` is the one code path: the MLproject entry point, the CLI
and the loop all end here.  It works on a local folder of code and returns an
immutable :class:`Evaluation`; logging it to MLflow is the caller's business
(see :mod:`mlflow_autoresearch.trial`).
"""

from __future__ import annotations

import ast
import fnmatch
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mlflow_autoresearch._errors import SandboxError
from mlflow_autoresearch._pysource import check_compiles
from mlflow_autoresearch.evaluator import _data
from mlflow_autoresearch.evaluator._metrics import (
    error_summary,
    last_values,
    mean_std,
    parse_json_file,
    parse_text,
)
from mlflow_autoresearch.evaluator._sandbox import (
    ProcessLimits,
    ProcessResult,
    View,
    Workspace,
    check_trial_interpreter,
    command_argv,
    copy_trial_file,
    read_trial_file,
    remove_tree,
    sandbox_level,
    scrubbed_env,
    sha256_of_trial_file,
)
from mlflow_autoresearch.outcome import Outcome
from mlflow_autoresearch.recipe import RECIPE_FILE, Recipe
from mlflow_autoresearch.schema import EVALUATOR_METRICS

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]


@dataclass(frozen=True)
class GateResult:
    gate: str
    metric: str
    observed: float | None
    margin: float | None  # >= 0 passes; None when the metric is missing
    passed: bool
    near_miss: bool
    band: float = 0.0  # the recipe's near-miss band


@dataclass(frozen=True)
class Evaluation:
    """The evaluator's facts about one trial.  Immutable."""

    outcome: Outcome
    reason: str  # one line: the cause, in words a model can act on
    score: float | None
    metrics: dict[str, float] = field(default_factory=dict)
    seed_metrics: tuple[dict[str, float], ...] = ()
    histories: dict[str, list[float]] = field(default_factory=dict)
    gates: tuple[GateResult, ...] = ()
    train_seconds: float | None = None
    total_seconds: float = 0.0
    artifact_bytes: int | None = None
    error_type: str | None = None
    error_tail: str = ""
    logs: dict[str, Path] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    device: str = "cpu"  # "cpu", or "gpu:<ids>" when the trial's processes could see a GPU (:func:`trial_device`)

    @property
    def near_miss(self) -> bool:
        return self.outcome is Outcome.GATE_FAILED and all(g.passed or g.near_miss for g in self.gates)

    def to_dict(self) -> dict:
        return {
            "outcome": self.outcome.value,
            "reason": self.reason,
            "score": self.score,
            "metrics": self.metrics,
            "seed_metrics": list(self.seed_metrics),
            "gates": [g.__dict__ for g in self.gates],
            "near_miss": self.near_miss,
            "train_seconds": self.train_seconds,
            "total_seconds": self.total_seconds,
            "artifact_bytes": self.artifact_bytes,
            "error_type": self.error_type,
            "error_tail": self.error_tail,
            "notes": list(self.notes),
        }


class _Stop(Exception):
    """A seed failed: stop running the rest."""

    def __init__(self, outcome: Outcome, reason: str, result: ProcessResult | None = None) -> None:
        super().__init__(reason)
        self.outcome, self.reason, self.result = outcome, reason, result


def check_code(recipe: Recipe, code_dir: Path) -> tuple[Outcome, str] | None:
    """Cheap checks before anything runs: protected hashes, unknown files, size, literals, syntax.

    Returns the failing outcome and reason, or None when the code may run.
    """
    expected = recipe.protected_hashes()
    # What could be trial code: not recipe.yaml, caches, outputs, the ignore list or declared data folders.
    present, links = recipe.files_in(code_dir)
    declared = set(expected) | set(recipe.editable)
    present |= {rel for rel in declared if (code_dir / rel).is_file() and not (code_dir / rel).is_symlink()}
    links |= {rel for rel in declared if (code_dir / rel).is_symlink()}
    if links:
        return Outcome.PROTECTED_VIOLATION, f"{_name(min(links))} is a symbolic link; trial code must be plain files"
    for rel, digest in expected.items():
        if rel not in present:
            return Outcome.PROTECTED_VIOLATION, f"protected file {rel} is missing from the trial's code"
        if sha256_of_trial_file(code_dir / rel) != digest:
            return Outcome.PROTECTED_VIOLATION, f"protected file {rel} differs from the recipe's copy (sha256 mismatch)"
    unknown = sorted(present - set(expected) - set(recipe.editable))
    if unknown:
        return Outcome.PROTECTED_VIOLATION, f"files outside the recipe's editable list: {', '.join(map(_name, unknown[:5]))}"
    lim = recipe.limits
    total = 0
    for rel in recipe.editable:
        path = code_dir / rel
        data = read_trial_file(path, limit=max(lim.code_bytes or 0, 64 * 1024**2) + 1)
        if data is None:
            return Outcome.INVALID_PROPOSAL, f"editable file {rel} is missing"
        total += len(data)
        if rel.endswith(".py"):
            try:
                check_compiles(data, rel)
            except SyntaxError as e:
                return Outcome.INVALID_PROPOSAL, f"SyntaxError in {rel} line {e.lineno}: {e.msg}"
            except ValueError as e:
                return Outcome.INVALID_PROPOSAL, f"{rel} cannot be compiled: {e}"
            if lim.literal_bytes:
                big = largest_literal(data)
                if big is not None and big[0] > lim.literal_bytes:
                    return Outcome.INVALID_PROPOSAL, (
                        f"{rel} line {big[1]}: a literal of {big[0]:,} bytes, over the recipe's literal_bytes limit of "
                        f"{lim.literal_bytes:,}: embedded weights or data are not allowed; compute them in training")
    if lim.code_bytes and total > lim.code_bytes:
        return Outcome.INVALID_PROPOSAL, (f"the editable code is {total:,} bytes, over the recipe's code_bytes limit of "
                                          f"{lim.code_bytes:,}")
    return None


def _name(rel: str) -> str:
    """A file name from the trial's code, safe to put in a one-line reason."""
    return repr(rel)[1:-1] if not rel.isprintable() or "`" in rel else rel


def largest_literal(source: bytes) -> tuple[int, int] | None:
    """(bytes, line) of the largest data literal in Python source, or None if there is none.

    Counted: a string or bytes constant; a concatenation of constants (``"a" + "b"``);
    a list, tuple, set or dict display of constants (the bytes of their reprs).
    """
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return None

    def const_size(node: ast.AST) -> int | None:
        if isinstance(node, ast.Constant):
            v = node.value
            return len(v) if isinstance(v, (str, bytes)) else len(repr(v))
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
            a, b = const_size(node.left), const_size(node.right)
            if a is None or b is None:
                return None
            if isinstance(node.op, ast.Mult):
                return max(a, b)  # "x" * n: the repeat count is not data
            return a + b
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            sizes = [const_size(e) for e in node.elts]
            return None if any(x is None for x in sizes) else sum(sizes) + len(sizes)
        if isinstance(node, ast.Dict):
            sizes = [const_size(e) for e in (*node.keys, *node.values) if e is not None]
            return None if any(x is None for x in sizes) else sum(sizes) + len(sizes)
        if isinstance(node, ast.UnaryOp):
            return const_size(node.operand)
        return None

    best: tuple[int, int] | None = None
    for node in ast.walk(tree):
        if isinstance(node, (ast.Constant, ast.BinOp, ast.List, ast.Tuple, ast.Set, ast.Dict)):
            size = const_size(node)
            if size is not None and (best is None or size > best[0]):
                best = (size, getattr(node, "lineno", 0))
    return best


def _stage(recipe: Recipe, code_dir: Path, dest: Path) -> None:
    """Editable files from the trial; every other file from the trusted recipe folder; mount points for data."""
    for rel in recipe.snapshot_files():
        src = code_dir / rel if rel in recipe.editable else recipe.root / rel
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)
    for rel in recipe.data.local:
        (dest / rel).mkdir(parents=True, exist_ok=True)


def _process_limits(recipe: Recipe, wall: float) -> ProcessLimits:
    lim = recipe.limits
    return ProcessLimits(
        wall_seconds=wall,
        memory_bytes=int(lim.memory_gb * 1024**3) if lim.memory_gb else None,
        processes=lim.processes,
        open_files=lim.open_files,
        file_bytes=lim.file_bytes,
        disk_bytes=lim.disk_bytes,
        output_bytes=lim.output_bytes,
        grace_seconds=lim.grace_seconds,
        network=recipe.network,
    )


def _failure(step: str, r: ProcessResult, recipe: Recipe, wall_limit: float) -> _Stop | None:
    """Classify a finished process; None when it succeeded."""
    exc_type, tail = error_summary(r.stderr())
    if r.timed_out:
        return _Stop(Outcome.TIMED_OUT, f"{step} ran past its {wall_limit:g} s limit and was killed "
                     f"(evaluator clock {r.wall_seconds:.1f} s)", r)
    if r.limit == "memory":
        return _Stop(Outcome.CRASHED, f"{step} was killed by the memory limit of {recipe.limits.memory_gb:g} GB "
                     f"(peak resident {r.peak_rss_bytes / 1024**3:.2f} GB)", r)
    if r.limit == "disk":
        return _Stop(Outcome.CRASHED, f"{step} wrote more than the disk limit of {recipe.limits.disk_bytes:,} bytes "
                     "in its working folder", r)
    if r.limit == "processes":
        return _Stop(Outcome.CRASHED, f"{step} reached the limit of {recipe.limits.processes} processes "
                     "(a fork bomb?) and was killed", r)
    if r.limit == "stopped":
        return _Stop(Outcome.HARNESS_ERROR, f"{step} was stopped because the evaluator was shut down", r)
    if r.limit == "survivor":
        return _Stop(Outcome.CRASHED, f"{step}: {r.survivors} process(es) of the trial survived the final kill", r)
    if r.limit == "sandbox":
        fatal = "; ".join(n[6:] for n in r.notes if n.startswith("fatal:"))
        return _Stop(Outcome.HARNESS_ERROR, f"{step} could not be sandboxed: {fatal}", r)
    if r.limit == "supervisor":
        return _Stop(Outcome.CRASHED, f"{step}: the evaluator's supervisor process was killed (signal "
                     f"{-r.returncode}) while the trial ran; the trial's processes were killed", r)
    if r.returncode != 0 and (r.returncode == -25 or "File too large" in tail or "File size limit" in tail):
        return _Stop(Outcome.CRASHED, f"{step} wrote a file over the {recipe.limits.file_bytes:,}-byte file limit "
                     f"(failed with {exc_type or 'SIGXFSZ'})", r)
    if r.returncode != 0:
        what = f"{exc_type}" if exc_type else (f"signal {-r.returncode}" if r.returncode < 0 else f"exit code {r.returncode}")
        return _Stop(Outcome.CRASHED, f"{step} failed with {what}", r)
    return None


ARTIFACT_DEPTH = 32  # artifact globs never reach deeper; a trial's deeper folders are not walked


def _artifact_files(recipe: Recipe, workdir: Path) -> list[str]:
    """Relative paths of the regular files training wrote that the recipe's ``artifact.files`` globs match.

    Walks iteratively, ARTIFACT_DEPTH folders deep at most, without following links.
    """
    patterns = recipe.artifact.files
    found: list[str] = []
    stack: list[tuple[str, str, int]] = [(str(workdir), "", 0)] if patterns else []
    while stack:
        path, rel_dir, depth = stack.pop()
        try:
            entries = list(os.scandir(path))
        except OSError:
            continue
        for e in entries:
            rel = f"{rel_dir}{e.name}"
            if e.is_dir(follow_symlinks=False):
                if depth < ARTIFACT_DEPTH:
                    stack.append((e.path, rel + "/", depth + 1))
            elif e.is_file(follow_symlinks=False) and any(
                    fnmatch.fnmatchcase(rel, pat) or fnmatch.fnmatchcase(rel, pat.replace("**/", ""))
                    for pat in patterns):
                found.append(rel)
    return sorted(found)


def _collect_artifacts(recipe: Recipe, code_dir: Path, workdir: Path, dest: Path | None, limit: int) -> int:
    """Artifact bytes: the editable code (when counted) and every artifact file, copied to ``dest`` if given.

    Only regular files are counted and copied (never links, FIFOs or devices), at most
    ``limit`` bytes each; what the protected step sees is exactly what was counted.
    """
    total = sum(len(read_trial_file(code_dir / rel, 64 * 1024**2) or b"") for rel in recipe.editable) \
        if recipe.artifact.include_code else 0
    for rel in _artifact_files(recipe, workdir):
        if dest is not None:
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            size = copy_trial_file(workdir / rel, target, limit)
        else:
            data = read_trial_file(workdir / rel, limit)
            size = None if data is None else len(data)
        total += size or 0
    return total


def _sha_or_none(path: Path) -> str | None:
    return sha256_of_trial_file(path)


def _changed_protected(recipe: Recipe, workdir: Path, expected: dict[str, str]) -> list[str]:
    return [rel for rel, digest in expected.items() if sha256_of_trial_file(workdir / rel) != digest]


def evaluate_code(
    recipe: Recipe,
    code_dir: str | Path,
    *,
    seeds: int | Sequence[int] | None = None,
    workspace_base: str | None = None,
    extra_env: dict[str, str] | None = None,
    progress: Progress | None = None,
    keep_logs_in: Path | None = None,
) -> Evaluation:
    """Run the trial in ``code_dir`` under the recipe's limits and classify it.

    ``keep_logs_in``: a folder to copy the bounded logs into (the workspace
    itself is removed).  Thread-safe; never raises for the trial's faults.

    Raises:
        HarnessError: the evaluator itself could not work.
    """
    code_dir = Path(code_dir)
    say = progress or (lambda msg: logger.info("%s", msg))
    start = time.monotonic()
    pre = check_code(recipe, code_dir)
    if pre is not None:
        return Evaluation(outcome=pre[0], reason=pre[1], score=None, total_seconds=time.monotonic() - start,
                          device=trial_device(extra_env))

    _data.ensure_prepared(recipe)
    # Seed indices: 0..n-1, or the ones asked for (confirmation seeds); a gate within its noise adds more.
    seed_list = list(seeds) if isinstance(seeds, (list, tuple)) else list(range(seeds or recipe.seeds))
    planned = len(seed_list)
    gate_seeds = 0 if isinstance(seeds, (list, tuple)) else recipe.acceptance.max_gate_seeds
    expected = recipe.protected_hashes()
    # The trusted copy itself: a trial running as your user could change it for every later trial.
    # (The editable baseline files are left out, so editing them during a loop is harmless.)
    trusted = {**expected, RECIPE_FILE: _sha_or_none(recipe.root / RECIPE_FILE)}
    trusted_names = set(recipe.snapshot_files())
    trusted_data = _data.fingerprint(recipe)
    lim = recipe.limits
    seed_metrics: list[dict[str, float]] = []
    histories: dict[str, list[float]] = {}
    walls: list[float] = []
    sizes: list[int] = []
    logs: dict[str, Path] = {}
    notes: set[str] = {f"sandbox={sandbox_level()}"}
    if _data.unsealed(recipe):
        notes.add("data-unsealed")
    stop: _Stop | None = None
    stop_error: tuple[str | None, str] = (None, "")
    gpu = extra_env.get("CUDA_VISIBLE_DEVICES") if extra_env else None

    with Workspace(workspace_base) as ws:
        def run(name: str, command: str, cwd: Path, wall: float, env_extra: dict[str, str], view: View,
                for_eval: bool = False) -> ProcessResult:
            env = scrubbed_env(cwd, {**(extra_env or {}), **env_extra})
            r = ws.run(name, command_argv(command), cwd, env, _process_limits(recipe, wall), view=view,
                       for_eval=for_eval)
            logs[f"{name}.stdout.txt"] = r.stdout_path
            logs[f"{name}.stderr.txt"] = r.stderr_path
            notes.update(n for n in r.notes if not n.startswith("fatal:"))
            if r.leftover:
                notes.add(f"{name}: killed {r.leftover} process(es) left running after the command exited")
            # Nothing of this step's uid may outlive it (the sweep already made sure; this is the check).
            ws.kill_all(for_eval=for_eval)
            tampered = [rel for rel, digest in trusted.items() if _sha_or_none(recipe.root / rel) != digest]
            tampered += sorted(set(recipe.snapshot_files()) ^ trusted_names)  # files planted or removed
            if _data.fingerprint(recipe) != trusted_data:
                tampered.append("declared data")
            if tampered:
                # Only possible when containment is weaker (same-user mode): the trusted copy itself changed.
                raise _Stop(Outcome.PROTECTED_VIOLATION, f"the recipe's own files in {recipe.root} changed while "
                            f"{name} ran: {', '.join(tampered[:5])}", r)
            return r

        def remaining() -> float:
            return (lim.total_seconds - (time.monotonic() - start)) if lim.total_seconds else float("inf")

        try:
            check_trial_interpreter(ws)
            if recipe.preflight:
                say("preflight")
                wd = ws.workdir("preflight")
                _stage(recipe, code_dir, wd)
                ws.give(wd)
                r = run("preflight", recipe.preflight, wd, min(lim.preflight_seconds, remaining()), {},
                        _data.training_view(recipe, wd))
                failed = _failure("the preflight", r, recipe, lim.preflight_seconds)
                if failed:
                    if failed.outcome is not Outcome.HARNESS_ERROR:
                        failed = _Stop(Outcome.PREFLIGHT_FAILED, failed.reason, r)
                    raise failed
                ws.take_back(wd)
                remove_tree(wd)

            done = 0
            while done < len(seed_list):
                seed = seed_list[done]
                done += 1
                n_seeds = len(seed_list)
                budget = min(lim.train_seconds, remaining())
                if budget <= 0:
                    raise _Stop(Outcome.TIMED_OUT, f"the evaluation's total budget of {lim.total_seconds:g} s "
                                f"ran out after {done - 1} of {n_seeds} seeds")
                say(f"seed {done}/{n_seeds}: training" + (f" on GPU {gpu}" if gpu else ""))
                wd = ws.workdir(f"seed{seed}")
                _stage(recipe, code_dir, wd)
                ws.give(wd)
                result_path = wd / "result.json"
                r = run(f"seed{seed}", recipe.command, wd, budget,
                        {"AUTORESEARCH_SEED": str(seed), "AUTORESEARCH_RESULT": str(result_path)},
                        _data.training_view(recipe, wd))
                changed = _changed_protected(recipe, wd, expected)
                if changed:
                    raise _Stop(Outcome.PROTECTED_VIOLATION,
                                f"the trial changed protected file(s) while running: {', '.join(changed)}", r)
                limit = budget if budget < lim.train_seconds else lim.train_seconds
                failed = _failure(f"training (seed {seed})", r, recipe, limit)
                if failed:
                    if r.timed_out and budget < lim.train_seconds:
                        failed.reason += " (the evaluation's total budget was the tighter limit)"
                    raise failed
                walls.append(r.wall_seconds)
                history = parse_text(r.stdout(), recipe.metric_regex)
                history.update(parse_json_file(result_path))

                if recipe.evaluate:
                    say(f"seed {done}/{n_seeds}: protected evaluation")
                    # A folder training never owned: the eval uid's, with the protected files and,
                    # copied by the evaluator, exactly the artifact files that are counted.
                    ev_dir = ws.workdir(f"seed{seed}-eval", for_eval=True)
                    for rel in expected:
                        (ev_dir / rel).parent.mkdir(parents=True, exist_ok=True)
                        shutil.copyfile(recipe.root / rel, ev_dir / rel)
                    for rel in recipe.data.local:
                        (ev_dir / rel).mkdir(parents=True, exist_ok=True)
                    ws.give(ev_dir, for_eval=True)
                    artifacts = ev_dir / "artifacts"
                    artifacts.mkdir(mode=0o755)
                    size = _collect_artifacts(recipe, code_dir, wd, artifacts, lim.disk_bytes)
                    # Training's folder is gone before the evaluation starts: nothing of it but the
                    # copied artifacts can be read, even where both steps run as one user.
                    ws.take_back(wd)
                    remove_tree(wd)
                    er = run(f"seed{seed}-eval", recipe.evaluate, ev_dir, min(lim.eval_seconds, max(remaining(), 1)),
                             {"AUTORESEARCH_SEED": str(seed), "AUTORESEARCH_ARTIFACT_DIR": str(artifacts)},
                             _data.evaluation_view(recipe, ev_dir), for_eval=True)
                    failed = _failure(f"the protected evaluation (seed {seed})", er, recipe, lim.eval_seconds)
                    if failed:
                        raise failed
                    # The score comes only from the protected step: what training printed
                    # is kept under train/ and can never stand in for it.
                    history = {f"train/{k}": v for k, v in history.items()}
                    history.update(parse_text(er.stdout(), recipe.metric_regex))
                    remove_tree(ev_dir)
                else:
                    size = _collect_artifacts(recipe, code_dir, wd, None, lim.disk_bytes)
                    ws.take_back(wd)
                    remove_tree(wd)  # the next seed's disk limit counts the whole workspace
                sizes.append(size)

                for name in EVALUATOR_METRICS:
                    history.pop(name, None)  # the evaluator's own measurements are never the script's
                history["train_seconds"] = [r.wall_seconds]
                history["cpu_seconds"] = [r.cpu_seconds]
                history["artifact_bytes"] = [float(size)]
                if seed == 0:  # the first seed's curves feed a sweep's pruner
                    histories.update({k: list(v) for k, v in history.items()})
                seed_metrics.append(last_values(history))
                if recipe.metric.name not in history:
                    raise _Stop(Outcome.CRASHED, f"no metric: the run printed no '{recipe.metric.name}: <number>' line "
                                "(nor wrote it to $AUTORESEARCH_RESULT)", r)
                if lim.artifact_bytes is not None and size > lim.artifact_bytes:
                    raise _Stop(Outcome.SIZE_EXCEEDED, f"artifact is {size:,} bytes, {size - lim.artifact_bytes:,} bytes "
                                f"over the {lim.artifact_bytes:,}-byte limit", r)
                if done == len(seed_list) and len(seed_list) - planned < gate_seeds:
                    close = gates_within_noise(recipe, seed_metrics)
                    if close:
                        seed_list.append(max(seed_list) + 1)
                        notes.add(f"gate {close} within its noise: extra seed(s) run")
                        say(f"gate {close} is within its noise: one more seed")
        except _Stop as s:
            stop = s
            # Read the error while the workspace (and its logs) still exists.
            stop_error = error_summary(s.result.stderr()) if s.result else (None, "")
            if s.outcome is Outcome.HARNESS_ERROR and s.result is not None and s.result.limit == "sandbox":
                raise SandboxError(s.reason) from None
        finally:
            if keep_logs_in is not None:
                keep_logs_in.mkdir(parents=True, exist_ok=True)
                for name, p in list(logs.items()):
                    if p.exists():
                        logs[name] = Path(shutil.copy(p, keep_logs_in / name))

    total = time.monotonic() - start
    metrics = _aggregate(seed_metrics)
    train_seconds = sum(walls) / len(walls) if walls else None
    artifact = max(sizes) if sizes else None
    common = dict(metrics=metrics, seed_metrics=tuple(seed_metrics), histories=histories,
                  train_seconds=train_seconds, total_seconds=total, artifact_bytes=artifact,
                  logs=logs if keep_logs_in is not None else {}, notes=tuple(sorted(notes)),
                  device=trial_device(extra_env))
    if stop is not None:
        exc_type, tail = stop_error
        return Evaluation(outcome=stop.outcome, reason=stop.reason, score=None, error_type=exc_type,
                          error_tail=tail, gates=_gates(recipe, metrics) if metrics else (), **common)
    gates = _gates(recipe, metrics)
    score = metrics.get(recipe.metric.name)
    failed_gates = [g for g in gates if not g.passed]
    if failed_gates:
        parts = []
        for g in failed_gates:
            if g.observed is None:
                parts.append(f"gate {g.gate}: metric '{g.metric}' was not reported")
            else:
                parts.append(f"gate {g.gate} missed: {g.metric} = {g.observed:.6g}, short by {-g.margin:.6g}"
                             + (" (near miss)" if g.near_miss else ""))
        return Evaluation(outcome=Outcome.GATE_FAILED, reason="; ".join(parts), score=score, gates=gates, **common)
    return Evaluation(outcome=Outcome.OK, reason=f"{recipe.metric.name} = {score:.6g} over {len(seed_metrics)} seed(s)",
                      score=score, gates=gates, **common)


def trial_device(extra_env: dict[str, str] | None = None) -> str:
    """What a trial's processes can compute on: ``gpu:<ids>`` or ``cpu``.

    The trial sees ``CUDA_VISIBLE_DEVICES`` from ``extra_env`` (its slot), else
    the evaluator's own; unset, it sees every GPU of the machine, so ``gpu:all``
    where an ``nvidia-smi`` is installed.  Empty or ``-1``: no GPU.
    """
    cvd = (extra_env or {}).get("CUDA_VISIBLE_DEVICES", os.environ.get("CUDA_VISIBLE_DEVICES"))
    if cvd is None:
        return "gpu:all" if shutil.which("nvidia-smi") else "cpu"
    cvd = cvd.strip()
    return "cpu" if cvd in ("", "-1") else f"gpu:{cvd}"


def watchdog_seconds(recipe: Recipe, seeds: int | Sequence[int] | None = None) -> float:
    """The longest one evaluation may take before its run is ended as ``harness_error`` whatever happens.

    Every limit the evaluator enforces, summed (extra gate seeds included), plus a margin for its own work.
    """
    lim = recipe.limits
    n = len(seeds) if isinstance(seeds, (list, tuple)) else (seeds or recipe.seeds) + recipe.acceptance.max_gate_seeds
    per_seed = lim.train_seconds + (lim.eval_seconds if recipe.evaluate else 0) + 2 * (lim.grace_seconds + 60)
    steps = (lim.preflight_seconds + lim.grace_seconds + 60 if recipe.preflight else 0) + n * per_seed
    if lim.total_seconds:
        steps = min(steps, lim.total_seconds + n * 2 * (lim.grace_seconds + 60))
    return lim.prepare_seconds + 120 + steps


def gates_within_noise(recipe: Recipe, seed_metrics: list[dict[str, float]]) -> str | None:
    """The first gate whose mean over the seeds so far is within its noise of the threshold, or None.

    Within its noise: closer than ``z * standard error`` (``z`` from the
    acceptance confidence, the standard error from the seeds' own spread),
    or, with one seed, inside the gate's near-miss band on either side.
    """
    from statistics import NormalDist

    z = NormalDist().inv_cdf(recipe.acceptance.confidence)
    for g in recipe.gates:
        values = [m[g.metric] for m in seed_metrics if g.metric in m]
        if not values or len(values) != len(seed_metrics):
            continue
        margin = g.margin(sum(values) / len(values))
        if len(values) > 1:
            _, sd = mean_std(values)
            if sd > 0 and abs(margin) < z * sd / len(values) ** 0.5:
                return str(g)
        elif g.near_miss > 0 and abs(margin) <= g.near_miss:
            return str(g)
    return None


def _aggregate(seed_metrics: list[dict[str, float]]) -> dict[str, float]:
    """Mean over seeds for every metric all seeds reported, plus ``<name>_std``."""
    if not seed_metrics:
        return {}
    names = set(seed_metrics[0]).intersection(*seed_metrics[1:])
    out = {}
    for name in sorted(names):
        mean, std = mean_std([m[name] for m in seed_metrics])
        out[name] = mean
        if len(seed_metrics) > 1:
            out[f"{name}_std"] = std
    out["seeds"] = float(len(seed_metrics))
    return out


def _gates(recipe: Recipe, metrics: dict[str, float]) -> tuple[GateResult, ...]:
    results = []
    for g in recipe.gates:
        observed = metrics.get(g.metric)
        if observed is None:
            results.append(GateResult(str(g), g.metric, None, None, False, False, g.near_miss))
            continue
        margin = g.margin(observed)
        passed = g.passes(observed)
        results.append(GateResult(str(g), g.metric, observed, margin, passed,
                                  near_miss=not passed and -margin <= g.near_miss, band=g.near_miss))
    return tuple(results)
