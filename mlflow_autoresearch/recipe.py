"""The recipe: one folder with ``recipe.yaml``, editable code, protected code.

``load_recipe`` is the only way in.  It validates with pydantic and turns every
problem into one :class:`RecipeError` that names the file, the field and what
is allowed, so the CLI can print it and exit with code 2 before anything is
written to the tracking store.

A :class:`Recipe` is immutable once loaded.
"""

from __future__ import annotations

import fnmatch
import hashlib
import math
import os
import re
import typing
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from mlflow_autoresearch._errors import RecipeError

RECIPE_FILE = "recipe.yaml"
IGNORE_FILE = ".autoresearchignore"
DEFAULT_ROSTER = ("architecture", "optimization", "data", "systems")
# Files never part of a snapshot: caches, data downloads, outputs.
IGNORED_PARTS = frozenset({"__pycache__", ".git", ".ipynb_checkpoints", "data", "outputs", "mlruns"})
IGNORED_SUFFIXES = (".pyc", ".pyo")
# What the integrity check of the recipe folder never looks at, unless the folder's
# .autoresearchignore says otherwise (one glob a line; `!pattern` takes a default back).
# A file the recipe names (editable, protected) or a .py file they import is never ignored: the recipe wins.
DEFAULT_IGNORES = ("*.log", "mlflow.db", "mlflow.db-*", "mlruns/", "__pycache__/", "*.pyc", "wandb/", "outputs/",
                   "checkpoints/", "*.ckpt", "*.pt", "*.pth", "optuna.db", "optuna.db-*", ".git/",
                   ".ipynb_checkpoints/", IGNORE_FILE)
PKG_PREFIX = "pkg:"  # a data.eval entry naming a file inside an installed Python package


class _BoolForNumber(ValueError):
    """A YAML boolean where a number belongs; names the field for the error message."""

    def __init__(self, field: str, value: bool) -> None:
        super().__init__(f"must be a number, not {str(value).lower()}")
        self.field = field


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_bools_for_numbers(cls, data: Any) -> Any:
        # YAML's `true` would otherwise pass as the number 1.
        if isinstance(data, dict):
            for name, info in cls.model_fields.items():
                value = data.get(name)
                if isinstance(value, bool) and info.annotation not in (bool, bool | None):
                    raise _BoolForNumber(name, value)
        return data


class MetricSpec(_Model):
    """The score: a metric name and which way is better."""

    name: str = Field(min_length=1)
    goal: Literal["minimize", "maximize"]


class Gate(_Model):
    """A condition every accepted trial must meet, e.g. ``accuracy >= 0.96``.

    ``near_miss`` is the band below the gate (in the metric's units) inside
    which a failure is reported as a near miss worth repairing.
    """

    metric: str = Field(min_length=1)
    op: Literal[">=", ">", "<=", "<"]
    value: float
    near_miss: float = Field(default=0.0, ge=0)

    def margin(self, observed: float) -> float:
        """Signed distance to the threshold; >= 0 passes (> 0 for strict ops)."""
        return observed - self.value if self.op in (">=", ">") else self.value - observed

    def passes(self, observed: float) -> bool:
        m = self.margin(observed)
        return m > 0 if self.op in (">", "<") else m >= 0

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.value:g}"


class ArtifactRule(_Model):
    """How the evaluator counts a trial's artifact bytes.

    ``include_code``: add the bytes of the editable files.  ``files``: glob
    patterns, relative to the trial's working folder, of what training wrote
    (e.g. ``final_model.int8.ptz``), added after training.
    """

    include_code: bool = True
    files: tuple[str, ...] = ()


def _plain_relative(p: str) -> bool:
    pp = PurePosixPath(p)
    return bool(p) and not pp.is_absolute() and ".." not in pp.parts and p.strip() == p and pp.as_posix() == p \
        and "\\" not in p and "\0" not in p


