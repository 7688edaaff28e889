"""Lessons: a short, bounded note of what the lineage has taught so far.

Every K trials an analyst (the paper's "meta" role) writes a :class:`Note`;
every specialist reads the latest one in its prompt.  The deterministic
analyst, :func:`facts_note`, writes it from the facts alone, per family of
change: how often it was tried and kept, its typical effect on the score
against the parent, its typical failure, and whether it looks exhausted.
A model-backed analyst (:mod:`._analyst`) rewrites that note with judgement.

Pure functions of a lineage snapshot; thread-safe.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from mlflow_autoresearch.lineage import Lineage, TrialRecord
from mlflow_autoresearch.outcome import Outcome
from mlflow_autoresearch.research._dedup import DUPLICATE_OF

NOTE_CHARS = 3000  # a note is at most this long, whoever writes it
EXHAUSTED_AFTER = 3  # tries of a family with none kept
_MOVE = re.compile(r"\b([a-z][a-z0-9]*(?:-[a-z0-9]+)+|[a-z]{3,}):")


@dataclass(frozen=True)
class Note:
    """One version of the lessons of an experiment.  Immutable."""

    version: int
    text: str
    trials_seen: int  # counted trials (finished, not the baseline, not refused duplicates) when written
    author: str = "facts"  # facts | claude:<model> | imported
    run_id: str | None = None
    sources: tuple[str, ...] = field(default=())  # where imported lessons came from


def bound(text: str, limit: int = NOTE_CHARS) -> str:
    text = text.strip()
    if len(text) <= limit:
        return text
    return text[:limit].rsplit("\n", 1)[0] + "\n… (note truncated)"


def counted(lineage: Lineage) -> list[TrialRecord]:
    """Trials a note speaks of: finished, not the baseline, not a refused duplicate, not a harness error."""
    return [t for t in lineage.finished if t.decision != "baseline" and not t.tags.get(DUPLICATE_OF)
            and t.outcome is not Outcome.HARNESS_ERROR]


def family_of(t: TrialRecord) -> tuple[str, str]:
    """(family, change) of a trial: the offline catalogue's family of its move, else its specialist's role."""
    from mlflow_autoresearch.specialists.playbook import catalogue

    cat = catalogue()
    known = {m.id: m.family for m in (*cat.moves, *cat.rewrites)}
    for move in _MOVE.findall(t.hypothesis or ""):
        if move in known:
            return known[move], move
    return t.specialist or "unknown", ""


def _pct(x: float) -> str:
    return f"{x:+.0%}"


def facts_note(lineage: Lineage, metric: str = "score", version: int = 1) -> Note:
    """The deterministic analyst's note over ``lineage``."""
    trials = counted(lineage)
    d = lineage.direction
    rows: dict[str, dict] = defaultdict(lambda: {"tried": 0, "kept": 0, "effects": [], "fails": Counter(),
                                                 "why": {}, "moves": Counter(), "best": None})
    for t in trials:
        fam, move = family_of(t)
        r = rows[fam]
        r["tried"] += 1
        r["moves"][move or t.specialist] += 1
        if t.decision == "keep":
            r["kept"] += 1
        parent = lineage.parent_score(t)
        if t.outcome is Outcome.OK and t.score is not None and parent:
            gain = d.gain(t.score, parent)
            if gain is not None:
                rel = gain / abs(parent)
                r["effects"].append(rel)
                if r["best"] is None or rel > r["best"][0]:
                    r["best"] = (rel, t)
        elif t.outcome is not None and t.outcome is not Outcome.OK:
            r["fails"][t.outcome.value] += 1
            why = (t.reason or "").split("\n", 1)[0]
            r["why"][t.outcome.value] = why.removeprefix(t.outcome.value + ":").strip()[:90]
    best, base = lineage.best, lineage.baseline
    head = f"Lessons v{version}, from {len(trials)} trial(s)"
    if best is not None and best.score is not None:
        head += f"; best {best.short} {metric} {best.score:.4g}"
        if base is not None and base.score is not None and best is not base:
            head += f" (baseline {base.score:.4g})"
    lines = [head + ".", "", "Per family of change (effect: median change of the score against the parent, "
             "positive is better; kept: beat the best by the margin):"]
    exhausted, helped = [], []
    for fam, r in sorted(rows.items(), key=lambda kv: (-kv[1]["kept"], -kv[1]["tried"], kv[0])):
        parts = [f"tried {r['tried']}", f"kept {r['kept']}"]
        if r["effects"]:
            parts.append(f"typical effect {_pct(statistics.median(r['effects']))}")
        if r["fails"]:
            kind, n = r["fails"].most_common(1)[0]
            why = r["why"].get(kind, "")
            parts.append(f"typical failure {kind} ×{n}" + (f" ({why})" if why else ""))
        moves = ", ".join(m for m, _ in r["moves"].most_common(4) if m)
        lines.append(f"- {fam}: " + "; ".join(parts) + (f". Changes: {moves}" if moves else ""))
        if r["tried"] >= EXHAUSTED_AFTER and r["kept"] == 0 and (not r["effects"] or
                                                                statistics.median(r["effects"]) <= 0):
            exhausted.append(fam)
        if r["best"] is not None and r["best"][0] > 0:
            rel, t = r["best"]
            helped.append((rel, f"{t.short} ({fam}) {_pct(rel)}: {' '.join(t.hypothesis.split())[:110]}"))
    if helped:
        lines += ["", "What helped most:"] + [f"- {text}" for _, text in sorted(helped, reverse=True)[:4]]
    if exhausted:
        lines += ["", f"Looks exhausted (tried {EXHAUSTED_AFTER}+ times, never kept, no typical gain): "
                  f"{', '.join(exhausted)}. "
                  "Try another kind of change, or a much bigger one."]
    if not rows:
        lines.append("- nothing measured yet")
    return Note(version=version, text=bound("\n".join(lines)), trials_seen=len(trials))


_HELPED = re.compile(r"^What helped most:\n((?:- .*\n?)+)", re.M)
_EXHAUSTED = re.compile(r"Looks exhausted \([^)]*\): ([a-z0-9_, -]+)\.")
_IMPORTED_MOVE = re.compile(r"\(run [0-9a-f]+, [\w-]+/([a-z0-9-]+)\)")


def hints(text: str) -> tuple[frozenset[str], frozenset[str]]:
    """``(moves that helped, families that look exhausted)`` named in notes this module writes.

    For a reader without judgement (the offline playbook): the moves of "What helped most" and of
    imported kept changes, and the families listed as exhausted.
    """
    if not text:
        return frozenset(), frozenset()
    helped: set[str] = set(_IMPORTED_MOVE.findall(text))
    for block in _HELPED.findall(text):
        helped.update(_MOVE.findall(block))
    tired = {f.strip() for m in _EXHAUSTED.findall(text) for f in m.split(",") if f.strip()}
    return frozenset(helped), frozenset(tired)
