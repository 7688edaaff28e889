"""Knobs: numeric constants of a trial's code that a sweep may tune.

A knob is found by parsing the editable Python files (``ast``), never by a
regular expression: a module-level assignment of a number literal
(``LR = 0.02  # peak learning rate``, ``LR: float = 2e-2``, ``OFFSET = -3``),
else the number-literal ``default=`` of an argparse flag whose destination is
the knob's name (``parser.add_argument("--lr", type=float, default=3e-4)`` is
knob ``lr``; ``--warmup-frac`` is ``warmup_frac``).  Rewriting replaces
exactly the literal's characters, so the comment and the rest of the file
keep their bytes.  A flag that the recipe's command passes itself
(``python train.py --lr 0.1``) overrides its default, so it is refused as a
knob: a trial is its code, and the command is the recipe's.

Everything here is pure: it reads and returns ``{path: bytes}`` snapshots.
"""

from __future__ import annotations

import ast
import math
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from mlflow_autoresearch._errors import UsageError
from mlflow_autoresearch._pysource import parse
from mlflow_autoresearch.recipe import Knob, Recipe


@dataclass(frozen=True)
class Site:
    """Where a knob's value is written: file, 1-based line, byte columns of the literal."""

    file: str
    line: int
    col: int
    end_col: int
    value: float | None  # None when the assigned expression is not a number literal
    text: str  # the assigned expression as written
    flag: str | None = None  # the argparse option (``--lr``) whose default this is; None: a module-level assignment

    @property
    def where(self) -> str:
        return f"{self.file} line {self.line}" + (f" (default of {self.flag})" if self.flag else "")


def _number(node: ast.expr) -> float | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        inner = _number(node.operand)
        if inner is not None:
            return -inner if isinstance(node.op, ast.USub) else inner
    return None


def _parsed(source: bytes, file: str) -> tuple[ast.Module, str]:
    """The tree and text of ``source``; a file that does not parse is a :class:`UsageError`."""
    try:
        tree = parse(source, file)
    except SyntaxError as e:
        raise UsageError(f"{file} does not parse (line {e.lineno}: {e.msg}); knobs cannot be checked") from None
    return tree, source.decode("utf-8", errors="replace")


def find_sites(source: bytes, file: str) -> dict[str, list[Site]]:
    """Every module-level (re)binding of a plain name in ``source``, by name.

    Raises:
        UsageError: the file does not parse.
    """
    tree, text = _parsed(source, file)
    sites: dict[str, list[Site]] = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign):
            targets, value = stmt.targets, stmt.value
        elif isinstance(stmt, (ast.AnnAssign, ast.AugAssign)):
            targets, value = [stmt.target], stmt.value
        else:
            continue
        for target in targets:
            if not isinstance(target, ast.Name):
                continue
            segment = (ast.get_source_segment(text, value) or "?") if value is not None else "(annotation only)"
            number = _number(value) if value is not None and len(targets) == 1 else None
            if isinstance(stmt, ast.AugAssign):
                number, segment = None, f"{target.id} {type(stmt.op).__name__} ..."
            single_line = value is not None and value.end_lineno == value.lineno
            sites.setdefault(target.id, []).append(Site(
                file=file,
                line=value.lineno if value is not None else stmt.lineno,
                col=value.col_offset if value is not None else 0,
                end_col=value.end_col_offset if single_line and value.end_col_offset is not None else -1,
                value=number if single_line else None,
                text=" ".join(segment.split())[:80],
            ))
    return sites


