"""Ablation arms: the same loop with one thing taken away, as the paper measured them.

- ``default``: the recipe's roster, each specialist reading the whole lineage.
- ``lineage-off``: the same roster, but each specialist sees only its parent trial
  (its code, hypothesis and feedback), no other trial, view or saturation note.
- ``generalist``: one role whose brief is every brief of the roster.
- ``generic:N``: N unnamed roles with the same domain-free brief.

Each arm names its own experiment by default (``<recipe>-<arm>``), so arms
run side by side on one server, each with as many loops as wanted; the
experiment and every trial carry the tag ``autoresearch.arm``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

import yaml

from mlflow_autoresearch import schema as S
from mlflow_autoresearch._errors import UsageError
from mlflow_autoresearch.lineage import Lineage, TrialRecord
from mlflow_autoresearch.specialists import Role

ARM_TAG = S.PREFIX + "arm"
LOOP_SEED_TAG = S.PREFIX + "loop_seed"
ARMS = ("default", "lineage-off", "generalist", "generic:N")
_GENERIC = re.compile(r"^generic(?::(\d{1,3}))?$")


@cache
def texts() -> dict:
    return yaml.safe_load(resources.files(__package__).joinpath("arms.yaml").read_text())


@dataclass(frozen=True)
class Arm:
    """One arm of an ablation study.  Immutable."""

    kind: str  # default | lineage-off | generalist | generic
    n: int = 0  # roles of a generic arm

    @property
    def name(self) -> str:
        """The arm's name in tags and experiment names (``generic-10``, never with a colon)."""
        return f"generic-{self.n}" if self.kind == "generic" else self.kind

    @property
    def hides_lineage(self) -> bool:
        return self.kind == "lineage-off"

    def experiment(self, base: str) -> str:
        """The default experiment of this arm: the recipe's own for ``default``, else ``<base>-<arm>``."""
        return base if self.kind == "default" else f"{base}-{self.name}"

    def roles(self, roster: list[Role]) -> list[Role]:
        """The roles of this arm, from the recipe's roster."""
        t = texts()
        if self.kind == "generalist":
            brief = t["generalist"]["head"].strip() + "\n\n" + "\n\n".join(
                f"{r.title}:\n{r.brief.strip()}" for r in roster)
            return [Role("generalist", t["generalist"]["title"], brief)]
        if self.kind == "generic":
            return [Role(f"generic{i}", f"{t['generic']['title']} {i}", t["generic"]["brief"].strip())
                    for i in range(1, self.n + 1)]
        return list(roster)

    def view(self, lineage: Lineage, parent: TrialRecord) -> Lineage:
        """What a specialist of this arm reads of the lineage."""
        return HiddenLineage(parent, lineage) if self.hides_lineage else lineage


def parse_arm(text: str | None) -> Arm:
    """``default``, ``lineage-off``, ``generalist`` or ``generic:N`` (N from 1 to 100; ``generic`` is 10).

    Raises:
        UsageError: any other text, naming the arms on offer.
    """
    value = (text or "default").strip().lower()
    if value in ("default", "lineage-off", "generalist"):
        return Arm(value)
    m = _GENERIC.match(value) or re.match(r"^generic-(\d{1,3})$", value)
    if m:
        n = int(m.group(1) or 10)
        if 1 <= n <= 100:
            return Arm("generic", n)
    raise UsageError(f"--arm {text!r}: not an arm; use one of {', '.join(ARMS)} (N from 1 to 100)")


class HiddenLineage(Lineage):
    """The lineage as a lineage-off specialist sees it: only its parent.

    Every view says that the lineage is hidden; the noise of the baseline (a
    fact about the recipe's measurement, which the keep rule uses) is kept.
    """

    def __init__(self, parent: TrialRecord, full: Lineage) -> None:
        super().__init__([parent], "maximize" if full.direction.sign > 0 else "minimize")
        self._noise = full.noise()

    def noise(self) -> float:
        return self._noise

    def _hidden(self, *args, **kwargs) -> str:
        return texts()["hidden_lineage"].strip()

    leaderboard = best_path = best_children = recent = near_misses = counts = _hidden

    def render(self, role: str | None = None) -> str:
        return self._hidden()
