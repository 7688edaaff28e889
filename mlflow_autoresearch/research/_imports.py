"""``--lessons-from EXP``: the notes and kept changes of earlier experiments, each with its source.

The import is one note (author ``imported``) written to the new experiment
when its loop starts, so the UI shows what was carried over and from where;
every specialist reads it beside the experiment's own latest note.
"""

from __future__ import annotations

from mlflow_autoresearch import schema as S
from mlflow_autoresearch._errors import StoreError, UsageError
from mlflow_autoresearch.lineage import Lineage, MlflowStore
from mlflow_autoresearch.research._book import book_of
from mlflow_autoresearch.research._lessons import Note, bound, family_of

IMPORT_CHARS = 5000
KEPT_PER_SOURCE = 5


def _gain(lineage: Lineage, t) -> str:
    parent = lineage.parent_score(t)
    gain = lineage.direction.gain(t.score, parent) if parent else None
    return "" if gain is None or not parent else f" ({gain / abs(parent):+.0%} against its parent)"


def import_lessons(tracking_uri: str, names: list[str] | tuple[str, ...], goal: str, *,
                   exclude: str | None = None) -> Note | None:
    """One note holding the latest note and the best kept changes of each experiment in ``names``.

    Raises:
        UsageError: an experiment that does not exist (named, with the flag).
    """
    blocks, sources = [], []
    for name in names:
        if not name or name == exclude:
            continue
        try:
            store = MlflowStore(name, tracking_uri, create=False)
        except StoreError as e:
            raise UsageError(f"--lessons-from {name!r}: {e}") from None
        lineage = Lineage.load(store, goal)
        exp = store.client.get_experiment(store.experiment_id)
        recipe = next((t.tags.get(S.RECIPE) for t in lineage.trials if t.tags.get(S.RECIPE)), "?")
        head = f"From experiment {name!r} (id {store.experiment_id}, recipe {recipe}"
        head += f", arm {exp.tags['autoresearch.arm']}" if "autoresearch.arm" in exp.tags else ""
        lines = [head + f", {len(lineage.trials)} trials):"]
        note = book_of(store).latest()
        if note is not None:
            lines.append(f"  its lessons v{note.version} (run {note.run_id}):")
            lines += ["    " + line for line in note.text.splitlines() if line.strip()]
            sources.append(f"{name}:lessons-v{note.version}:{note.run_id}")
        kept = [t for t in lineage.kept if t.decision == "keep"][:KEPT_PER_SOURCE]
        if kept:
            lines.append("  its best kept changes:")
            for t in kept:
                fam, move = family_of(t)
                lines.append(f"  - {t.short} (run {t.run_id}, {fam}{'/' + move if move else ''}) score "
                             f"{t.score:.4g}{_gain(lineage, t)}: {' '.join(t.hypothesis.split())[:150]}")
                sources.append(f"{name}:{t.short}:{t.run_id}")
        if note is None and not kept:
            lines.append("  (no lessons and no kept changes there yet)")
        blocks.append("\n".join(lines))
    if not blocks:
        return None
    text = ("Imported from earlier experiments (on this recipe or a related one; check before you rely on "
            "them):\n" + "\n\n".join(blocks))
    return Note(0, bound(text, IMPORT_CHARS), 0, "imported", None, tuple(sources))
