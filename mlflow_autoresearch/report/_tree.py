"""Layout of the lineage tree: which trials get a node, and where.

A tree of a few hundred trials is unreadable drawn whole: most trials are
discarded leaves.  Above :data:`FULL_LIMIT` trials the layout keeps every
trial that tells the story (baseline, kept trials, the best path, repaired
failures, open near misses, and their ancestors) and folds the rest of each
parent's children into one "+N" node.  Depth runs left to right, siblings top
to bottom in trial order, except that the path to the best runs first: it is
the straight line along the top row.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from mlflow_autoresearch.lineage import Lineage, TrialRecord
from mlflow_autoresearch.report._facts import outcome_word

FULL_LIMIT = 80  # trials drawn one node each up to this many
STORY_LIMIT = 160  # nodes kept individually when folding; beyond it only the best kept ones stay


@dataclass
class Node:
    """One drawn node: a trial, or a fold of several discarded children of one parent."""

    key: str
    trial: TrialRecord | None
    parent: str | None
    folded: Counter = field(default_factory=Counter)  # outcome word -> count, for a fold
    children: list[str] = field(default_factory=list)
    x: float = 0.0  # depth
    y: float = 0.0  # row

    @property
    def size(self) -> int:
        return sum(self.folded.values()) if self.trial is None else 1


@dataclass
class TreeLayout:
    nodes: dict[str, Node]
    best_path: set[str]  # run ids
    folded_trials: int
    rows: int
    depth: int


def _story(lineage: Lineage, trials: list[TrialRecord]) -> set[str]:
    """Run ids that must stay visible, with their ancestors."""
    best_path = {t.run_id for t in lineage.path_to(lineage.best)}
    kept = lineage.kept  # best first
    must = set(best_path)
    roots = {t.run_id for t in trials if t.parent_id not in lineage.by_id}
    must |= roots
    must.update(t.run_id for t in kept)
    for t in trials:
        kids = lineage.children(t.run_id)
        if t.outcome is not None and t.outcome.value != "ok" and any(c.kept for c in kids):
            must.add(t.run_id)  # a repaired failure
        elif t.near_miss and not any(c.kept for c in kids):
            must.add(t.run_id)  # an open near miss
    if len(must) > STORY_LIMIT:  # keep the best kept ones and the best path; fold the rest
        must = best_path | roots
        for t in kept:
            if len(must) >= STORY_LIMIT:
                break
            must.add(t.run_id)
    closed = set()
    for rid in must:
        t = lineage.by_id.get(rid)
        while t is not None and t.run_id not in closed:
            closed.add(t.run_id)
            t = lineage.by_id.get(t.parent_id) if t.parent_id else None
    return closed


def layout(lineage: Lineage) -> TreeLayout:
    """Place the trials of ``lineage`` (all of them, or the story plus folds)."""
    trials = sorted(lineage.trials, key=lambda t: t.number)
    fold = len(trials) > FULL_LIMIT
    visible = _story(lineage, trials) if fold else {t.run_id for t in trials}
    nodes: dict[str, Node] = {}
    folded_trials = 0
    for t in trials:
        if t.run_id not in visible:
            continue
        parent = t.parent_id if t.parent_id in lineage.by_id else None
        nodes[t.run_id] = Node(t.run_id, t, parent)
    for t in trials:
        if t.run_id in visible:
            continue
        # climb to the nearest visible ancestor; the whole hidden subtree folds there
        anc = t
        while anc.parent_id and anc.parent_id in lineage.by_id and anc.parent_id not in visible:
            anc = lineage.by_id[anc.parent_id]
        owner = anc.parent_id if anc.parent_id in visible else None
        key = f"fold:{owner}"
        if key not in nodes:
            nodes[key] = Node(key, None, owner)
        nodes[key].folded[outcome_word(t)] += 1
        folded_trials += 1
    for n in nodes.values():
        if n.parent is not None and n.parent in nodes:
            nodes[n.parent].children.append(n.key)
    roots = [n.key for n in nodes.values() if n.parent is None or n.parent not in nodes]

    on_path = {t.run_id for t in lineage.path_to(lineage.best)}

    def order(key: str) -> tuple[int, int]:
        n = nodes[key]
        if n.trial is None:
            return (2, 0)  # folds last among siblings
        return (0 if key in on_path else 1, n.trial.number)

    for n in nodes.values():
        n.children.sort(key=order)
    roots.sort(key=order)

    # Leaves take consecutive rows; a parent sits on its first child's row.  The child on the best
    # path comes first, so the path from the baseline to the best is one straight line on top.
    row = 0
    depth = 0
    stack: list[tuple[str, int, bool]] = [(r, 0, False) for r in reversed(roots)]
    while stack:
        key, d, done = stack.pop()
        n = nodes[key]
        n.x = d
        depth = max(depth, d)
        if done:
            n.y = nodes[n.children[0]].y
            continue
        if not n.children:
            n.y = row
            row += 1
            continue
        stack.append((key, d, True))
        stack.extend((c, d + 1, False) for c in reversed(n.children))
    return TreeLayout(nodes, on_path, folded_trials, max(row, 1), depth)
