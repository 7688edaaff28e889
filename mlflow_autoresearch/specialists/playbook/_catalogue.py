"""The move catalogue: numeric moves from ``catalogue.yaml`` plus the program rewrites.

A *move* is a named kind of change (``fewer-epochs``, ``sgd-to-adamw``); a
:class:`Candidate` is one move made concrete on one parent's code: its exact
edits and a hypothesis naming what changed.  :func:`candidates` lists every
candidate whose precondition holds on a :class:`Source`, in catalogue order.
Pure functions of their input; the loaded catalogue is immutable.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

from mlflow_autoresearch.specialists._base import Edit
from mlflow_autoresearch.specialists.playbook._source import Number, Rewriter, Setting, Source, show

logger = logging.getLogger(__name__)

EFFECTS = frozenset({"faster", "cut", "quality", "smaller", "stability", "slower", "memory"})


@dataclass(frozen=True)
class Candidate:
    """One move made concrete on one parent: edits, what changed, what to expect.  Immutable."""

    move: str
    family: str
    effects: frozenset[str]
    edits: tuple[Edit, ...]
    what: str  # exactly what changed, e.g. "EPOCHS 60 -> 30"
    expect: str
    structural: bool = False  # a program rewrite, not just a number
    also: tuple[str, ...] = ()  # further families that may use it
    changes: tuple[tuple[str, Number, Number], ...] = ()  # (setting, old, new) of numeric changes
    enables_cut: bool = False  # its gain shows only when paired with fewer steps (e.g. a faster-converging optimizer)
    variant: str = ""  # which of a numeric move's values, e.g. "x0.5"
    order: int = 0

    @property
    def families(self) -> tuple[str, ...]:
        return (self.family, *self.also)

    def hypothesis(self, prefix: str = "", suffix: str = "", expect: str | None = None) -> str:
        """``move: [prefix]what[suffix]; expect ...``: the move's id first, so the lineage can be read back."""
        return f"{self.move}: {prefix}{self.what}{suffix}; expect {expect or self.expect}"


# ----- the catalogue file ---------------------------------------------------------
@dataclass(frozen=True)
class Concept:
    name: str
    patterns: tuple[str, ...]
    type: str = "number"
    min: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class NumericMove:
    id: str
    family: str
    concept: str
    op: str
    values: tuple[Any, ...]
    effects: frozenset[str]
    what: str
    expect: str
    also: tuple[str, ...] = ()
    count_values: tuple[Any, ...] = ()
    if_zero: bool = False
    with_lr: str | None = None
    round: int = 1
    when: str | None = None
    unless: str | None = None
    multiple_of: str | None = None
    divides: str | None = None