def _flag_dest(call: ast.Call) -> tuple[str, str] | None:
    """(dest, first long option) of an ``add_argument("--name", ...)`` call, else None."""
    options = [a.value for a in call.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
    longs = [o for o in options if o.startswith("--") and len(o) > 2]
    if not longs:
        return None
    dest = next((k.value.value for k in call.keywords if k.arg == "dest" and isinstance(k.value, ast.Constant)
                 and isinstance(k.value.value, str)), None)
    return (dest or longs[0][2:].replace("-", "_")), longs[0]


def find_flag_sites(source: bytes, file: str) -> dict[str, list[Site]]:
    """The ``default=`` of every argparse flag in ``source`` (anywhere in the file), by destination name.

    A flag counts when it is an ``<anything>.add_argument("--name", ..., default=...)`` call.

    Raises:
        UsageError: the file does not parse.
    """
    tree, text = _parsed(source, file)
    sites: dict[str, list[Site]] = {}
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "add_argument"):
            continue
        named = _flag_dest(node)
        default = next((k.value for k in node.keywords if k.arg == "default"), None)
        if named is None or default is None:
            continue
        dest, flag = named
        single_line = default.end_lineno == default.lineno
        segment = ast.get_source_segment(text, default) or "?"
        sites.setdefault(dest, []).append(Site(
            file=file, line=default.lineno, col=default.col_offset,
            end_col=default.end_col_offset if single_line and default.end_col_offset is not None else -1,
            value=_number(default) if single_line else None, text=" ".join(segment.split())[:80], flag=flag))
    return sites


def command_flags(command: str) -> dict[str, str]:
    """``--name`` options a command line passes, with the value given (``--lr 0.1``, ``--lr=0.1``)."""
    try:
        words = shlex.split(command)
    except ValueError:
        words = command.split()
    out: dict[str, str] = {}
    for i, w in enumerate(words):
        if w.startswith("--") and len(w) > 2:
            name, eq, value = w.partition("=")
            out[name] = value if eq else (words[i + 1] if i + 1 < len(words) else "")
    return out


def _python_files(files: Mapping[str, bytes], only: Iterable[str] | None = None) -> list[str]:
    allowed = set(only) if only is not None else None
    return sorted(rel for rel in files if rel.endswith(".py") and (allowed is None or rel in allowed))


def locate(files: Mapping[str, bytes], name: str, file: str | None = None,
           searched: Sequence[str] | None = None) -> Site:
    """The one site of knob ``name``; ``file`` pins it, else every ``searched`` (default: all .py) file.

    Raises:
        UsageError: missing, assigned more than once, or not a number literal.
    """
    candidates = [file] if file is not None else list(searched if searched is not None else _python_files(files))
    found: list[Site] = []
    for rel in candidates:
        if rel not in files:
            raise UsageError(f"knob {name}: file {rel} is not part of the trial's code")
        found += find_sites(files[rel], rel).get(name, [])
    if not found:  # an argparse default: --lr (or --LR) for knob lr
        for rel in candidates:
            flags = find_flag_sites(files[rel], rel)
            found += flags.get(name, []) or (flags.get(name.lower(), []) if name.lower() != name else [])
    where = ", ".join(candidates) or "no Python file"
    if not found:
        flag = "--" + name.lower().replace("_", "-")
        raise UsageError(f"knob {name}: missing: no module-level assignment `{name} = <number>` and no argparse "
                         f"flag `add_argument(\"{flag}\", default=<number>)` in {where}")
    if len(found) > 1:
        lines = ", ".join(s.where for s in found)
        how = "defined" if any(f.flag for f in found) else "assigned"
        raise UsageError(f"knob {name}: {how} {len(found)} times at module level ({lines}); "
                         "a knob must be assigned exactly once"
                         + (" (or name its file)" if len({s.file for s in found}) > 1 else ""))
    site = found[0]
    if site.value is None:
        verb = "defaults to" if site.flag else "assigns"
        raise UsageError(f"knob {name}: not numeric: {site.where} {verb} `{site.text}`, not a number literal")
    return site


