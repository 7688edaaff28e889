"""A scripted stand-in for the model's judgement (the only fake): deterministic edits of the toy recipe.

Move k of the script, by the number of trials the lineage holds:
  0 mod 4: lower SCORE by 20% (an improvement)
  1 mod 4: raise SCORE (a regression, discarded)
  2 mod 4: insert a crash (crashed, a failure to repair)
  3 mod 4: lower SCORE by 10% and leave the gate alone
A move whose code the lineage already holds is skipped for the next one. A parent
that crashed is repaired by removing the crash line.

Proposals made side by side from one lineage may still coincide: the loop refuses
the later ones as duplicates without using up the budget, so tests count trials
with :func:`budget_trials`.
"""

from __future__ import annotations

import re
import time

from mlflow_autoresearch.lineage import code_digest
from mlflow_autoresearch.outcome import Outcome
from mlflow_autoresearch.research import DUPLICATE_OF
from mlflow_autoresearch.specialists import EditSession, Proposal, ProposalContext

CRASH = "raise RuntimeError('scripted crash')\n"


class ScriptedSpecialist:
    backend = "scripted"

    def __init__(self, delay: float = 0.0, **ignored) -> None:
        self.delay = delay

    def propose(self, ctx: ProposalContext) -> Proposal:
        time.sleep(self.delay)
        session = EditSession(ctx.recipe, ctx.parent_files)
        text = session.read("train.py")
        if ctx.parent.outcome is Outcome.CRASHED and CRASH in text:
            score = float(re.search(r"^SCORE = ([0-9.]+)", text, re.M).group(1))
            session.replace("train.py", CRASH, "")
            session.replace("train.py", f"SCORE = {score}", f"SCORE = {score * 0.95:.6f}")
            hyp = "repair: removed the line that crashed the parent, and SCORE -5%"
        else:
            score = float(re.search(r"^SCORE = ([0-9.]+)", text, re.M).group(1))
            start = len(ctx.lineage.trials) % 4
            for k in (start, *(m for m in range(4) if m != start)):  # like a model that reads the lineage:
                session = EditSession(ctx.recipe, ctx.parent_files)  # a move already tried on this code is skipped
                if k == 2:
                    session.replace("train.py", "import os\n", "import os\n" + CRASH)
                    hyp = "insert a crash (scripted failure)"
                else:
                    new = {0: score * 0.8, 1: score * 1.5, 3: score * 0.9}[k]
                    session.replace("train.py", f"SCORE = {score}", f"SCORE = {new:.6f}")
                    hyp = f"set SCORE from {score} to {new:.6f}"
                if not ctx.lineage.has_code(code_digest(session.files)):
                    break
        return Proposal(specialist=ctx.role.name, hypothesis=hyp, files=session.files, edits=tuple(session.edits),
                        backend=self.backend)


def budget_trials(trials) -> list:
    """The trials a loop's budget counts: not the baseline, not a refused duplicate."""
    return [t for t in trials if t.specialist != "baseline" and DUPLICATE_OF not in t.tags]
