"""Tags as both stores write them: the tags of a new trial, and long values moved to artifacts.

MLflow cuts tag values over 8,000 characters without a word.  Both stores
clip instead, with :func:`~mlflow_autoresearch.schema.clip`'s marker, and keep
the full text as the artifact ``tags/<key>.txt`` of the same trial, so nothing
is lost and a reader of the tag knows it is shortened.
"""

from __future__ import annotations

from collections.abc import Mapping

from mlflow_autoresearch import schema as S
from mlflow_autoresearch.lineage._record import TrialDraft, code_digest

LONG_TAGS_DIR = "tags"
# Tags an agent reads in every view are kept shorter than MLflow's limit.
TAG_LIMITS = {S.HYPOTHESIS: 2000, S.EXPECTED: 2000, S.FEEDBACK: S.FEEDBACK_TAG_LIMIT, S.REASON: 1000}


def long_tag_artifact(key: str) -> str:
    """The artifact path that holds the full text of a clipped tag."""
    return f"{LONG_TAGS_DIR}/{key}.txt"


def split_long_tags(tags: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """``(tags to write, artifacts to write)``: each over-long value clipped with a marker, its full text kept."""
    out: dict[str, str] = {}
    full: dict[str, str] = {}
    for key, value in tags.items():
        value = str(value)
        limit = TAG_LIMITS.get(key, S.TAG_LIMIT)
        if len(value) > limit:
            full[long_tag_artifact(key)] = value
            value = S.clip(value, limit)
        out[key] = value
    return out, full


def trial_tags(draft: TrialDraft, number: int) -> dict[str, str]:
    """The tags every new trial starts with (both stores), before clipping."""
    tags = {
        S.KIND: "trial",
        S.TRIAL: str(number),
        S.SPECIALIST: draft.specialist,
        S.HYPOTHESIS: draft.hypothesis,
        S.EXPECTED: draft.expected_effect,
        S.BACKEND: draft.backend,
        S.WORKER: draft.worker,
        S.CODE_SHA: code_digest(draft.files),
    }
    if draft.parent_id:
        tags[S.PARENT] = draft.parent_id
    tags.update(draft.tags)
    return tags
