"""What a specialist receives and returns.  A specialist never runs code.

A backend implements :class:`Specialist`: given a :class:`ProposalContext`
(role, recipe, parent code, lineage), return a :class:`Proposal` whose
``files`` are the parent's snapshot with the edits applied.  A backend that
cannot produce a valid proposal returns one with ``invalid_reason`` set; the
loop records it as an ``invalid_proposal`` trial.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from mlflow_autoresearch.lineage import Lineage, LineageStore, TrialRecord
from mlflow_autoresearch.recipe import Knob, Recipe


@dataclass(frozen=True)
class Role:
    """A specialist role: its name, a one-line title and its domain brief."""

    name: str
    title: str
    brief: str


@dataclass(frozen=True)
class Edit:
    """Exact string replacement in one editable file."""

    file: str
    old: str
    new: str


@dataclass(frozen=True)
class Usage:
    """Model usage of one proposal, from the API's figures."""

    tokens_in: int = 0
    tokens_out: int = 0
    cache_read: int = 0
    cache_write: int = 0
    cost_usd: float = 0.0
    calls: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(*(a + b for a, b in zip(self.astuple(), other.astuple(), strict=True)))

    def astuple(self) -> tuple:
        return (self.tokens_in, self.tokens_out, self.cache_read, self.cache_write, self.cost_usd, self.calls)

    def metrics(self) -> dict[str, float]:
        return {"llm_cost_usd": self.cost_usd, "llm_tokens_in": float(self.tokens_in),
                "llm_tokens_out": float(self.tokens_out), "llm_cache_read_tokens": float(self.cache_read),
                "llm_cache_write_tokens": float(self.cache_write), "llm_calls": float(self.calls)}


@dataclass(frozen=True)
class Proposal:
    """A hypothesis and the code that tests it.  Immutable."""

    specialist: str
    hypothesis: str
    files: Mapping[str, bytes]
    expected_effect: str = ""
    edits: tuple[Edit, ...] = ()
    knobs: tuple[Knob, ...] = ()
    backend: str = "offline"
    usage: Usage = Usage()
    transcript: str | None = None  # JSON text of the agent session, logged as an artifact
    invalid_reason: str | None = None
    trace_id: str | None = None  # MLflow trace of the model calls; link it with specialists.link_trace


@dataclass(frozen=True)
class ProposalContext:
    """Everything a specialist may read for one proposal."""

    recipe: Recipe
    role: Role
    parent: TrialRecord
    parent_files: Mapping[str, bytes]
    lineage: Lineage
    store: LineageStore
    steering: str = ""  # the user's steering note, read fresh for every proposal
    saturation: str = ""  # a note when this role's recent trials moved the score less than the noise
    rng_seed: int = 0
    trace_run_id: str | None = None  # an MLflow run to link model-call traces to
    on_usage: Callable[[Usage], None] | None = field(default=None, compare=False)

    @property
    def parent_feedback(self) -> str:
        return self.parent.feedback


class Specialist(Protocol):
    """A backend.  Must be safe to call from several threads at once."""

    backend: str

    def propose(self, ctx: ProposalContext) -> Proposal: ...
