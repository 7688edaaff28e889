"""The offline playbook reads the lessons note: a move that helped elsewhere first, an exhausted family later."""

from __future__ import annotations

from mlflow_autoresearch.lineage import InMemoryStore, Lineage
from mlflow_autoresearch.recipe import load_recipe
from mlflow_autoresearch.specialists import ProposalContext, roster
from mlflow_autoresearch.specialists._offline import OfflineSpecialist
from mlflow_autoresearch.trial import recipe_files
from tests.specialists.test_offline import DIGITS, record


def propose(lessons: str = "", role: str = "architecture") -> str:
    recipe = load_recipe(DIGITS)
    store = InMemoryStore()
    base = record(store, recipe, recipe_files(recipe), specialist="baseline", hypothesis="baseline",
                  decision="baseline", metrics={"train_seconds": 6.0, "accuracy": 0.98})
    roles = {r.name: r for r in roster(recipe)}
    ctx = ProposalContext(recipe=recipe, role=roles[role], parent=base, parent_files=store.code(base.run_id),
                          lineage=Lineage.load(store, recipe.metric.goal), store=store, lessons=lessons)
    return OfflineSpecialist().propose(ctx).hypothesis


def test_an_imported_kept_change_is_tried_first_and_an_exhausted_family_later():
    plain = propose()
    first = plain.split(":", 1)[0]
    other = "shallower" if first != "shallower" else "narrower"
    imported = (f"  - t0005 (run 0123456789abcdef, architecture/{other}) score 3.2 (+22% against its parent): "
                f"{other}: ...")
    assert propose(imported).startswith(other + ":")
    assert propose("Looks exhausted (tried 3+ times, never kept): architecture. Try another.") != plain


def test_the_facts_note_counts_families_and_its_hints_round_trip():
    from mlflow_autoresearch.research._lessons import facts_note, hints

    recipe = load_recipe(DIGITS)
    store = InMemoryStore()
    base = record(store, recipe, recipe_files(recipe), specialist="baseline", hypothesis="baseline",
                  decision="baseline", metrics={"train_seconds": 6.0})
    files = recipe_files(recipe)
    for i, (hyp, outcome, decision, secs) in enumerate([
            ("center-inputs: rescaled the inputs", "ok", "discard", 6.6),
            ("label-smoothing: label smoothing 0.1", "gate_failed", "discard", None),
            ("shift-augment: augment the training set", "crashed", "discard", None),
            ("shallower: one layer less", "ok", "keep", 4.5)]):
        changed = {**files, "train.py": files["train.py"] + f"\n# variant {i}\n".encode()}
        record(store, recipe, changed, parent=base, specialist="data" if i < 3 else "architecture",
               hypothesis=hyp, outcome=outcome, decision=decision,
               metrics={"train_seconds": secs} if secs else {})
    note = facts_note(Lineage.load(store, "minimize"), "train_seconds", 2)
    assert note.text.startswith("Lessons v2, from 4 trial(s); best t0004 train_seconds 4.5 (baseline 6).")
    assert "- architecture: tried 1; kept 1; typical effect +25%" in note.text
    assert "- data: tried 3; kept 0; typical effect -10%; typical failure" in note.text
    helped, tired = hints(note.text)
    assert "shallower" in helped and tired == {"data"}
