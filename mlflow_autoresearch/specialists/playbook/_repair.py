"""Repair moves that look at the failed parent's own change: move its numbers back, or undo it.

The failed parent's change is read as the difference between its code and its
own parent's code (the grandparent of the proposal).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping

from mlflow_autoresearch.specialists._base import Edit
from mlflow_autoresearch.specialists.playbook._catalogue import Candidate
from mlflow_autoresearch.specialists.playbook._source import Number, Rewriter, Setting, Source, show

BISECT = "bisect-back"


def changed_settings(parent: Source, grandparent: Source) -> list[tuple[Setting, Setting]]:
    """Settings whose numbers the parent changed: (parent's, grandparent's), same shape only."""
    before = {s.key: s for s in grandparent.settings}
    out = []
    for s in parent.settings:
        g = before.get(s.key)
        if g is None or len(g.literals) != len(s.literals) or g.value == s.value or s.is_bool != g.is_bool:
            continue
        out.append((s, g))
    return out


def _toward(new: Number, old: Number, frac: float, max_rel: float | None) -> Number:
    if isinstance(new, bool):
        return old
    step = frac * (old - new)
    if max_rel is not None and new != 0 and abs(step) > max_rel * abs(new):
        step = max_rel * abs(new) * (1 if old > new else -1)
    value = new + step
    if isinstance(new, int) and isinstance(old, int):
        stepped = int(round(value))
        if stepped == new:
            stepped = new + (1 if old > new else -1)
        return stepped
    return value


def bisect_back(parent: Source, grandparent: Source, frac: float, family: str,
                max_rel: float | None = None) -> Candidate | None:
    """Move every number the parent changed ``frac`` of the way back to the grandparent's value
    (by at most ``max_rel`` of its own value, when given: a near miss needs only a small step)."""
    pairs = changed_settings(parent, grandparent)
    if not pairs:
        return None
    rw, changes, notes = Rewriter(parent), [], []
    for s, g in pairs:
        olds = s.value if isinstance(s.value, tuple) else (s.value,)
        gps = g.value if isinstance(g.value, tuple) else (g.value,)
        news = tuple(_toward(n, o, frac, max_rel) for n, o in zip(olds, gps, strict=True))
        rw.set_literal(s, news)
        shown_new = news if len(news) > 1 else news[0]
        changes.append((s.label, s.value, shown_new))
        notes.append(f"{s.label} {show(s.value)} -> {show(shown_new)} (it was {show(g.value)} before)")
    share = "a quarter of the way" if frac <= 0.3 else "half way" if frac <= 0.6 else "all the way"
    if max_rel is not None:
        share += f" (at most {max_rel:.0%} of its value)"
    effects = frozenset({"quality", "stability", "faster", "cut", "smaller"})
    return Candidate(BISECT, family, effects, rw.edits(), f"move the failed change back {share}: " + ", ".join(notes),
                     "the failure goes away while keeping part of the change's gain", False, (), tuple(changes))


def revert_edits(parent: Source, parent_files: Mapping[str, bytes], grandparent_files: Mapping[str, bytes]
                 ) -> tuple[Edit, ...]:
    """Exact edits that turn the parent's editable files back into the grandparent's."""
    rw = Rewriter(parent)
    for rel in parent.recipe.editable:
        if rel not in parent_files or rel not in grandparent_files or parent_files[rel] == grandparent_files[rel]:
            continue
        if rel not in parent.texts:  # the parent's file does not parse: replace it whole
            old = parent_files[rel].decode(errors="replace")
            return (Edit(rel, old, grandparent_files[rel].decode(errors="replace")),) if old else ()
        a = parent.texts[rel].splitlines(keepends=True)
        b = grandparent_files[rel].decode(errors="replace").splitlines(keepends=True)
        starts = [0]
        for line in a:
            starts.append(starts[-1] + len(line))
        for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
            if tag != "equal":
                rw.replace(rel, starts[i1], starts[i2], "".join(b[j1:j2]))
    return rw.edits()