@dataclass(frozen=True)
class Catalogue:
    concepts: dict[str, Concept]
    moves: tuple[NumericMove, ...]
    roles: dict[str, tuple[str, ...]]
    family_keywords: dict[str, tuple[str, ...]]
    rewrites: tuple[Rewrite, ...] = field(default=())
    unordered_roles: frozenset[str] = frozenset()

    @property
    def families(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for m in (*self.moves, *self.rewrites):
            seen[m.family] = None
            for f in m.also:
                seen[f] = None
        return tuple(seen)

    def move_ids(self) -> list[str]:
        return [m.id for m in self.moves] + [r.id for r in self.rewrites]


@lru_cache(maxsize=1)
def catalogue() -> Catalogue:
    """The shipped catalogue (loaded once; immutable)."""
    from mlflow_autoresearch.specialists.playbook import _rewrites

    data = yaml.safe_load(resources.files(__package__).joinpath("catalogue.yaml").read_text())
    concepts = {name: Concept(name, tuple(c["names"]), c.get("type", "number"), c.get("min"), c.get("max"))
                for name, c in data["concepts"].items()}
    moves = []
    for m in data["moves"]:
        effects = frozenset(m["effects"])
        if not effects <= EFFECTS or m["concept"] not in concepts:
            raise ValueError(f"catalogue.yaml: move {m['id']}: unknown effect or concept")
        moves.append(NumericMove(
            id=m["id"], family=m["family"], concept=m["concept"], op=m["op"], values=tuple(m["values"]),
            effects=effects, what=m["what"], expect=m["expect"], also=tuple(m.get("also", ())),
            count_values=tuple(m.get("count_values", ())), if_zero=bool(m.get("if_zero")),
            with_lr=m.get("with_lr"), round=int(m.get("round", 1)), when=m.get("when"), unless=m.get("unless"),
            multiple_of=m.get("multiple_of"), divides=m.get("divides")))
    ids = [m.id for m in moves] + [r.id for r in _rewrites.REWRITES]
    if len(set(ids)) != len(ids):
        raise ValueError("catalogue: duplicate move ids")
    return Catalogue(concepts, tuple(moves), {k: tuple(v) for k, v in data["roles"].items()},
                     {k: tuple(v) for k, v in data["family_keywords"].items()}, tuple(_rewrites.REWRITES),
                     frozenset(data.get("unordered_roles", ())))


# ----- program rewrites are registered here ----------------------------------------------
@dataclass(frozen=True)
class Rewrite:
    """A program rewrite: a function from the parent's code to zero or more candidates."""

    id: str
    family: str
    effects: frozenset[str]
    make: Callable[[Source], Iterable[Candidate]]
    also: tuple[str, ...] = ()


def rewrite(id: str, family: str, effects: Iterable[str], also: Iterable[str] = ()) -> Callable:
    """Decorator for a program rewrite in ``_rewrites.py``."""

    def deco(fn: Callable[[Source], Iterable[Candidate]]) -> Rewrite:
        return Rewrite(id, family, frozenset(effects), fn, tuple(also))

    return deco


# ----- numeric moves ------------------------------------------------------------------
FROZEN = re.compile(r"\bmust\b|do not (change|edit)|don't change|\bfixed\b", re.I)


def concept_settings(src: Source, concept: str) -> list[Setting]:
    """The settings of one concept, except those whose comment says they are fixed."""
    c = catalogue().concepts[concept]
    frozen = {s.name for s in src.settings if FROZEN.search(s.comment)}  # and its copies (e.g. in TINY)
    found = [s for s in src.find(c.patterns) if s.name not in frozen]
    if c.type == "bool":
        return [s for s in found if s.is_bool]
    return [s for s in found if not s.is_bool]


def _is_adam(src: Source) -> bool:
    return bool(re.search(r"\bAdam[W]?\b|_PlainAdamW|Muon\b|Lion\b", src.all_text))


def _new_value(v: Number, op: str, x: float, setting: Setting, concept: Concept, step: int) -> Number | None:
    if isinstance(v, bool):
        return None
    new = v * x if op == "scale" else v + x if op == "add" else x
    lo = concept.min if concept.min is not None else -math.inf
    hi = concept.max if concept.max is not None else math.inf
    if isinstance(v, int):
        new = int(round(new / step) * step) if step > 1 and v % step == 0 else int(round(new))
        if new == v and op != "set":
            new = v + (1 if x > (1 if op == "scale" else 0) else -1) * (step if v % step == 0 else 1)
    new = min(max(new, lo), hi)
    if isinstance(v, int):
        new = int(new)
    return None if new == v else new


def _fits(src: Source, s: Setting, vals: list, move: NumericMove) -> bool:
    """The ``multiple_of`` / ``divides`` constraints against the same owner's setting of that concept."""
    for concept, test in ((move.multiple_of, lambda v, h: v % (2 * h) == 0), (move.divides, lambda v, h: h % v == 0)):
        if not concept:
            continue
        for other in concept_settings(src, concept):
            if other.owner == s.owner and other.file == s.file and other.is_int and isinstance(other.value, int):
                if not all(isinstance(v, int) and v > 0 and test(v, other.value) for v in vals):
                    return False
    return True


def numeric_candidates(src: Source, move: NumericMove) -> list[Candidate]:
    cat = catalogue()
    concept = cat.concepts[move.concept]
    if move.when and not re.search(move.when, src.all_text):
        return []
    if move.unless and re.search(move.unless, src.all_text):
        return []
    settings = concept_settings(src, move.concept)
    if not settings:
        return []
    mains = {s.name for s in settings if not s.owner}
    out = []
    for i, x in enumerate(move.values):
        rw, changes = Rewriter(src), []
        for s in settings:
            if move.op == "set" and s.owner and s.name in mains:
                continue  # a profile's override (TINY.X) may differ on purpose: "set" changes the main value only
            old = s.value
            olds = old if isinstance(old, tuple) else (old,)
            if concept.type == "bool":
                if move.op != "set" or bool(old) == bool(x):
                    continue
                news: tuple[Number, ...] | None = (bool(x),)
            elif move.op == "set" and move.if_zero:
                if any(o != 0 for o in olds):
                    continue
                count_like = s.is_int or re.search(r"steps|iters|epochs", s.name, re.I)
                target = move.count_values[i] if count_like and move.count_values else x
                news = tuple(target for _ in olds)
                if s.is_int:
                    news = tuple(int(round(t)) for t in news)
            else:
                if move.op == "scale" and all(o == 0 for o in olds):
                    continue
                vals = [_new_value(o, move.op, x, s, concept, move.round) for o in olds]
                if any(v is None for v in vals) or not _fits(src, s, vals, move):
                    continue
                news = tuple(vals)  # type: ignore[arg-type]
            rw.set_literal(s, news)
            changes.append((s.label, old, news if len(news) > 1 else news[0]))
        if not changes:
            continue
        lr_note = ""
        if move.with_lr:
            factor = float(x)
            if move.with_lr == "sqrt" or (move.with_lr == "auto" and _is_adam(src)):
                factor, rule = math.sqrt(factor), "square-root"
            else:
                rule = "linear"
            lrs = [s for s in concept_settings(src, "lr") if s.key not in {c.key for c in settings}]
            for s in lrs:
                olds = s.value if isinstance(s.value, tuple) else (s.value,)
                if any(isinstance(o, bool) for o in olds):
                    continue
                news = tuple(o * factor for o in olds)
                rw.set_literal(s, news)
                changes.append((s.label, s.value, news if len(news) > 1 else news[0]))
            if lrs:
                lr_note = f" ({rule} learning-rate scaling)"
        try:
            edits = rw.edits()
        except ValueError as e:
            logger.debug("move %s: %s", move.id, e)
            continue
        what = f"{move.what}: " + ", ".join(f"{label} {show(o)} -> {show(n)}" for label, o, n in changes) + lr_note
        variant = {"scale": "x", "add": "+", "set": "="}[move.op] + show(x)
        out.append(Candidate(move.id, move.family, move.effects, edits, what, move.expect, False, move.also,
                             tuple(changes), variant=variant))
    return out


def numeric_variant(src: Source, move_id: str, variant: str) -> Candidate | None:
    """One variant (e.g. ``x0.5``) of a numeric move on ``src``, when it applies."""
    move = next((m for m in catalogue().moves if m.id == move_id), None)
    if move is None:
        return None
    return next((c for c in numeric_candidates(src, move) if c.variant == variant), None)


def candidates(src: Source) -> list[Candidate]:
    """Every candidate of the catalogue on ``src``, numbered in catalogue order (rewrites first)."""
    cat = catalogue()
    found: list[Candidate] = []
    for r in cat.rewrites:
        try:
            made = list(r.make(src))
        except (ValueError, KeyError, IndexError, AttributeError) as e:  # a matcher that does not fit this code
            logger.debug("rewrite %s does not apply: %s", r.id, e)
            continue
        found.extend(made)
    for m in cat.moves:
        found.extend(numeric_candidates(src, m))
    return [_renumber(c, i) for i, c in enumerate(found)]


def _renumber(c: Candidate, i: int) -> Candidate:
    return replace(c, order=i)
