"""Where notes are kept: on the experiment, one MLflow run per version.

A note is a run of its experiment with the tag ``autoresearch.kind = lessons``
(never a trial: the lineage skips it), named ``lessons-v0003``, with the
note as its description (``mlflow.note.content``, shown in the UI) and as
the artifacts ``lessons/lessons.md`` and ``lessons/lessons.json``.  Versions
are claimed through the store, so two loops on one experiment never write the
same version.  An in-memory book serves the in-memory store.
"""

from __future__ import annotations

import json
import logging
import threading

from mlflow_autoresearch import schema as S
from mlflow_autoresearch.lineage import LineageStore, MlflowStore
from mlflow_autoresearch.research._lessons import Note

logger = logging.getLogger(__name__)

LESSONS_KIND = "lessons"
VERSION_TAG = S.PREFIX + "lessons_version"
SEEN_TAG = S.PREFIX + "lessons_trials"
AUTHOR_TAG = S.PREFIX + "lessons_author"
SOURCES_TAG = S.PREFIX + "lessons_sources"
NOTE_MD = "lessons/lessons.md"
NOTE_JSON = "lessons/lessons.json"


class LessonBook:
    """The notes of one experiment.  Thread-safe."""

    def __init__(self, store: LineageStore) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._notes: list[Note] = []  # in-memory stores only

    def notes(self) -> list[Note]:
        """Every note, oldest first."""
        if isinstance(self.store, MlflowStore):
            runs = self.store.client.search_runs(
                [self.store.experiment_id], f"tags.`{S.KIND}` = '{LESSONS_KIND}'", max_results=1000)
            notes = [_note(r) for r in runs]
            return sorted((n for n in notes if n is not None), key=lambda n: n.version)
        with self._lock:
            return list(self._notes)

    def latest(self, imported: bool = False) -> Note | None:
        """The newest note written here (``imported``: the newest imported one instead)."""
        notes = [n for n in self.notes() if (n.author == "imported") == imported]
        return notes[-1] if notes else None

    def write(self, note: Note, owner: str) -> Note | None:
        """Record ``note`` under the next free version; None when another loop holds that version."""
        version = max((n.version for n in self.notes()), default=0) + 1
        if not self.store.claim(f"lessons/v{version}", owner):
            return None
        note = Note(version, note.text, note.trials_seen, note.author, None, note.sources)
        if not isinstance(self.store, MlflowStore):
            with self._lock:
                self._notes.append(note)
            return note
        c = self.store.client
        run = c.create_run(self.store.experiment_id, run_name=f"lessons-v{version:04d}", tags={
            S.KIND: LESSONS_KIND, VERSION_TAG: str(version), SEEN_TAG: str(note.trials_seen),
            AUTHOR_TAG: note.author, SOURCES_TAG: S.clip(json.dumps(list(note.sources))),
            S.NOTE: S.clip(note.text)})
        rid = run.info.run_id
        c.log_text(rid, note.text, NOTE_MD)
        c.log_text(rid, json.dumps({"version": version, "trials_seen": note.trials_seen, "author": note.author,
                                    "sources": list(note.sources), "text": note.text}, indent=2), NOTE_JSON)
        c.set_terminated(rid)
        return Note(version, note.text, note.trials_seen, note.author, rid, note.sources)


def _note(run) -> Note | None:
    tags = run.data.tags
    try:
        return Note(int(tags[VERSION_TAG]), tags.get(S.NOTE, ""), int(tags.get(SEEN_TAG, "0")),
                    tags.get(AUTHOR_TAG, "facts"), run.info.run_id, tuple(json.loads(tags.get(SOURCES_TAG, "[]"))))
    except (KeyError, ValueError) as e:
        logger.debug("lessons run %s unreadable: %s", run.info.run_id, e)
        return None


def book_of(store: LineageStore) -> LessonBook:
    """The one book of ``store`` (kept on the store object, so in-memory notes live as long as it)."""
    book = getattr(store, "_autoresearch_lessons", None)
    if book is None:
        book = LessonBook(store)
        try:
            store._autoresearch_lessons = book  # type: ignore[attr-defined]
        except AttributeError:
            pass
    return book
