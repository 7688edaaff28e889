"""The loop's hooks into this package: arms, lessons and near-duplicates, behind one small object.

The loop calls :class:`Research` at five points (roles, the context of a
proposal, the duplicate check, tags of a new trial, after each finished
trial) and :meth:`Research.close` at the end; everything else lives here.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor

from mlflow_autoresearch._errors import UsageError
from mlflow_autoresearch.lineage import Lineage, LineageStore, MlflowStore, TrialRecord, code_digest
from mlflow_autoresearch.recipe import Recipe
from mlflow_autoresearch.research._analyst import Analyst, facts_analyst
from mlflow_autoresearch.research._arms import ARM_TAG, LOOP_SEED_TAG, Arm, parse_arm
from mlflow_autoresearch.research._book import book_of
from mlflow_autoresearch.research._dedup import DUPLICATE_OF, EFFECT_TAG, effect_digest, similar_sibling, twin_of
from mlflow_autoresearch.research._imports import import_lessons
from mlflow_autoresearch.research._lessons import Note, counted
from mlflow_autoresearch.specialists import Role, Usage

logger = logging.getLogger(__name__)

MAX_DUPLICATES_IN_A_ROW = 25  # refused duplicates cost no budget; this many in a row stops the loop


class Research:
    """Arms, lessons and duplicate checks for one loop.  Thread-safe."""

    def __init__(self, recipe: Recipe, store: LineageStore, *, arm: Arm | str | None = None, lessons_every: int = 0,
                 lessons_from: tuple[str, ...] = (), analyst: Analyst | None = None, owner: str = "",
                 seed: int = 0, echo: Callable[[str], None] | None = None,
                 on_usage: Callable[[Usage], None] | None = None) -> None:
        self.recipe, self.store = recipe, store
        self.arm = arm if isinstance(arm, Arm) else parse_arm(arm)
        self.every = lessons_every
        self.analyst = analyst or facts_analyst
        self.owner, self.seed = owner, seed
        self.echo = echo or (lambda m: logger.info("%s", m))
        self.on_usage = on_usage
        self.book = book_of(store)
        self.duplicates = 0  # refused, all told
        self._in_a_row = 0
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._writing: Future | None = None
        self._latest: Note | None = self.book.latest() if self.every else None
        self._imported = self._import(lessons_from)
        self._proposals = 0
        # The label of this configuration in tags and comparisons: the arm, and whether lessons are on.
        self.label = self.arm.name + (f"+lessons{lessons_every}" if lessons_every else "") + (
            "+imported" if lessons_from else "")
        self._tag_experiment()

    # ----- setup ------------------------------------------------------------------
    def _tag_experiment(self) -> None:
        if not isinstance(self.store, MlflowStore):
            return
        try:
            exp = self.store.client.get_experiment(self.store.experiment_id)
            if exp.tags.get(ARM_TAG) != self.label:
                self.store.client.set_experiment_tag(self.store.experiment_id, ARM_TAG, self.label)
            if LOOP_SEED_TAG not in exp.tags:
                self.store.client.set_experiment_tag(self.store.experiment_id, LOOP_SEED_TAG, str(self.seed))
        except Exception as e:  # a tag is a label for reports; never a reason to stop
            logger.warning("could not tag the experiment with its arm: %s", e)

    def _import(self, names: tuple[str, ...]) -> Note | None:
        if not names:
            return None
        if not isinstance(self.store, MlflowStore):
            raise UsageError("--lessons-from needs an MLflow tracking store (set --tracking-uri)")
        note = import_lessons(self.store.tracking_uri, names, self.recipe.metric.goal,
                              exclude=self.store.experiment_name)
        if note is None:
            return None
        have = self.book.latest(imported=True)
        if have is not None and have.sources == note.sources:
            return have
        written = self.book.write(note, self.owner or "import")
        self.echo(f"lessons: imported {len(note.sources)} item(s) from {', '.join(names)}")
        return written or note

    # ----- what a specialist reads -------------------------------------------------
    def roles(self, roster: list[Role]) -> list[Role]:
        return self.arm.roles(roster)

    def view(self, lineage: Lineage, parent: TrialRecord) -> Lineage:
        return self.arm.view(lineage, parent)

    def saturation(self, note: str) -> str:
        return "" if self.arm.hides_lineage else note  # the saturation note is read from the lineage

    def rng_seed(self) -> int:
        """The seed a proposal gets.  Without a lineage, a proposer cannot know what it tried before; the
        offline playbook then samples among its ranked moves (seeded per proposal), as a model would."""
        if not self.arm.hides_lineage:
            return self.seed
        with self._lock:
            self._proposals += 1
            n = self._proposals
        return int.from_bytes(hashlib.sha256(f"{self.seed}:{n}".encode()).digest()[:4], "big")

    def lessons(self) -> str:
        """The text every specialist reads: imported lessons, then this experiment's latest note."""
        if self.arm.hides_lineage:
            return ""
        with self._lock:
            parts = [n.text for n in (self._imported, self._latest) if n is not None]
        return "\n\n".join(parts)

    # ----- duplicates ---------------------------------------------------------------
    def trial_tags(self, files: Mapping[str, bytes]) -> dict[str, str]:
        return {EFFECT_TAG: effect_digest(files), ARM_TAG: self.label}

    def duplicate(self, lineage: Lineage, files: Mapping[str, bytes], parent: TrialRecord, hypothesis: str,
                  patch: str) -> tuple[TrialRecord | None, str] | None:
        """``(earlier trial or None, reason)`` when this proposal repeats an earlier one; None when it is new.

        Claims the effect digest, so that of two proposals in flight with the same effect only one runs.
        """
        digest = effect_digest(files)
        twin = twin_of(lineage, digest, code_digest(files))
        if twin is not None:
            same = "exact code" if twin.code_sha256 == code_digest(files) else "change in effect (same code after " \
                "normalising spacing, comments, number formatting and local names)"
            return twin, f"duplicate: the same {same} was already evaluated as {twin.short} ({twin.run_id})"
        kid = similar_sibling(lineage, self.store, parent, hypothesis, patch)
        if kid is not None:
            return kid, (f"duplicate: {kid.short} ({kid.run_id}) already measured this hypothesis with the same "
                         f"edits on the same parent {parent.short}")
        if not self.store.claim(f"effect/{digest}", uuid.uuid4().hex):
            return None, "duplicate: another proposal in flight submitted the same change"
        return None

    def refused(self, t: TrialRecord) -> bool:
        """Count a recorded proposal: True when it was a refused duplicate (no budget used)."""
        with self._lock:
            if t.tags.get(DUPLICATE_OF) is not None:
                self.duplicates += 1
                self._in_a_row += 1
                return True
            self._in_a_row = 0
            return False

    def stop_reason(self) -> str | None:
        if self._in_a_row >= MAX_DUPLICATES_IN_A_ROW:
            return f"{self._in_a_row} proposals in a row repeated earlier trials (refused without using the budget)"
        return None

    # ----- lessons --------------------------------------------------------------------
    def after_trial(self, lineage: Lineage) -> None:
        """Start writing the next note when K more trials were counted since the last one (in the background)."""
        if not self.every or self.arm.hides_lineage:
            return
        seen = len(counted(lineage))
        with self._lock:
            last = self._latest.trials_seen if self._latest else 0
            if seen - last < self.every or (self._writing is not None and not self._writing.done()):
                return
            if self.analyst is not facts_analyst:  # a model call: in the background, slots never wait for it
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(1, thread_name_prefix="analyst")
                self._writing = self._pool.submit(self._write, lineage)
                return
        self._write(lineage)  # counting facts takes milliseconds: the next proposal reads the new note

    def _write(self, lineage: Lineage) -> None:
        try:
            version = max((n.version for n in self.book.notes()), default=0) + 1
            note, usage = self.analyst(lineage, self.recipe, version)
            if self.on_usage and usage.calls:
                self.on_usage(usage)
            written = self.book.write(note, self.owner or "loop")
            if written is None:  # another loop wrote this version: read theirs
                written = self.book.latest()
            with self._lock:
                self._latest = written
            if written is not None:
                self.echo(f"lessons: v{written.version} by {written.author}, from {written.trials_seen} trials")
        except Exception as e:  # a note is a convenience; the trials are safe
            logger.warning("lessons: could not write a note: %s", e)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
