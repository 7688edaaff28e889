"""Research tooling: ablation arms, lessons, near-duplicate checks, arm comparisons, transfer checks."""

from mlflow_autoresearch.research._arms import ARM_TAG, Arm, HiddenLineage, parse_arm
from mlflow_autoresearch.research._book import LessonBook, book_of
from mlflow_autoresearch.research._dedup import DUPLICATE_OF, EFFECT_TAG, effect_digest, normal_form
from mlflow_autoresearch.research._hooks import Research
from mlflow_autoresearch.research._imports import import_lessons
from mlflow_autoresearch.research._lessons import Note, facts_note

__all__ = [
    "ARM_TAG",
    "DUPLICATE_OF",
    "EFFECT_TAG",
    "Arm",
    "HiddenLineage",
    "LessonBook",
    "Note",
    "Research",
    "book_of",
    "effect_digest",
    "facts_note",
    "import_lessons",
    "normal_form",
    "parse_arm",
]
