"""Near-duplicates are refused before evaluation, name the earlier trial, and cost no budget."""

from __future__ import annotations

from mlflow_autoresearch.lineage import InMemoryStore
from mlflow_autoresearch.loop import run_loop
from mlflow_autoresearch.outcome import Outcome
from mlflow_autoresearch.recipe import load_recipe
from mlflow_autoresearch.research import DUPLICATE_OF, effect_digest
from mlflow_autoresearch.settings import make_settings
from mlflow_autoresearch.specialists import EditSession, Proposal, ProposalContext

TRAIN = """\
import os


def scale(value, factor):
    '''Scale a value.'''
    result = value * factor
    return result


SCORE = scale(0.5, 1.0)  # what this toy prints
print(f"loss: {SCORE}")
print(f"accuracy: 0.9")
"""


def digest(text: str) -> str:
    return effect_digest({"train.py": text.encode()})


def test_renamed_locals_reformatted_numbers_comments_and_docstrings_are_the_same_change():
    same = (TRAIN.replace("value", "v").replace("result", "out").replace("factor", "k")
            .replace("1.0", "1.").replace("0.5", "5e-1").replace("# what this toy prints", "")
            .replace("    '''Scale a value.'''\n", "").replace("value * factor", "value*factor"))
    assert same != TRAIN
    assert digest(same) == digest(TRAIN)


def test_another_value_or_a_renamed_global_is_another_change():
    assert digest(TRAIN.replace("0.5", "0.6")) != digest(TRAIN)
    assert digest(TRAIN.replace("1.0", "1")) != digest(TRAIN), "an int is not a float: the program may differ"
    assert digest(TRAIN.replace("SCORE", "LOSS")) != digest(TRAIN), "module names are the recipe's interface"


class Repeater:
    """Proposes SCORE 0.4, then the same in other words (twice), then 0.3, 0.2, ..."""

    backend = "scripted"
    texts = ["SCORE = 0.4", "SCORE = 4e-1  # the same, written otherwise", "SCORE = 0.40",
             "SCORE = 0.3", "SCORE = 0.2", "SCORE = 0.1"]

    def __init__(self) -> None:
        self.calls = 0

    def propose(self, ctx: ProposalContext) -> Proposal:
        s = EditSession(ctx.recipe, ctx.parent_files)
        text = s.read("train.py")
        line = next(ln for ln in text.splitlines() if ln.startswith("SCORE ="))
        new = self.texts[min(self.calls, len(self.texts) - 1)]
        self.calls += 1
        if line != new:
            s.replace("train.py", line, new)
        return Proposal(specialist=ctx.role.name, hypothesis=f"set {new}", files=s.files, backend=self.backend)


def test_a_reformatted_repeat_is_refused_naming_the_earlier_trial_and_uses_no_budget(toy_recipe):
    recipe = load_recipe(toy_recipe)
    store = InMemoryStore()
    settings = make_settings(trials=3, in_process=True, proposals_ahead=0)
    result = run_loop(recipe, settings, store=store, specialist=Repeater(), echo=lambda m: None)
    trials = store.trials()
    dups = [t for t in trials if DUPLICATE_OF in t.tags]
    first = next(t for t in trials if t.hypothesis == "set SCORE = 0.4")
    assert len(dups) == 2
    for d in dups:
        assert d.outcome is Outcome.INVALID_PROPOSAL
        assert d.tags[DUPLICATE_OF] == first.run_id
        assert first.short in d.reason and "normalising" in d.reason
        assert "train_seconds" not in d.metrics, "refused before evaluation"
    assert result.trials == 3 and len(trials) == 1 + 3 + 2, "three trials of budget besides the two refused"


def test_the_same_edit_in_another_place_with_the_same_hypothesis_is_a_sibling_duplicate(toy_recipe):
    from mlflow_autoresearch import schema as S
    from mlflow_autoresearch.lineage import Lineage
    from mlflow_autoresearch.research._dedup import similar_sibling
    from mlflow_autoresearch.trial import create_trial, make_patch

    recipe = load_recipe(toy_recipe)
    store = InMemoryStore()
    base_files = {"train.py": TRAIN.encode()}
    base = create_trial(store, recipe, base_files, specialist="baseline", hypothesis="baseline")
    base = store.record_result(base.run_id, tags={S.OUTCOME: "ok", S.DECISION: "baseline"}, metrics={},
                               artifacts={})

    def variant(text: str, hypothesis: str, record: bool):
        files = {"train.py": text.encode()}
        if record:
            t = create_trial(store, recipe, files, specialist="systems", hypothesis=hypothesis, parent=base,
                             parent_files=base_files)
            store.record_result(t.run_id, tags={S.OUTCOME: "ok", S.DECISION: "discard"}, metrics={}, artifacts={})
        return make_patch(base_files, files)

    threads = "THREADS = 2  # torch threads\n"
    variant(TRAIN.replace("import os\n", "import os\n" + threads), "more threads: use 2 intra-op threads", True)
    lineage = Lineage.load(store, "minimize")
    moved = TRAIN.replace('print(f"accuracy', threads.replace("  # torch threads", "") + 'print(f"accuracy')
    again = variant(moved, "More threads: use 2 intra-op threads.", False)
    assert digest(moved) != digest(TRAIN.replace("import os\n", "import os\n" + threads)), "not caught by the AST"
    kid = similar_sibling(lineage, store, base, "More threads: use 2 intra-op threads.", again)
    assert kid is not None and kid.hypothesis.startswith("more threads")
    other = variant(moved.replace("= 2", "= 4"), "more threads: use 4 intra-op threads", False)
    assert similar_sibling(lineage, store, base, "more threads: use 4 intra-op threads", other) is None
    assert similar_sibling(lineage, store, base, "fewer threads to cut contention", again) is None
