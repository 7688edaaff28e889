"""The parent's code as the playbook reads it, and span edits turned into exact replacements.

:class:`Source` parses the editable Python files once: their text, their AST
and every numeric or boolean *setting* a move may change (module and class
constants, ``int(os.environ.get("NAME", default))``, keyword overrides in a
module-level ``dict(...)``, string-keyed entries of a module-level dict
literal, ``add_argument("--name", default=...)``).

:class:`Rewriter` collects replacements of character spans of the parent's
text and turns them into :class:`~mlflow_autoresearch.specialists.Edit`\\ s
whose ``old`` text is whole lines, widened until it occurs exactly once, so
that they apply through an :class:`EditSession` like a model's edits would.
Both are immutable or per-proposal: nothing here is shared between threads.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace

from mlflow_autoresearch._pysource import parse
from mlflow_autoresearch.recipe import Recipe
from mlflow_autoresearch.specialists._base import Edit

Number = int | float | bool


@dataclass(frozen=True)
class Literal:
    """One literal in the source: ``start:end`` character offsets of its text (inside quotes for a string)."""

    start: int
    end: int
    value: Number
    quoted: bool = False


@dataclass(frozen=True)
class Setting:
    """A tunable value of the program: a number, a boolean, or a tuple of numbers."""

    file: str
    name: str  # the constant, keyword, dict key or option name as written
    owner: str  # "" at module level; the class, dict or env-var holder otherwise
    kind: str  # const | env | kw | dict | arg
    literals: tuple[Literal, ...]
    comment: str = ""  # the comment at the end of its line, if any

    @property
    def value(self) -> Number | tuple[Number, ...]:
        vals = tuple(lit.value for lit in self.literals)
        return vals[0] if len(vals) == 1 else vals

    @property
    def label(self) -> str:
        return f"{self.owner}.{self.name}" if self.owner and self.kind in ("kw", "dict", "class") else self.name

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.file, self.owner, self.name, self.kind)

    @property
    def is_bool(self) -> bool:
        return all(isinstance(lit.value, bool) for lit in self.literals)

    @property
    def is_int(self) -> bool:
        return all(isinstance(lit.value, int) and not isinstance(lit.value, bool) for lit in self.literals)


class Source:
    """Read-only view of the editable Python files of one snapshot."""

    def __init__(self, recipe: Recipe, files: Mapping[str, bytes]) -> None:
        self.recipe = recipe
        self.texts: dict[str, str] = {}
        self.trees: dict[str, ast.Module] = {}
        self._line_starts: dict[str, list[int]] = {}
        for rel in recipe.editable:
            if not rel.endswith(".py") or rel not in files:
                continue
            text = files[rel].decode(errors="replace")
            try:
                tree = parse(text, rel)
            except SyntaxError:
                continue  # a parent that does not parse offers no moves; repairs revert it instead
            self.texts[rel], self.trees[rel] = text, tree
            starts, pos = [0], 0
            for line in text.splitlines(keepends=True):
                pos += len(line)
                starts.append(pos)
            self._line_starts[rel] = starts
        # an option the recipe's command passes explicitly is not set by its argparse default
        passed = set(re.findall(r"--([A-Za-z][\w-]*)", f"{recipe.command} {recipe.preflight or ''}"))
        self.settings: tuple[Setting, ...] = tuple(
            _with_comment(self, s) for rel in self.texts for s in _settings(self, rel)
            if not (s.kind == "arg" and ({s.name, s.name.replace("_", "-")} & passed)))

    @property
    def all_text(self) -> str:
        return "\n".join(self.texts.values())

    def offset(self, rel: str, lineno: int, col: int) -> int:
        """Character offset of an AST position (``col`` counts UTF-8 bytes)."""
        start = self._line_starts[rel][lineno - 1]
        line = self.texts[rel][start : self._line_starts[rel][lineno]]
        return start + len(line.encode()[:col].decode(errors="replace"))

    def span(self, rel: str, node: ast.AST) -> tuple[int, int]:
        return (self.offset(rel, node.lineno, node.col_offset),  # type: ignore[attr-defined]
                self.offset(rel, node.end_lineno, node.end_col_offset))  # type: ignore[attr-defined]

    def segment(self, rel: str, node: ast.AST) -> str:
        a, b = self.span(rel, node)
        return self.texts[rel][a:b]

    def line_start(self, rel: str, lineno: int) -> int:
        return self._line_starts[rel][lineno - 1]

    def indent_of(self, rel: str, lineno: int) -> str:
        line = self.texts[rel][self._line_starts[rel][lineno - 1] : self._line_starts[rel][lineno]]
        return line[: len(line) - len(line.lstrip())]

    def find(self, name_patterns: Iterable[str]) -> list[Setting]:
        """Settings whose name fully matches one of the regexes (case-insensitive)."""
        patterns = [re.compile(p, re.IGNORECASE) for p in name_patterns]
        return [s for s in self.settings if any(p.fullmatch(s.name) for p in patterns)]

    def setting_named(self, rel: str, name: str) -> Setting | None:
        """The module-level constant ``name`` of ``rel``, when it is one."""
        return next((s for s in self.settings if s.file == rel and s.name == name and s.kind == "const"
                     and not s.owner), None)

    def calls(self, rel: str, *suffixes: str) -> list[ast.Call]:
        """Calls whose dotted function name ends with one of ``suffixes`` (``optim.SGD`` matches ``torch.optim.SGD``)."""
        out = []
        for node in ast.walk(self.trees[rel]):
            if isinstance(node, ast.Call):
                name = dotted(node.func)
                if name and any(name == s or name.endswith("." + s) for s in suffixes):
                    out.append(node)
        return sorted(out, key=lambda n: (n.lineno, n.col_offset))

    def name_uses(self, rel: str, name: str) -> int:
        return sum(1 for n in ast.walk(self.trees[rel]) if isinstance(n, ast.Name) and n.id == name)

    def first_toplevel_def(self, rel: str) -> int | None:
        """Line number where the first top-level ``def``/``class`` (with its decorators) starts."""
        for stmt in self.trees[rel].body:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                return min([stmt.lineno] + [d.lineno for d in stmt.decorator_list])
        return None

    def end_of_imports(self, rel: str) -> int | None:
        """Line number after the last top-level import."""
        last = None
        for stmt in self.trees[rel].body:
            if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                last = stmt.end_lineno
        return last


def dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


# ----- settings ---------------------------------------------------------------
def _number(node: ast.AST) -> Number | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        v = _number(node.operand)
        return -v if v is not None and not isinstance(v, bool) else None
    return None


def _literal(src: Source, rel: str, node: ast.AST) -> Literal | None:
    v = _number(node)
    if v is not None:
        a, b = src.span(rel, node)
        return Literal(a, b, v)
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        text = node.value.strip().replace("_", "")
        try:
            parsed: Number = int(text) if text.lstrip("-").isdigit() else float(text)
        except ValueError:
            return None
        if not math.isfinite(parsed):
            return None
        a, b = src.span(rel, node)
        raw = src.texts[rel][a:b]
        if raw[:1] in "'\"" and raw[1:2] != raw[:1]:  # a plain one-quote string: edit inside the quotes
            return Literal(a + 1, b - 1, parsed, quoted=True)
    return None


def _literals(src: Source, rel: str, node: ast.AST) -> tuple[Literal, ...] | None:
    one = _literal(src, rel, node) if not isinstance(node, ast.Constant) or not isinstance(node.value, str) else None
    if one is not None:
        return (one,)
    if isinstance(node, (ast.Tuple, ast.List)) and node.elts and len(node.elts) <= 8:
        lits = [_literal(src, rel, e) for e in node.elts]
        if all(lit is not None and not lit.quoted for lit in lits):
            return tuple(lits)  # type: ignore[arg-type]
    return None


def _env_default(src: Source, rel: str, node: ast.AST) -> tuple[str, Literal] | None:
    """``int(os.environ.get("NAME", default))`` and friends, with nested casts."""
    while isinstance(node, ast.Call) and dotted(node.func) in ("int", "float", "bool") and len(node.args) == 1:
        node = node.args[0]
    if (isinstance(node, ast.Call) and dotted(node.func) in ("os.environ.get", "os.getenv", "environ.get")
            and len(node.args) == 2 and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
        lit = _literal(src, rel, node.args[1])
        if lit is not None:
            return node.args[0].value, lit
    return None


def _settings(src: Source, rel: str) -> Iterator[Setting]:
    tree = src.trees[rel]
    bodies: list[tuple[str, list[ast.stmt]]] = [("", tree.body)]
    bodies += [(s.name, s.body) for s in tree.body if isinstance(s, ast.ClassDef)]
    for owner, body in bodies:
        for stmt in body:
            target, value = None, None
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
                target, value = stmt.targets[0].id, stmt.value
            elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
                target, value = stmt.target.id, stmt.value
            if target is None or value is None:
                continue
            kind = "class" if owner else "const"
            lits = _literals(src, rel, value)
            if lits is not None:
                yield Setting(rel, target, owner, kind, lits)
                continue
            env = _env_default(src, rel, value)
            if env is not None:
                yield Setting(rel, env[0], owner or target, "env", (env[1],))
                continue
            if isinstance(value, ast.Call) and dotted(value.func) == "dict" and not owner:
                for kw in value.keywords:
                    lits = _literals(src, rel, kw.value) if kw.arg else None
                    if lits is not None:
                        yield Setting(rel, kw.arg, target, "kw", lits)  # type: ignore[arg-type]
            if isinstance(value, ast.Dict) and not owner:
                yield from _dict_settings(src, rel, target, value)
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "add_argument"
                and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
                and node.args[0].value.startswith("--")):
            for kw in node.keywords:
                if kw.arg == "default":
                    lit = _literal(src, rel, kw.value)
                    if lit is not None and not lit.quoted:
                        yield Setting(rel, node.args[0].value[2:].replace("-", "_"), "", "arg", (lit,))


def _with_comment(src: Source, s: Setting) -> Setting:
    text = src.texts[s.file]
    end = s.literals[-1].end
    eol = text.find("\n", end)
    rest = text[end : len(text) if eol < 0 else eol]
    hash_at = rest.find("#")
    return replace(s, comment=rest[hash_at + 1 :].strip()) if hash_at >= 0 else s


def _dict_settings(src: Source, rel: str, owner: str, node: ast.Dict) -> Iterator[Setting]:
    for k, v in zip(node.keys, node.values, strict=True):
        if not (isinstance(k, ast.Constant) and isinstance(k.value, str)):
            continue
        if isinstance(v, ast.Dict):
            yield from _dict_settings(src, rel, f"{owner}.{k.value}", v)
            continue
        lits = _literals(src, rel, v)
        if lits is not None and not any(lit.quoted for lit in lits):
            yield Setting(rel, k.value, owner, "dict", lits)


# ----- numbers as code ----------------------------------------------------------
def format_number(value: Number, like: Number) -> str:
    """Python text for ``value`` in the type of ``like`` (an int stays an int, a float keeps a point)."""
    if isinstance(like, bool):
        return "True" if value else "False"
    if isinstance(like, int):
        return str(int(round(value)))
    text = f"{float(value):.4g}"
    if "e" in text:
        mant, exp = text.split("e")
        text = f"{mant}e{int(exp)}"
    elif "." not in text:
        text += ".0"
    return text


def show(value: Number | tuple[Number, ...]) -> str:
    """A value as it reads in a hypothesis."""
    if isinstance(value, tuple):
        return "(" + ", ".join(show(v) for v in value) + ")"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return format_number(value, value)
    return str(value)


# ----- span edits -------------------------------------------------------------------
class Rewriter:
    """Span replacements on one snapshot, turned into exact-replacement edits.  One per candidate."""

    def __init__(self, src: Source) -> None:
        self.src = src
        self._spans: dict[str, list[tuple[int, int, str]]] = {}

    def replace(self, rel: str, start: int, end: int, new: str) -> Rewriter:
        self._spans.setdefault(rel, []).append((start, end, new))
        return self

    def replace_node(self, rel: str, node: ast.AST, new: str) -> Rewriter:
        a, b = self.src.span(rel, node)
        return self.replace(rel, a, b, new)

    def insert_before_line(self, rel: str, lineno: int, text: str) -> Rewriter:
        pos = self.src.line_start(rel, lineno)
        return self.replace(rel, pos, pos, text)

    def set_literal(self, setting: Setting, values: tuple[Number, ...]) -> Rewriter:
        for lit, v in zip(setting.literals, values, strict=True):
            self.replace(setting.file, lit.start, lit.end, format_number(v, lit.value))
        return self

    @property
    def empty(self) -> bool:
        return not any(self._spans.values())

    def edits(self) -> tuple[Edit, ...]:
        """Exact replacements, in the order an EditSession must apply them.

        Raises:
            ValueError: two spans of the same file overlap.
        """
        out: list[Edit] = []
        for rel, spans in self._spans.items():
            text = self.src.texts[rel]
            ordered = sorted(spans, key=lambda s: (s[0], s[1]), reverse=True)
            for (a, b, _), (c, d, _) in zip(ordered, ordered[1:], strict=False):
                if d > a or (c == a and d == b):
                    raise ValueError(f"overlapping edits in {rel} at {c}:{d} and {a}:{b}")
            for start, end, new in ordered:  # last span first: earlier offsets stay valid
                old_text, new_text = _unique_context(text, start, end, new)
                if old_text != new_text:
                    out.append(Edit(rel, old_text, new_text))
                text = text[:start] + new + text[end:]
        return tuple(out)


def _unique_context(text: str, start: int, end: int, new: str) -> tuple[str, str]:
    """Whole lines around ``start:end``, widened until they occur once in ``text``."""
    lo = text.rfind("\n", 0, start) + 1
    if lo == start == len(text) and start > 0:
        lo = text.rfind("\n", 0, start - 1) + 1  # appending at the end: anchor on the last line
    last = end - 1 if end > start else start
    hi = text.find("\n", last)
    hi = len(text) if hi < 0 else hi + 1
    while True:
        old = text[lo:hi]
        if (old and text.count(old) == 1) or (lo == 0 and hi == len(text)):
            return old, text[lo:start] + new + text[end:hi]
        if lo > 0:
            lo = text.rfind("\n", 0, lo - 1) + 1
        if hi < len(text):
            nxt = text.find("\n", hi)
            hi = len(text) if nxt < 0 else nxt + 1