def check_knobs(recipe: Recipe, files: Mapping[str, bytes], knobs: Iterable[Knob]) -> list[Knob]:
    """Check knobs against a trial's code before anything runs; return them with their file set.

    Each knob must be one module-level assignment of a number literal in an
    editable file (the knob's ``file``, else the only editable file that has
    it), an integer knob must hold an integer, and the current value must lie
    inside ``[low, high]``.  Every problem is reported at once.

    Raises:
        UsageError: naming each knob, its file and the problem (missing, not numeric, out of range).
    """
    resolved: list[Knob] = []
    problems: list[str] = []
    names: set[str] = set()
    editable = _python_files(files, recipe.editable)
    for knob in knobs:
        if knob.name in names:
            problems.append(f"knob {knob.name}: named twice")
            continue
        names.add(knob.name)
        if knob.file is not None and knob.file not in recipe.editable:
            problems.append(f"knob {knob.name}: {knob.file} is not an editable file of recipe {recipe.name} "
                            f"(editable: {', '.join(recipe.editable)})")
            continue
        try:
            site = locate(files, knob.name, knob.file, editable)
        except UsageError as e:
            problems.append(str(e))
            continue
        passed = command_flags(recipe.command).get(site.flag) if site.flag else None
        if passed is not None:
            problems.append(f"knob {knob.name}: the recipe's command passes {site.flag} {passed}, which overrides "
                            f"the default at {site.file} line {site.line}; to sweep it, remove {site.flag} from "
                            f"`command` in recipe.yaml and write {passed or 'its value'} as the default")
            continue
        value = site.value
        assert value is not None  # locate() refuses non-numeric sites
        if knob.integer and float(value) != math.floor(value):
            problems.append(f"knob {knob.name}: is an integer knob but {site.where} holds {site.text}")
        elif not knob.low <= value <= knob.high:
            problems.append(f"knob {knob.name}: out of range: the current value {site.text} ({site.where}) is "
                            f"outside [{knob.low:g}, {knob.high:g}]; a sweep's range must include the code's value")
        else:
            resolved.append(knob.model_copy(update={"file": site.file}))
    if problems:
        raise UsageError("refused before anything ran:\n  " + "\n  ".join(problems))
    return resolved


def current_values(files: Mapping[str, bytes], knobs: Iterable[Knob]) -> dict[str, float]:
    """The values the code holds now, for knobs returned by :func:`check_knobs`."""
    out: dict[str, float] = {}
    for k in knobs:
        value = locate(files, k.name, k.file).value
        assert value is not None
        out[k.name] = int(value) if k.integer else float(value)
    return out


def format_value(value: float, integer: bool = False) -> str:
    """The literal written into the code: an int, or a float with 6 significant digits."""
    if integer:
        return str(int(round(value)))
    text = f"{float(value):.6g}"
    if not any(c in text for c in ".eEn"):  # keep it a float literal: 2 -> 2.0
        text += ".0"
    return text


def set_knobs(files: Mapping[str, bytes], values: Mapping[str, float | str],
              knobs: Iterable[Knob] = ()) -> dict[str, bytes]:
    """A copy of ``files`` with each named constant set to its new value; nothing else changes.

    ``values`` maps knob names to numbers (formatted by :func:`format_value`)
    or to literal text.  ``knobs`` (optional) pins names to files and marks
    integer knobs; unpinned names are searched in every Python file.

    Raises:
        UsageError: a name is missing, ambiguous or not a number literal.
    """
    by_name = {k.name: k for k in knobs}
    edits: dict[str, list[tuple[Site, str]]] = {}
    for name, value in values.items():
        knob = by_name.get(name)
        site = locate(files, name, knob.file if knob else None)
        literal = value if isinstance(value, str) else format_value(value, bool(knob and knob.integer))
        edits.setdefault(site.file, []).append((site, literal))
    out = dict(files)
    for rel, changes in edits.items():
        lines = files[rel].splitlines(keepends=True)
        # Right to left, so two constants on one line (A = 1; B = 2) keep their columns.
        for site, literal in sorted(changes, key=lambda c: (c[0].line, c[0].col), reverse=True):
            line = lines[site.line - 1]
            lines[site.line - 1] = line[: site.col] + literal.encode() + line[site.end_col :]
        out[rel] = b"".join(lines)
    return out
