"""Near-duplicate proposals, caught before evaluation.

Two proposals are the same change *in effect* when their code is equal after
normalising what cannot change a run: whitespace, comments, docstrings, the
spelling of numbers (``0.10``, ``1e-1``, ``1_0e-2``) and the names of local
variables and arguments of functions (renamed in order of first binding).
:func:`effect_digest` is that normal form's sha256; every trial carries it in
the tag ``autoresearch.effect_sha256``.  A proposal whose digest an earlier
trial has is refused, naming that trial.

Beyond that, a proposal on a parent whose already-measured child changed the
same lines (comments and spacing aside, every number equal) for a hypothesis
of nearly the same words is refused too (:func:`similar_sibling`).

A refused duplicate is recorded (visible, with ``autoresearch.duplicate_of``)
but does not use up the trial budget.  Pure functions; thread-safe.
"""

from __future__ import annotations

import ast
import builtins
import difflib
import hashlib
import re
from collections import Counter
from collections.abc import Mapping

from mlflow_autoresearch import schema as S
from mlflow_autoresearch.lineage import Lineage, LineageStore, TrialRecord
from mlflow_autoresearch.outcome import Outcome

EFFECT_TAG = S.PREFIX + "effect_sha256"
DUPLICATE_OF = S.PREFIX + "duplicate_of"
HYPOTHESIS_SIMILAR = 0.8  # word-sequence ratio of two hypotheses
LINES_SIMILAR = 0.9  # Jaccard of the normalised changed lines of two diffs
SIBLINGS = 20  # the newest measured children of the parent compared by text
_BUILTINS = frozenset(dir(builtins))
_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d[\d_]*\.?[\d_]*|\.\d[\d_]*)(?:[eE][-+]?\d+)?(?![\w.])")


class _Canon(ast.NodeTransformer):
    """Rename the locals and arguments of every function; drop docstrings; numbers are already values."""

    def __init__(self) -> None:
        self.scopes: list[dict[str, str]] = []

    def _function(self, node):
        names: dict[str, str] = {}
        args = node.args
        for a in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]:
            if a is not None:
                names.setdefault(a.arg, f"_a{len(names)}")
        declared = {n for s in ast.walk(node) if isinstance(s, (ast.Global, ast.Nonlocal)) for n in s.names}
        # Names bound anywhere inside (nested functions too: deterministic, which is all a normal form needs).
        for sub in ast.walk(node):
            if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store) and sub.id not in declared \
                    and sub.id not in names:
                names[sub.id] = f"_v{len(names)}"
        self.scopes.append(names)
        node.body = _strip_docstring(node.body)
        self.generic_visit(node)
        self.scopes.pop()
        for a in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]:
            if a is not None:
                a.arg = names.get(a.arg, a.arg)
        return node

    visit_FunctionDef = visit_AsyncFunctionDef = _function

    def visit_Lambda(self, node):
        return self.generic_visit(node)

    def visit_ClassDef(self, node):
        node.body = _strip_docstring(node.body)
        return self.generic_visit(node)

    def visit_Name(self, node):
        for scope in reversed(self.scopes):
            if node.id in scope:
                node.id = scope[node.id]
                break
        return node


def _strip_docstring(body: list) -> list:
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
            and isinstance(body[0].value.value, str):
        return body[1:] or [ast.Pass()]
    return body


def normal_form(source: str) -> str:
    """A Python file's normal form; the text itself (spacing squeezed) when it does not parse."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return " ".join(source.split())
    tree.body = _strip_docstring(tree.body)
    tree = _Canon().visit(tree)
    return ast.dump(tree, annotate_fields=False, include_attributes=False)


def effect_digest(files: Mapping[str, bytes]) -> str:
    """sha256 of the snapshot's normal form: equal for changes that are the same in effect."""
    h = hashlib.sha256()
    for rel in sorted(files):
        data = files[rel]
        text = normal_form(data.decode(errors="replace")) if rel.endswith(".py") else data.decode(errors="replace")
        h.update(rel.encode() + b"\0" + text.encode() + b"\0")
    return h.hexdigest()


def twin_of(lineage: Lineage, digest: str, code_sha: str) -> TrialRecord | None:
    """The earliest trial with this code (exactly or in effect), naming the original of a refused duplicate."""
    for t in lineage.trials:
        if t.outcome is Outcome.HARNESS_ERROR:
            continue  # never measured: its code may run again
        if t.code_sha256 == code_sha or t.tags.get(EFFECT_TAG) == digest:
            original = t.tags.get(DUPLICATE_OF)
            return lineage.by_id.get(original, t) if original else t
    return None


def _words(text: str) -> list[str]:
    text = re.sub(r"^[a-z][a-z0-9-]*:", "", text.strip().lower())  # an offline move id counts as words too
    return re.findall(r"[a-z]+|\d+(?:\.\d+)?", text)


def _changed_lines(patch: str) -> tuple[Counter, list[str]]:
    """The diff's changed lines, comments and spacing dropped: (their multiset, the numbers in them)."""
    lines: Counter = Counter()
    numbers: list[str] = []
    for line in patch.splitlines():
        if not line or line[0] not in "+-" or line.startswith(("+++", "---")):
            continue
        body = line[1:].split("#", 1)[0]
        body = " ".join(body.split())
        if not body:
            continue
        nums = [_canon_number(n) for n in _NUMBER.findall(body)]
        numbers += [line[0] + n for n in nums]
        lines[line[0] + _NUMBER.sub("N", body)] += 1
    return lines, sorted(numbers)


def _canon_number(text: str) -> str:
    try:
        v = float(text.replace("_", ""))
    except ValueError:
        return text
    return repr(int(v)) if v.is_integer() and abs(v) < 1e15 else repr(v)


def similar_sibling(lineage: Lineage, store: LineageStore, parent: TrialRecord, hypothesis: str,
                    patch: str) -> TrialRecord | None:
    """A measured child of ``parent`` whose hypothesis and diff say the same as this one's, or None."""
    if not patch.strip():
        return None
    mine, my_numbers = _changed_lines(patch)
    words = _words(hypothesis)
    kids = [t for t in lineage.children(parent.run_id) if t.finished and not t.tags.get(DUPLICATE_OF)
            and t.outcome is not Outcome.HARNESS_ERROR][-SIBLINGS:]
    for kid in reversed(kids):
        if difflib.SequenceMatcher(None, words, _words(kid.hypothesis)).ratio() < HYPOTHESIS_SIMILAR:
            continue
        theirs, their_numbers = _changed_lines(store.read_artifact(kid.run_id, S.PATCH) or "")
        if my_numbers != their_numbers:
            continue  # another value is another experiment
        union = sum((mine | theirs).values())
        if union and sum((mine & theirs).values()) / union >= LINES_SIMILAR:
            return kid
    return None
