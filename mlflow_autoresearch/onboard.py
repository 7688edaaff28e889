"""``autoresearch init PATH``: turn an existing training script into a recipe.

Every answer a recipe needs (command, metric and how it is printed, direction,
editable and protected files, time limit) comes from a flag, else from a
question when stdin is a terminal, else from a dry run of the command under
the evaluator's sandbox, else the command stops with a :class:`UsageError`
naming the missing flag (exit code 2).  The recipe is validated by running
the baseline through :func:`~mlflow_autoresearch.evaluator.evaluate_code`
*before* ``recipe.yaml`` is written: a recipe that cannot score its own
baseline is never written.  The baseline then runs on more seeds (3 runs in
all, 2 when a run is long) and the seeds per trial, ``acceptance`` and a
``quick`` profile are fitted to the spread it shows (:func:`fit_settings`).
Modules that load or split the data or compute the metric
(:func:`guarded_reason`) are protected by default.

The detection helpers (:func:`guess_command`, :func:`local_imports`,
:func:`metric_candidates`, :func:`pick_metric`, :func:`guess_goal`) are pure
functions of files and text.
"""

from __future__ import annotations

import ast
import logging
import math
import re
import statistics
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click

from mlflow_autoresearch._errors import UsageError
from mlflow_autoresearch._pysource import local_imports

logger = logging.getLogger(__name__)

DRY_RUN_SECONDS = 1800.0  # wall-clock limit of the dry run when --time-limit is not given
NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
# A label (words separated by single spaces) right after the start of a line, a
# separator such as ':', ',' or '|', or a number and a space; then an optional
# ':'/'=' and a number.
_FREE = re.compile(
    rf"(?:^|(?<=[^\w\s])|(?<=\d[ \t]))[ \t]*(?P<label>[A-Za-z][A-Za-z0-9_]*(?:[ \t][A-Za-z][A-Za-z0-9_]*)*)"
    rf"[ \t]*[:=]?[ \t]*(?P<num>{NUMBER})(?![\w.])",
    re.MULTILINE,
)
COUNTERS = frozenset({"step", "steps", "epoch", "epochs", "iter", "iteration", "batch", "lr", "time", "seconds",
                      "elapsed", "tokens", "it", "seed", "eta", "ms", "s", "train_seconds", "artifact_bytes"})
_MINIMIZE = ("loss", "error", "err", "perplexity", "ppl", "bpb", "bpc", "nll", "mse", "mae", "rmse", "wer", "cer",
             "seconds", "time", "latency")
_MAXIMIZE = ("acc", "accuracy", "score", "f1", "auc", "reward", "bleu", "rouge", "map", "precision", "recall",
             "r2", "core", "top1", "top5", "iou", "dice")
ENTRY_NAMES = ("train.py", "main.py", "run.py")
# A module whose name (or a top-level function's name) has one of these words loads or splits the data or
# computes the metric: agents could raise the score by changing it, so init protects it by default.
_GUARDED_WORDS = frozenset({"data", "dataset", "datasets", "dataloader", "dataloaders", "loader", "loaders", "prepare",
                            "split", "splits", "eval", "evaluate", "evaluation", "metric", "metrics", "score",
                            "scoring", "validation", "benchmark"})
_GUARDED_CALLS = frozenset({"train_test_split", "random_split", "KFold", "StratifiedKFold", "load_dataset"})
LONG_RUN_SECONDS = 60.0  # a baseline run longer than this is run twice, not three times, to measure its spread
SPREAD_FACTOR = 2.5  # acceptance.min_effect: this many times the spread between seeds of the baseline
HEADER = ("# Written by `autoresearch init`; edit freely. The fields are described in docs/writing-a-recipe.md\n"
          "# and the acceptance block in docs/acceptance.md of mlflow-autoresearch; `autoresearch init --help`\n"
          "# lists the flags that set them. Run a cheaper pass with `autoresearch run --profile quick`.\n")


