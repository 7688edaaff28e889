"""The lineage tree stays readable at hundreds of trials: the story stays, discarded leaves fold."""

from __future__ import annotations

import random

import numpy as np
import pytest
from PIL import Image

from mlflow_autoresearch import schema as S
from mlflow_autoresearch.lineage import InMemoryStore, Lineage, TrialDraft
from mlflow_autoresearch.report._facts import compute
from mlflow_autoresearch.report._plots import tree
from mlflow_autoresearch.report._tree import FULL_LIMIT, layout


def synthetic(n: int, seed: int = 0) -> InMemoryStore:
    """``n`` trials after a baseline: mostly children of the current best, some kept, some crashed."""
    rnd = random.Random(seed)
    store = InMemoryStore("synthetic")
    base = store.create_trial(TrialDraft(files={"a": b""}, specialist="baseline", hypothesis="baseline"))
    store.record_result(base.run_id, tags={S.OUTCOME: "ok", S.DECISION: "baseline", S.SCORE_NAME: "s"},
                        metrics={"s": 10.0, "train_seconds": 10.0, "seeds": 1}, artifacts={})
    best, scores = (base.run_id, 10.0), {base.run_id: 10.0}
    for i in range(n):
        parent = best[0] if rnd.random() < 0.7 else rnd.choice(list(scores))
        role = rnd.choice(["architecture", "optimization", "data", "systems"])
        t = store.create_trial(TrialDraft(files={"a": str(i).encode()}, specialist=role, hypothesis=f"idea {i}",
                                          parent_id=parent))
        if rnd.random() < 0.2:
            store.record_result(t.run_id, tags={S.OUTCOME: "crashed", S.DECISION: "discard"}, metrics={},
                                artifacts={})
            continue
        score = (scores[parent] or best[1]) * rnd.uniform(0.85, 1.2)
        keep = score < best[1] * 0.97
        store.record_result(t.run_id, tags={S.OUTCOME: "ok", S.DECISION: "keep" if keep else "discard",
                                            S.SCORE_NAME: "s"},
                            metrics={"s": score, "train_seconds": score, "seeds": 1}, artifacts={})
        scores[t.run_id] = score
        if keep:
            best = (t.run_id, score)
    return store


def test_small_lineage_draws_every_trial():
    lineage = Lineage(synthetic(30).trials(), "minimize")
    lay = layout(lineage)
    assert lay.folded_trials == 0 and len(lay.nodes) == 31


@pytest.mark.slow
def test_large_lineage_keeps_the_story_and_folds_the_rest(tmp_path):
    lineage = Lineage(synthetic(300).trials(), "minimize")
    lay = layout(lineage)
    shown = {k for k, n in lay.nodes.items() if n.trial is not None}
    folds = [n for n in lay.nodes.values() if n.trial is None]
    assert len(lineage.trials) == 301 > FULL_LIMIT
    assert lay.folded_trials > 100 and len(shown) + lay.folded_trials == 301
    assert sum(n.size for n in folds) == lay.folded_trials
    assert {t.run_id for t in lineage.kept} <= shown
    path = [t.run_id for t in lineage.path_to(lineage.best)]
    assert set(path) <= shown and len(path) > 5
    assert {lay.nodes[r].y for r in path} == {0}, "the path to the best is the top row"
    assert [lay.nodes[r].x for r in path] == list(range(len(path)))

    png = tree(compute(lineage.trials, "minimize", "synthetic"), tmp_path / "tree.png")
    with Image.open(png) as im:
        w, h = im.size
        px = np.asarray(im.convert("RGB"))
    assert h < 4500 and w < 5000, f"{w}x{h} is too big to read"
    assert px.std() > 20