class DataSpec(_Model):
    """Which data a trial may read, and which only the protected step may.

    ``train``: paths relative to the dataset cache (``$AUTORESEARCH_DATA_DIR``,
    default ``/var/tmp/autoresearch-data``) that training may read; when a
    recipe has a ``data`` section, training sees *only* these of the cache.
    ``eval``: paths in the cache (or ``pkg:<package>/<path>``, a file shipped
    inside an installed package) that only the protected ``evaluate`` step may
    read; training finds them empty.  ``local``: folders of the recipe folder
    (e.g. ``data``) that every step sees read-only at the same relative path in
    its working folder.  ``prepare``: a command run once, in the recipe folder,
    by the evaluator itself (not sandboxed: it is the recipe's own trusted
    code) when a declared ``train`` or ``eval`` path is missing.
    """

    train: tuple[str, ...] = ()
    eval: tuple[str, ...] = ()
    local: tuple[str, ...] = ()
    prepare: str | None = None

    @field_validator("train", "eval", "local")
    @classmethod
    def _paths(cls, v: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        for p in v:
            rel = p[len(PKG_PREFIX):] if info.field_name == "eval" and p.startswith(PKG_PREFIX) else p
            if not _plain_relative(rel):
                where = "the recipe folder" if info.field_name == "local" else "the dataset cache"
                raise ValueError(f"{p!r} must be a plain relative path inside {where}, like 'cifar10/train.npz' "
                                 "(no '..', no leading '/' or './')")
            if info.field_name == "local" and (rel == RECIPE_FILE or PurePosixPath(rel).parts[0].startswith(".")):
                raise ValueError(f"{p!r} cannot be a data folder: hidden folders and {RECIPE_FILE} are never shown")
        if len(set(v)) != len(v):
            raise ValueError(f"a path is listed twice: {sorted(p for p in set(v) if v.count(p) > 1)}")
        return v

    @model_validator(mode="after")
    def _apart(self) -> DataSpec:
        both = set(self.train) & set(self.eval)
        if both:
            raise ValueError(f"paths both train and eval data: {sorted(both)} (evaluation data must stay sealed)")
        for t in self.train:
            for e in self.eval:
                if (t + "/").startswith(e + "/") or (e + "/").startswith(t + "/"):
                    raise ValueError(f"train path {t!r} and eval path {e!r} overlap (evaluation data must stay "
                                     "sealed: keep them in separate files or folders)")
        return self

    @property
    def declared(self) -> bool:
        return bool(self.train or self.eval or self.local)


class Limits(_Model):
    """Hard limits, enforced by the evaluator with its own clock."""

    train_seconds: float = Field(gt=0, description="wall clock of one seed's command")
    total_seconds: float | None = Field(default=None, gt=0, description="whole evaluation, all seeds")
    eval_seconds: float = Field(default=300, gt=0, description="the protected evaluation step of one seed")
    preflight_seconds: float = Field(default=120, gt=0)
    prepare_seconds: float = Field(default=600, gt=0, description="the recipe's data.prepare command, once")
    memory_gb: float | None = Field(default=None, gt=0, description="resident memory of the trial's process tree")
    artifact_bytes: int | None = Field(default=None, gt=0)
    processes: int = Field(default=256, ge=8, description="processes the trial may run at once")
    open_files: int = Field(default=1024, ge=16)
    file_bytes: int = Field(default=4 * 1024**3, gt=0, description="largest single file the trial may write")
    disk_bytes: int = Field(default=8 * 1024**3, gt=0, description="total size of the trial's working folder")
    output_bytes: int = Field(default=256 * 1024, ge=1024, description="captured stdout/stderr per stream kept")
    grace_seconds: float = Field(default=3, ge=0, description="between SIGTERM and SIGKILL")
    code_bytes: int | None = Field(default=None, gt=0, description="total size of the editable files")
    literal_bytes: int | None = Field(default=None, gt=0,
                                      description="largest string, bytes or number-list literal in the editable code")


class SpecialistSpec(_Model):
    """A role on the roster: a name, and optionally the recipe's own brief."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    brief: str | None = None


class Knob(_Model):
    """A number a sweep may tune: a module-level constant, else an argparse flag's ``default=`` (docs/sweeps.md)."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    low: float
    high: float
    log: bool = False
    integer: bool = False
    file: str | None = None

    @model_validator(mode="after")
    def _range(self) -> Knob:
        if not self.low < self.high:
            raise ValueError(f"knob {self.name}: low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"knob {self.name}: a log-scale range needs low > 0")
        return self


class AcceptanceSpec(_Model):
    """How a gain is told from noise (docs/acceptance.md).

    A candidate whose first estimate beats the incumbent is confirmed by up to
    ``max_confirm_seeds`` paired seeds of both, interleaved on its slot, and
    kept only when a sequential test says so at ``confidence`` and the gain is
    at least ``min_effect`` (a fraction of the score on the ``relative`` scale,
    metric units on the ``absolute`` one; default 0.01 and 0).  Default
    ``max_confirm_seeds``: 10 on the relative scale (timings on a shared
    machine), 4 on the absolute one (seeded metrics on a quiet GPU).  ``scale``
    ``auto`` picks relative for timings.  A gate met or missed within its
    noise gets up to ``max_gate_seeds`` extra seeds before it is called.
    """

    confidence: float = Field(default=0.95, ge=0.5, le=0.999)
    min_effect: float | None = Field(default=None, ge=0)
    max_confirm_seeds: int | None = Field(default=None, ge=0, le=32,
                                          description="paired seeds per side [default: 10 relative, 4 absolute]")
    scale: Literal["auto", "relative", "absolute"] = "auto"
    max_gate_seeds: int = Field(default=4, ge=0, le=64, description="extra seeds for a gate within its noise")


class Recipe(_Model):
    """A validated recipe.  ``root`` is the folder it was loaded from."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
    description: str = ""
    editable: tuple[str, ...] = Field(min_length=1)
    protected: tuple[str, ...] = ()
    command: str = Field(min_length=1)
    preflight: str | None = None
    evaluate: str | None = Field(default=None, description="protected evaluation command, run after training")
    metric: MetricSpec
    metric_regex: dict[str, str] = Field(default_factory=dict)
    gates: tuple[Gate, ...] = ()
    limits: Limits
    artifact: ArtifactRule = ArtifactRule()
    seeds: int = Field(default=1, ge=1, le=100)
    specialists: tuple[SpecialistSpec, ...] = tuple(SpecialistSpec(name=n) for n in DEFAULT_ROSTER)
    knowledge: tuple[str, ...] = ()
    knobs: tuple[Knob, ...] = ()
    network: bool = Field(default=False, description="let trial processes reach the network")
    data: DataSpec = DataSpec()
    min_improvement: float = Field(default=0.0, ge=0, description="deprecated: acceptance.min_effect, in metric units")
    acceptance: AcceptanceSpec = AcceptanceSpec()
    root: Path = Field(default=Path("."), exclude=True)

    @field_validator("specialists", mode="before")
    @classmethod
    def _roster(cls, v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [{"name": s} if isinstance(s, str) else s for s in v]
        return v

    @field_validator("editable", "protected", "knowledge")
    @classmethod
    def _relative(cls, v: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        for p in v:
            pp = PurePosixPath(p)
            if (not p or pp.is_absolute() or ".." in pp.parts or p.strip() != p or pp.as_posix() != p
                    or "\\" in p or "\0" in p):
                raise ValueError(f"{p!r} must be a plain relative path inside the recipe folder, like 'train.py' "
                                 "or 'src/model.py' (no '..', no leading '/' or './')")
            if info.field_name != "knowledge" and not in_snapshot(p):
                raise ValueError(f"{p!r} cannot be trial code: hidden files, {RECIPE_FILE} and the folders "
                                 f"{', '.join(sorted(IGNORED_PARTS))} are never part of a snapshot")
        if len(set(v)) != len(v):
            raise ValueError(f"a file is listed twice: {sorted(p for p in set(v) if v.count(p) > 1)}")
        return v

    @field_validator("metric_regex")
    @classmethod
    def _regexes(cls, v: dict[str, str]) -> dict[str, str]:
        for name, pattern in v.items():
            try:
                compiled = re.compile(pattern)
            except re.error as e:
                raise ValueError(f"metric_regex[{name}]: not a regular expression ({e})") from None
            if compiled.groups < 1:
                raise ValueError(f"metric_regex[{name}]: needs one capture group around the number")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Recipe:
        overlap = set(self.editable) & set(self.protected)
        if overlap:
            raise ValueError(f"files both editable and protected: {sorted(overlap)}")
        names = [s.name for s in self.specialists]
        if len(set(names)) != len(names):
            raise ValueError(f"specialists: duplicate roles in {names}")
        return self

    # ----- derived facts -------------------------------------------------
    @property
    def yaml_path(self) -> Path:
        return self.root / RECIPE_FILE

    @property
    def direction(self) -> int:
        """+1 when higher is better, -1 when lower is better."""
        return 1 if self.metric.goal == "maximize" else -1

    def is_editable(self, rel: str) -> bool:
        return rel in self.editable

    def snapshot_files(self) -> Iterator[str]:
        """Relative paths of every file of the recipe that a trial evaluates, sorted.

        The editable and protected files, and every other file of the folder
        except what the ignore list (:func:`ignore_patterns`) and the declared
        ``data.local`` folders leave out: a user's logs, ``mlflow.db``,
        ``mlruns/``, caches and outputs never become trial code, so they never
        trip the integrity check either.
        """
        found, _ = self.files_in(self.root, ignores=ignore_patterns(self.root))
        found.update(self.own_files())
        yield from sorted(found)

    def own_files(self) -> set[str]:
        """The files the recipe itself names (editable, protected) and the local ``.py`` files they import.

        No ignore glob ever takes one of these out of a snapshot or out of the
        integrity check: where a pattern of :func:`ignore_patterns` matches one,
        the recipe wins.
        """
        from mlflow_autoresearch._pysource import local_imports

        named = [rel for rel in (*self.editable, *self.protected) if (self.root / rel).is_file()]
        own = set(named)
        for rel in named:
            if rel.endswith(".py"):
                own.update(r for r in local_imports(self.root, rel)
                           if in_snapshot(r) and (self.root / r).is_file() and not (self.root / r).is_symlink())
        return own

    def files_in(self, folder: Path, ignores: tuple[str, ...] | None = None) -> tuple[set[str], set[str]]:
        """(regular files, symbolic links) of ``folder`` that could be trial code, as relative paths.

        Leaves out what :func:`in_snapshot`, the ignore list (the recipe folder's
        by default) and the ``data.local`` folders leave out; never follows a link.
        """
        ignores = ignore_patterns(self.root) if ignores is None else ignores
        local = {PurePosixPath(d).parts for d in self.data.local}
        files: set[str] = set()
        links: set[str] = set()
        for dirpath, dirnames, filenames in os.walk(folder):
            base = Path(dirpath).relative_to(folder).as_posix()
            keep = []
            for d in dirnames:
                rel = d if base == "." else f"{base}/{d}"
                if PurePosixPath(rel).parts in local or is_ignored(rel, True, ignores) or not in_snapshot(rel + "/x"):
                    continue
                if os.path.islink(os.path.join(dirpath, d)):
                    links.add(rel)
                else:
                    keep.append(d)
            dirnames[:] = keep
            for f in filenames:
                rel = f if base == "." else f"{base}/{f}"
                full = os.path.join(dirpath, f)
                if not in_snapshot(rel) or is_ignored(rel, False, ignores):
                    continue
                if os.path.islink(full):
                    links.add(rel)
                elif os.path.isfile(full):
                    files.add(rel)
        return files, links

    def protected_hashes(self) -> dict[str, str]:
        """sha256 of every file a trial may not change (all but the editable ones)."""
        return {rel: file_sha256(self.root / rel) for rel in self.snapshot_files() if rel not in self.editable}

    def knowledge_text(self, limit: int = 20_000) -> str:
        parts = []
        for rel in self.knowledge:
            parts.append(f"## {rel}\n\n{(self.root / rel).read_text(errors='replace')}")
        return "\n\n".join(parts)[:limit]

    def to_yaml(self) -> str:
        data = self.model_dump(mode="json", exclude={"root"}, exclude_defaults=True)
        data.setdefault("limits", self.limits.model_dump(mode="json", exclude_defaults=True))
        return yaml.safe_dump(data, sort_keys=False)


def ignore_patterns(root: Path) -> tuple[str, ...]:
    """The folder's ignore list: :data:`DEFAULT_IGNORES`, then the lines of its ``.autoresearchignore``.

    One glob a line (``#`` starts a comment); a pattern ending in ``/`` names
    folders; ``!pattern`` takes a pattern back out (a default included).
    """
    patterns = list(DEFAULT_IGNORES)
    try:
        text = (root / IGNORE_FILE).read_text(errors="replace")
    except OSError:
        return tuple(patterns)
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("!"):
            patterns = [p for p in patterns if p != line[1:]]
        elif line not in patterns:
            patterns.append(line)
    return tuple(patterns)


LOCAL_DATA_NAMES = ("data",)


def local_data_folders(folder: Path) -> list[str]:
    """Folders of ``folder`` that ``init`` declares as ``data.local`` (a script reads them next to itself)."""
    return [n for n in LOCAL_DATA_NAMES if (folder / n).is_dir() and not (folder / n).is_symlink()]


def default_ignore_text() -> str:
    """What ``autoresearch init`` writes to a new ``.autoresearchignore``."""
    return ("# Files and folders of this recipe folder that are never trial code and never checked for changes.\n"
            "# One glob a line; a trailing / names folders; !pattern takes a pattern (or a default) back.\n"
            + "".join(f"{p}\n" for p in DEFAULT_IGNORES if p != IGNORE_FILE))


def is_ignored(rel: str, is_dir: bool, patterns: tuple[str, ...]) -> bool:
    """Whether a glob of ``patterns`` (see :func:`ignore_patterns`) matches ``rel``, a path of the folder."""
    name = rel.rsplit("/", 1)[-1]
    for pat in patterns:
        if pat.endswith("/"):
            if is_dir and (fnmatch.fnmatchcase(name, pat[:-1]) or fnmatch.fnmatchcase(rel, pat[:-1])):
                return True
        elif fnmatch.fnmatchcase(name, pat) or fnmatch.fnmatchcase(rel, pat):
            return True
    return False


def in_snapshot(rel: str) -> bool:
    """Whether a relative path can be part of a code snapshot (not the recipe file, caches, outputs)."""
    parts = PurePosixPath(rel).parts
    if not parts or rel == RECIPE_FILE or parts[0].startswith(".") or any(p in IGNORED_PARTS for p in parts):
        return False
    return not rel.endswith(IGNORED_SUFFIXES)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The recipe model class that the field at ``loc`` holds (for naming its allowed fields)."""
    model: type[BaseModel] | None = Recipe
    for part in loc:
        if isinstance(part, int):
            continue
        if model is None or part not in model.model_fields:
            return None
        ann = model.model_fields[part].annotation
        model = next((a for a in (ann, *typing.get_args(ann)) if isinstance(a, type) and issubclass(a, BaseModel)),
                     None)
    return model


def _allowed(model: type[BaseModel] | None) -> str:
    return ", ".join(sorted(n for n in model.model_fields if n != "root")) if model else ""


def _format_error(path: Path, err: ValidationError) -> str:
    lines = [f"{path}: invalid recipe"]
    for e in err.errors():
        where = tuple(e["loc"])
        if isinstance(e.get("ctx", {}).get("error"), _BoolForNumber):
            where += (e["ctx"]["error"].field,)
            e = {k: v for k, v in e.items() if k != "input"}
        loc = ".".join(str(x) for x in where) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            allowed = _allowed(_model_at(e["loc"][:-1]))
            msg = "unknown field" + (f"; allowed fields: {allowed}" if allowed else "")
        elif e["type"] == "missing":
            msg = "required field is missing"
        elif e["type"] in ("dict_type", "model_type", "model_attributes_type"):
            allowed = _allowed(_model_at(e["loc"]))
            msg = "must be a mapping of fields" + (f" (allowed: {allowed})" if allowed else "")
        elif e["type"] in ("tuple_type", "list_type"):
            msg = "must be a list, e.g. [a, b]"
        if "input" in e and not isinstance(e["input"], (dict, list, tuple)) and e["type"] not in (
                "missing", "extra_forbidden"):
            shown = repr(e["input"])
            msg += f" (got {shown[:80] + '...' if len(shown) > 80 else shown})"
        lines.append(f"  field '{loc}': {msg}")
    return "\n".join(lines)


def load_recipe(path: str | Path, profile: str | None = None) -> Recipe:
    """Load and validate a recipe folder (or its ``recipe.yaml``).

    ``profile`` selects an entry of the file's ``profiles:`` mapping, whose
    fields override the top level (e.g. ``tiny`` for a CPU-sized run).

    Raises:
        RecipeError: naming the file, the field and what is allowed.
    """
    path = Path(path)
    yaml_path = path / RECIPE_FILE if path.is_dir() else path
    root = yaml_path.parent
    if not yaml_path.is_file():
        raise RecipeError(f"{yaml_path}: no recipe file here (a recipe is a folder with a {RECIPE_FILE})")
    try:
        text = yaml_path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise RecipeError(f"{yaml_path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise RecipeError(f"{yaml_path}: cannot be read: {e.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise RecipeError(f"{yaml_path}: not valid YAML: {e}") from None
    except RecursionError:
        raise RecipeError(f"{yaml_path}: not valid YAML: nested too deeply") from None
    if not isinstance(raw, dict) or not all(isinstance(k, str) for k in raw):
        raise RecipeError(f"{yaml_path}: must be a mapping of fields (name, editable, command, metric, limits, ...)")
    profiles = raw.pop("profiles", None) or {}
    if not isinstance(profiles, dict) or not all(isinstance(v, dict) for v in profiles.values()):
        raise RecipeError(f"{yaml_path}: field 'profiles': must map profile names to mappings of field overrides")
    if profile is not None:
        if profile not in profiles:
            names = ", ".join(sorted(str(p) for p in profiles)) or "none"
            raise RecipeError(f"{yaml_path}: no profile {profile!r}; this recipe has: {names}")
        raw = _deep_merge(raw, profiles[profile])
    if "root" in raw:
        raise RecipeError(f"{yaml_path}: field 'root': unknown field; allowed fields: {_allowed(Recipe)}")
    try:
        recipe = Recipe.model_validate({**raw, "root": root.resolve()})
    except ValidationError as e:
        raise RecipeError(_format_error(yaml_path, e)) from None
    _check_files(yaml_path, recipe)
    return recipe


def _check_files(yaml_path: Path, recipe: Recipe) -> None:
    for field in ("editable", "protected", "knowledge"):
        for rel in getattr(recipe, field):
            p = recipe.root / rel
            if p.is_symlink() or not p.is_file():
                raise RecipeError(f"{yaml_path}: field '{field}': {rel!r} is not a regular file in {recipe.root}")
    for rel in recipe.data.local:
        p = recipe.root / rel
        if p.is_symlink() or not p.is_dir():
            raise RecipeError(f"{yaml_path}: field 'data.local': {rel!r} is not a folder in {recipe.root}")
    for k in recipe.knobs:
        if k.file is not None and k.file not in recipe.editable:
            raise RecipeError(f"{yaml_path}: field 'knobs': {k.name} names {k.file!r}, which is not editable")
    for i, g in enumerate(recipe.gates):
        if not math.isfinite(g.value):
            raise RecipeError(f"{yaml_path}: field 'gates.{i}.value': must be a finite number (got {g.value})")