@dataclass(frozen=True)
class MetricCandidate:
    """A number the dry run printed: its name, last value, and the regex to read it (None: ``name: value`` lines)."""

    name: str
    value: float
    regex: str | None
    line: str


# ----- detection (pure) -----------------------------------------------------

def guess_command(folder: Path) -> str | None:
    """``python train.py`` (or main.py, run.py), else the only script with a ``__main__`` block."""
    for name in ENTRY_NAMES:
        if (folder / name).is_file():
            return f"python {name}"
    mains = [p.name for p in sorted(folder.glob("*.py")) if "__main__" in p.read_text(errors="replace")]
    return f"python {mains[0]}" if len(mains) == 1 else None


def entry_script(command: str, folder: Path) -> str | None:
    """The folder-relative ``.py`` file a command runs (``python x.py``, ``python -m pkg.mod``), if any."""
    words = command.split()
    for i, w in enumerate(words):
        if w.endswith(".py") and (folder / w).is_file():
            return Path(w).as_posix()
        if w == "-m" and i + 1 < len(words):
            mod = words[i + 1].replace(".", "/")
            for cand in (f"{mod}.py", f"{mod}/__main__.py"):
                if (folder / cand).is_file():
                    return cand
    return None


def _slug(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")


def label_regex(label: str) -> str:
    """A regex (one capture group) that reads the number printed after ``label``."""
    words = r"[ \t]+".join(re.escape(w) for w in label.split())
    return rf"(?:^|[^\w\s]|\d(?=[ \t]))[ \t]*{words}[ \t]*[:=]?[ \t]*({NUMBER})"


def metric_candidates(stdout: str) -> list[MetricCandidate]:
    """Every named number in ``stdout``: ``name: value`` lines first, then free-form labels."""
    from mlflow_autoresearch.evaluator._metrics import parse_text

    found: dict[str, MetricCandidate] = {}
    native = parse_text(stdout)
    for name, values in native.items():
        line = next((ln for ln in reversed(stdout.splitlines()) if ln.strip().startswith(name)), name)
        found[name] = MetricCandidate(name, values[-1], None, line.strip())
    for m in _FREE.finditer(stdout):
        label = " ".join(m.group("label").split())
        name = _slug(label)
        if not name or name in native:
            continue
        line = stdout[stdout.rfind("\n", 0, m.start()) + 1 : stdout.find("\n", m.end()) % (len(stdout) + 1)]
        found[name] = MetricCandidate(name, float(m.group("num")), label_regex(label), line.strip())
    return list(found.values())


def pick_metric(cands: list[MetricCandidate]) -> MetricCandidate | None:
    """The likeliest score: a held-out loss/accuracy, else any accuracy, else any loss; None if unclear."""
    useful = [c for c in cands if c.name not in COUNTERS and not c.name.endswith(("_step", "_epoch"))]
    held_out = ("val", "valid", "validation", "test", "eval", "dev")
    tests = [
        lambda n: any(h in n.split("_") for h in held_out) and guess_goal(n) is not None,
        lambda n: "acc" in n or "accuracy" in n,
        lambda n: "loss" in n,
    ]
    for test in tests:
        hits = [c for c in useful if test(c.name)]
        if hits:
            return hits[-1]
    return useful[0] if len(useful) == 1 and guess_goal(useful[0].name) else None


def guess_goal(name: str) -> str | None:
    words = set(_slug(name).split("_"))
    if words & set(_MINIMIZE):
        return "minimize"
    if words & set(_MAXIMIZE) or any(w.startswith("acc") for w in words):
        return "maximize"
    return None


def guarded_reason(folder: Path, rel: str) -> str | None:
    """Why module ``rel`` loads or splits data or computes the metric (protect it by default), else None.

    Judged from the file's name and its top-level function names and calls
    (``ast``), never by running it.
    """
    words = set(re.split(r"[^a-z0-9]+", Path(rel).stem.lower()))
    if rel.endswith("__init__.py"):
        words = set(re.split(r"[^a-z0-9]+", Path(rel).parent.name.lower()))
    hit = sorted(words & _GUARDED_WORDS)
    if hit:
        return f"its name says {hit[0]}"
    try:
        tree = ast.parse((folder / rel).read_text(errors="replace"), filename=rel)
    except (SyntaxError, OSError, ValueError):
        return None
    funcs = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    named = [f for f in funcs if set(f.lower().split("_")) & _GUARDED_WORDS]
    if named:
        return f"defines {', '.join(named[:3])}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            fn = node.func
            name = fn.attr if isinstance(fn, ast.Attribute) else fn.id if isinstance(fn, ast.Name) else ""
            if name in _GUARDED_CALLS:
                return f"calls {name}"
    return None


def split_files(folder: Path, files: list[str], entry: str | None) -> tuple[list[str], dict[str, str]]:
    """(editable, {protected: why}) of the entry script's local modules: data and metric modules are protected.

    The entry script itself is always editable: it is what trains.
    """
    editable: list[str] = []
    protected: dict[str, str] = {}
    for rel in files:
        why = None if rel == entry else guarded_reason(folder, rel)
        if why is None:
            editable.append(rel)
        else:
            protected[rel] = why
    return editable, protected


@dataclass(frozen=True)
class Fit:
    """Seeds and acceptance settings that fit the spread of a script's baseline runs."""

    values: tuple[float, ...]  # the score of each baseline run
    scale: str  # relative (timings) or absolute
    spread: float  # std between runs: a fraction of the mean (relative) or metric units (absolute)
    seeds: int
    min_effect: float | None  # None: the default of the scale (docs/acceptance.md)
    max_confirm_seeds: int
    quick_confirm_seeds: int

    def acceptance(self) -> dict[str, float | int]:
        out: dict[str, float | int] = {"confidence": 0.95}
        if self.min_effect is not None:
            out["min_effect"] = self.min_effect
        out["max_confirm_seeds"] = self.max_confirm_seeds
        return out

    def quick(self) -> dict:
        return {"seeds": 1, "acceptance": {"max_confirm_seeds": self.quick_confirm_seeds}}

    def spread_text(self) -> str:
        if len(self.values) < 2:
            return "one baseline run: spread not measured"
        mean = statistics.fmean(self.values)
        sd = statistics.stdev(self.values)
        rel = f", {100 * sd / abs(mean):.2g}% of it" if mean and sd else ""
        return f"{len(self.values)} baseline runs: {mean:.6g} ± {sd:.3g}{rel}"


def nice_round(x: float) -> float:
    """``x`` to one significant digit (0.031 -> 0.03, 0.0137 -> 0.01); 0 for 0 or nonsense."""
    if x <= 0 or not math.isfinite(x):
        return 0.0
    return float(f"{x:.1g}")


def fit_settings(metric: str, values: list[float], seconds: float) -> Fit:
    """Seeds and acceptance for a script whose baseline scored ``values`` in ``seconds`` per run.

    ``min_effect`` is about :data:`SPREAD_FACTOR` times the spread between
    seeds (to one significant digit): a smaller gain cannot
    be told from noise in a few seeds anyway.  A script that scores the same
    on every seed needs one seed and no confirmation (any change is real);
    a long run gets fewer seeds and fewer confirmation pairs.
    """
    from mlflow_autoresearch.acceptance._noise import detect_scale

    scale = detect_scale(metric, values)
    long = seconds > LONG_RUN_SECONDS
    confirm = 4 if long or scale == "absolute" else 10
    if len(values) < 2:
        return Fit(tuple(values), scale, math.nan, 1, None, confirm, min(2, confirm))
    mean = statistics.fmean(values)
    sd = statistics.stdev(values)
    spread = sd / abs(mean) if scale == "relative" and mean else sd
    if spread == 0:
        return Fit(tuple(values), scale, 0.0, 1, None if scale == "relative" else 0.0,
                   0 if scale == "absolute" else confirm, 0 if scale == "absolute" else 2)
    return Fit(tuple(values), scale, spread, 1 if long else 2, nice_round(SPREAD_FACTOR * spread), confirm,
               min(2, confirm))


def _recipe_name(folder: Path) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", folder.resolve().name).strip("-._") or "recipe"
    return name[:100] if name[0].isalnum() else f"r{name}"[:100]


# ----- the command ---------------------------------------------------------------

@dataclass
class Answers:
    command: str | None
    metric: str | None
    metric_regex: str | None
    goal: str | None
    editable: tuple[str, ...]
    protected: tuple[str, ...]
    time_limit: float | None
    name: str | None
    seeds: int | None
    network: bool
    baseline_runs: int | None = None  # None: 3, or 2 when a run is long
    accept_split: bool = False  # --yes: take the detected editable/protected split without asking


Ask = Callable[..., object]
Say = Callable[[str], None]


def _build(folder: Path, a: Answers, metric_regex: dict[str, str]):
    from pydantic import ValidationError

    from mlflow_autoresearch.recipe import Recipe, local_data_folders

    spec = {
        "name": a.name or _recipe_name(folder),
        "description": f"Onboarded by `autoresearch init` from {folder.name}.",
        "editable": list(a.editable),
        "protected": list(a.protected),
        "command": a.command,
        "metric": {"name": a.metric or "__probe__", "goal": a.goal or "minimize"},
        "metric_regex": metric_regex,
        "limits": {"train_seconds": a.time_limit or DRY_RUN_SECONDS},
        "seeds": a.seeds or 1,
        "network": a.network,
        "root": folder,
    }
    local = local_data_folders(folder)
    if local:  # read next to the script (nanoGPT's data/): shown read-only at the same path in every trial
        spec["data"] = {"local": local}
    try:
        return Recipe.model_validate(spec)
    except ValidationError as e:
        flags = {"editable": "--editable", "protected": "--protected", "metric_regex": "--metric-regex",
                 "name": "--name", "limits": "--time-limit", "command": "--command"}
        lines = ["the answers do not make a valid recipe:"]
        for err in e.errors():
            field = str(err["loc"][0]) if err["loc"] else ""
            lines.append(f"  {flags.get(field, field or 'recipe')}: {err['msg']}")
        raise UsageError("\n".join(lines)) from None


def _run(recipe, folder: Path, say: Say):
    """Run the recipe's command once through the evaluator; (evaluation, stdout)."""
    from mlflow_autoresearch.evaluator import evaluate_code

    with tempfile.TemporaryDirectory(prefix="autoresearch-init-") as logs:
        ev = evaluate_code(recipe, folder, seeds=1, keep_logs_in=Path(logs), progress=lambda m: logger.debug(m))
        out = Path(logs) / "seed0.stdout.txt"
        stdout = out.read_text(errors="replace") if out.exists() else ""
    return ev, stdout


def _command_failed(ev, command: str, folder: Path) -> UsageError:
    from mlflow_autoresearch.recipe import IGNORED_PARTS

    tail = "\n".join(ev.error_tail.splitlines()[-12:])
    hint = "(fix the script or the flags; --time-limit and --network may help)"
    skipped = sorted(p.name for p in folder.iterdir()
                     if p.is_dir() and p.name in IGNORED_PARTS and not p.name.startswith((".", "__")))
    if skipped and ev.error_type in ("FileNotFoundError", "OSError", "IsADirectoryError"):
        hint = (f"(runs happen in a copy of the folder without {', '.join(f'{d}/' for d in skipped)}: read data "
                f"from an absolute path, e.g. under $AUTORESEARCH_DATA_DIR, which runs can see)")
    return UsageError(f"`{command}` did not run to the end under the evaluator: {ev.outcome.value}: {ev.reason}"
                      + (f"\n{tail}" if tail else "") + f"\n{hint}")


def onboard(folder: Path, a: Answers, *, interactive: bool, run: bool, force: bool, say: Say,
            ask: Ask = click.prompt) -> Path:
    """Detect what is missing, validate by running the baseline, fit the settings to its spread, write ``recipe.yaml``.

    Returns the path written.  Raises UsageError (nothing written) for every
    answer that is missing, invalid, or does not score the baseline.
    """
    from mlflow_autoresearch.outcome import Outcome
    from mlflow_autoresearch.recipe import IGNORE_FILE, RECIPE_FILE, default_ignore_text, load_recipe

    folder = folder.resolve()
    target = folder / RECIPE_FILE
    if target.exists() and not force:
        raise UsageError(f"{target} already exists; pass --force to replace it")
    if a.metric_regex and not a.metric:
        raise UsageError("--metric-regex needs --metric: the name the matched number is recorded under")

    # command
    if a.command is None:
        guess = guess_command(folder)
        if interactive:
            a.command = str(ask("Command that trains (run in the folder)", default=guess))
        elif guess:
            a.command = guess
            say(f"command: {guess} (detected)")
        else:
            raise UsageError(f"--command is required: no {', '.join(ENTRY_NAMES)} and no single script with a "
                             f"__main__ block in {folder}")
    entry = entry_script(a.command, folder)
    protected_given = bool(a.protected)

    # editable and protected files: the script and its local modules, less those that load or split
    # the data or compute the metric (protected unless the user says otherwise)
    detected = local_imports(folder, entry) if entry else []
    pool = [f for f in detected if f not in (a.editable or a.protected)]
    guarded = split_files(folder, pool, entry)[1]
    if not protected_given:
        if interactive and guarded and not a.accept_split:
            say("these modules load or split data or compute the metric: "
                + "; ".join(f"{rel} ({why})" for rel, why in guarded.items()))
            answer = str(ask("Protected files, agents may not edit them (comma-separated; '-' for none)",
                             default=",".join(guarded)))
            a.protected = tuple(s.strip() for s in answer.split(",") if s.strip() and s.strip() != "-")
        else:
            a.protected = tuple(guarded)
    if not a.editable:
        default = [f for f in detected if f not in a.protected]
        if interactive and not a.accept_split:
            answer = str(ask("Editable files (comma-separated)", default=",".join(default) or None))
            a.editable = tuple(s.strip() for s in answer.split(",") if s.strip())
        elif default:
            a.editable = tuple(default)
        else:
            raise UsageError("--editable is required: the command runs no .py file of this folder that could be detected")
    if not protected_given:  # a detected guess gives way to a file the user made editable
        a.protected = tuple(f for f in a.protected if f not in a.editable)
    for flag, files in (("--editable", a.editable), ("--protected", a.protected)):
        for rel in files:
            p = folder / rel
            if not p.is_file() or p.is_symlink():
                raise UsageError(f"{flag} {rel}: not a regular file in {folder}")

    if run:  # the machine can start trials at all (interpreter, disk): one line with the fix, nothing written
        from mlflow_autoresearch.doctor import preflight

        preflight(None, store=False, echo=say)

    # dry run: the metric and the time limit come from what the command prints and takes
    regex = {a.metric: a.metric_regex} if a.metric and a.metric_regex else {}
    if run and (a.metric is None or a.time_limit is None):
        say(f"dry run: `{a.command}` under the evaluator's sandbox ...")
        probe = _build(folder, Answers(**{**a.__dict__, "metric": a.metric or "__probe__"}), regex)
        ev, stdout = _run(probe, folder, say)
        if not ev.seed_metrics:
            raise _command_failed(ev, a.command, folder)
        wall = ev.train_seconds or 0.0
        say(f"dry run: finished in {wall:.1f} s")
        cands = metric_candidates(stdout)
        if a.metric is not None and not a.metric_regex:
            regex = _regex_for(a, cands, say)
        if a.metric is None:
            chosen = pick_metric(cands)
            if interactive:
                if cands:
                    say("numbers the run printed: " + ", ".join(f"{c.name}={c.value:g}" for c in cands))
                a.metric = str(ask("Metric to optimise", default=chosen.name if chosen else None))
                chosen = next((c for c in cands if c.name == a.metric), None)
            elif chosen is None:
                listed = ", ".join(c.name for c in cands) or "none"
                raise UsageError(f"--metric is required: the dry run printed no metric that is clearly the score "
                                 f"(named numbers seen: {listed})")
            else:
                a.metric = chosen.name
                say(f"metric: {chosen.name} (detected in: {chosen.line!r})")
            if chosen is not None and chosen.regex and not a.metric_regex:
                a.metric_regex = chosen.regex
                regex = {a.metric: chosen.regex}
                say(f"metric_regex: {chosen.regex}")
        if a.time_limit is None:
            default = float(max(60, 10 * math.ceil(4 * wall / 10)))
            a.time_limit = float(ask("Time limit per run, seconds", default=default, type=float)) \
                if interactive else default
            say(f"time limit: {a.time_limit:g} s per run" + ("" if interactive else " (4x the dry run, at least 60)"))
    if a.metric is None:
        raise UsageError("--metric is required with --no-run (nothing runs to detect it from)")
    if a.time_limit is None:
        a.time_limit = DRY_RUN_SECONDS

    # goal
    if a.goal is None:
        guess = guess_goal(a.metric)
        if interactive:
            a.goal = str(ask("Goal", default=guess, type=click.Choice(["minimize", "maximize"])))
        elif guess:
            a.goal = guess
            say(f"goal: {guess} {a.metric} (from its name)")
        else:
            raise UsageError(f"--goal is required: minimize or maximize {a.metric}? (not clear from the name)")

    recipe = _build(folder, a, regex)
    _warn_size(recipe, say)
    if run:
        say(f"baseline: running `{a.command}` once through the evaluator ...")
        ev, stdout = _run(recipe, folder, say)
        if ev.seed_metrics and a.metric not in ev.seed_metrics[0] and not a.metric_regex:
            regex = _regex_for(a, metric_candidates(stdout), say)
            if regex:  # the metric is printed in the script's own format: read it with a regex
                recipe = _build(folder, a, regex)
                ev, _ = _run(recipe, folder, say)
        if ev.outcome is not Outcome.OK:
            if ev.seed_metrics and recipe.metric.name not in ev.seed_metrics[0]:
                raise UsageError(f"--metric {a.metric}: the baseline ran but printed no '{a.metric}: <number>' line"
                                 + (" matching --metric-regex" if regex else "")
                                 + "; pass --metric-regex for a custom format")
            raise _command_failed(ev, a.command, folder)
        say(f"baseline: ok — {a.metric} = {ev.score:.6g} in {ev.train_seconds:.1f} s (evaluator clock)")
        fit = _measure_spread(recipe, folder, a, ev, say)
    else:
        fit = None
    _say_choices(recipe, a, fit, guarded_reasons(folder, recipe.protected), say)
    target.write_text(HEADER + _yaml_text(recipe, a, fit))
    load_recipe(folder)  # what was written loads back
    load_recipe(folder, "quick")
    say(f"wrote {target}")
    ignore = folder / IGNORE_FILE
    if not ignore.exists():
        ignore.write_text(default_ignore_text())
        say(f"wrote {ignore} (files trials never see and the integrity check never reads)")
    say(f"next: autoresearch run --recipe {folder}")
    return target


def guarded_reasons(folder: Path, files: tuple[str, ...]) -> dict[str, str]:
    return {rel: guarded_reason(folder, rel) or "--protected" for rel in files}


def _measure_spread(recipe, folder: Path, a: Answers, first, say: Say) -> Fit:
    """Run the baseline on more seeds (3 runs in all, 2 when a run is long) and fit the settings to its spread."""
    from mlflow_autoresearch.evaluator import evaluate_code
    from mlflow_autoresearch.outcome import Outcome

    seconds = first.train_seconds or 0.0
    runs = a.baseline_runs or (2 if seconds > LONG_RUN_SECONDS else 3)
    values = [first.score]
    if runs > 1:
        say(f"baseline: {runs - 1} more run(s) on other seeds, to measure the spread between seeds ...")
        ev = evaluate_code(recipe, folder, seeds=list(range(1, runs)), progress=lambda m: logger.debug(m))
        if ev.outcome is not Outcome.OK:
            raise _command_failed(ev, a.command or "", folder)
        values += [m[recipe.metric.name] for m in ev.seed_metrics if recipe.metric.name in m]
    fit = fit_settings(recipe.metric.name, [float(v) for v in values], seconds)
    if a.seeds is not None:  # --seeds wins over the fit
        fit = Fit(fit.values, fit.scale, fit.spread, a.seeds, fit.min_effect, fit.max_confirm_seeds,
                  fit.quick_confirm_seeds)
    return fit


def _say_choices(recipe, a: Answers, fit: Fit | None, why: dict[str, str], say: Say) -> None:
    """One line each: editable, protected, seeds, acceptance, quick profile."""
    say(f"editable: {', '.join(recipe.editable)} (agents edit these)")
    if recipe.protected:
        say("protected: " + ", ".join(f"{rel} ({why[rel]})" for rel in recipe.protected)
            + " (agents may not change these; --editable/--protected decide otherwise)")
    else:
        say("protected: none (pass --protected for a file that loads the data or computes the metric)")
    if fit is None:
        say(f"seeds: {recipe.seeds} per trial (--no-run: the spread between seeds was not measured)")
        say("acceptance: the defaults (docs/acceptance.md); nothing ran to fit them to")
        say("quick profile: seeds 1, max_confirm_seeds 2 (autoresearch run --profile quick)")
        return
    if a.seeds is not None:
        reason = "--seeds"
    elif fit.spread == 0:
        reason = "every baseline run scored the same"
    elif fit.seeds == 1:
        reason = "a run is long"
    else:
        reason = "the score moves between seeds"
    say(f"seeds: {fit.seeds} per trial ({reason}; {fit.spread_text()})")
    acc = fit.acceptance()
    if fit.min_effect is None:
        effect = "min_effect: the default of the scale"
    elif fit.spread == 0:
        effect = f"min_effect {fit.min_effect:g}: any change of a deterministic score is real"
    else:
        unit = "of the score" if fit.scale == "relative" else f"{recipe.metric.name} units"
        effect = (f"min_effect {fit.min_effect:g} ({unit}, about {SPREAD_FACTOR:g}x the spread "
                  f"{fit.spread:.3g} between seeds)")
    say(f"acceptance: {effect}, max_confirm_seeds {acc['max_confirm_seeds']}, confidence {acc['confidence']}, "
        f"{fit.scale} scale")
    q = fit.quick()
    say(f"quick profile: seeds {q['seeds']}, max_confirm_seeds {q['acceptance']['max_confirm_seeds']} "
        "(autoresearch run --profile quick)")


def _yaml_text(recipe, a: Answers, fit: Fit | None) -> str:
    """``recipe.yaml``: the recipe, its acceptance settings and a ``quick`` profile."""
    import yaml

    data = yaml.safe_load(recipe.to_yaml())
    if fit is not None:
        data["seeds"] = fit.seeds
        data["acceptance"] = fit.acceptance()
        quick = fit.quick()
    else:
        quick = {"seeds": 1, "acceptance": {"max_confirm_seeds": 2}}
    data["profiles"] = {"quick": quick}
    return yaml.safe_dump(data, sort_keys=False)


def _regex_for(a: Answers, cands: list[MetricCandidate], say: Say) -> dict[str, str]:
    """When --metric names a number printed in a free-form line, the regex that reads it."""
    match = next((c for c in cands if c.name == a.metric and c.regex), None)
    if match is None:
        return {}
    a.metric_regex = match.regex
    say(f"metric_regex: {match.regex} (--metric {a.metric} is printed as {match.line!r})")
    return {a.metric: match.regex}


def _warn_size(recipe, say: Say, limit: int = 50 * 1024**2) -> None:
    sizes = sorted(((recipe.root / rel).stat().st_size, rel) for rel in recipe.snapshot_files())
    total = sum(s for s, _ in sizes)
    if total > limit:
        big = ", ".join(f"{rel} ({s / 1024**2:.0f} MB)" for s, rel in sizes[-3:])
        say(f"warning: every trial copies {total / 1024**2:.0f} MB of this folder (largest: {big}); move data into "
            f"a data/ or outputs/ subfolder, which trials do not copy")


@click.command("init")
@click.argument("path", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--command", "command", default=None, help="Command that trains, run in PATH [default: python train.py].")
@click.option("--metric", default=None, help="Name of the score [default: detected from a dry run].")
@click.option("--metric-regex", default=None,
              help="Regex with one capture group around the number, for scripts that print their own format "
                   "(e.g. 'val loss ([0-9.]+)').")
@click.option("--goal", type=click.Choice(["minimize", "maximize"]), default=None,
              help="Which way the metric is better [default: from its name].")
@click.option("--editable", multiple=True, help="A file agents may edit (repeatable) [default: the script and its local imports].")
@click.option("--protected", multiple=True, help="A file agents may not edit, e.g. an evaluation (repeatable).")
@click.option("--time-limit", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Wall-clock seconds per run [default: 4x the dry run, at least 60].")
@click.option("--name", default=None, help="Recipe name [default: the folder's name].")
@click.option("--seeds", type=click.IntRange(1, 100), default=None,
              help="Seeds per trial [default: 2 when the baseline's score moves between seeds, 1 when it does not "
                   "or a run is long].")
@click.option("--baseline-runs", type=click.IntRange(1, 20), default=None,
              help="Runs of the baseline, on different seeds, to measure its spread [default: 3, 2 when a run "
                   f"takes over {LONG_RUN_SECONDS:g} s].")
@click.option("--yes", "-y", "accept_split", is_flag=True,
              help="Take the detected editable and protected files without asking (data and metric modules "
                   "protected).")
@click.option("--network/--no-network", default=False, show_default=True, help="Let runs reach the network.")
@click.option("--interactive/--no-interactive", default=None,
              help="Ask for missing answers [default: when stdin is a terminal].")
@click.option("--no-run", is_flag=True, help="Write recipe.yaml without running anything (needs --metric).")
@click.option("--force", is_flag=True, help="Replace an existing recipe.yaml.")
def init_command(path: Path, command, metric, metric_regex, goal, editable, protected, time_limit, name, seeds,
                 baseline_runs, accept_split, network, interactive, no_run, force) -> None:
    """Onboard the training script in PATH: detect, ask or take the answers, validate, write recipe.yaml."""
    from mlflow_autoresearch.cli import handles_errors

    answers = Answers(command=command, metric=metric, metric_regex=metric_regex, goal=goal,
                      editable=tuple(editable), protected=tuple(protected), time_limit=time_limit, name=name,
                      seeds=seeds, network=network, baseline_runs=baseline_runs, accept_split=accept_split)
    if interactive is None:
        interactive = sys.stdin.isatty()

    def say(msg: str) -> None:
        click.echo(msg, err=True)

    handles_errors(onboard)(path, answers, interactive=interactive, run=not no_run, force=force, say=say)
