"""Analysts: who writes the lessons note.  The facts analyst always; Claude when the loop uses Claude.

:class:`ClaudeAnalyst` makes one Messages API call through the Claude
specialist's client, retry policy and price table (nothing else of that
backend is touched), with the prompt ``research/prompts/analyst.md``, and
rewrites the facts note with judgement.  Any failure falls back to the
facts note: a note is a convenience, never a reason to stop the loop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib import resources

from mlflow_autoresearch.lineage import Lineage
from mlflow_autoresearch.recipe import Recipe
from mlflow_autoresearch.research._lessons import NOTE_CHARS, Note, bound, facts_note
from mlflow_autoresearch.specialists import Usage

logger = logging.getLogger(__name__)

Analyst = Callable[[Lineage, Recipe, int], tuple[Note, Usage]]
ANALYST_MAX_TOKENS = 1500


def facts_analyst(lineage: Lineage, recipe: Recipe, version: int) -> tuple[Note, Usage]:
    return facts_note(lineage, recipe.metric.name, version), Usage()


def analyst_prompt(recipe: Recipe) -> str:
    text = resources.files(__package__).joinpath("prompts", "analyst.md").read_text()
    return text.format(recipe_name=recipe.name, metric_name=recipe.metric.name, metric_goal=recipe.metric.goal,
                       max_chars=NOTE_CHARS)


class ClaudeAnalyst:
    """The paper's "meta" role as one model call.  Thread-safe (one call per note)."""

    def __init__(self, specialist) -> None:
        self.specialist = specialist  # a ClaudeSpecialist: its client, model, retry policy and prices

    def __call__(self, lineage: Lineage, recipe: Recipe, version: int) -> tuple[Note, Usage]:
        from mlflow_autoresearch.specialists._retry import call_with_retries

        facts = facts_note(lineage, recipe.metric.name, version)
        s = self.specialist
        user = (f"## The facts, counted\n{facts.text}\n\n## The lineage\n{lineage.render()}\n\n"
                f"Write lessons note v{version} now.")
        try:
            resp = call_with_retries(lambda: s.client.messages.create(
                model=s.model, max_tokens=ANALYST_MAX_TOKENS, system=analyst_prompt(recipe),
                messages=[{"role": "user", "content": user}]), s.retry)
        except Exception as e:  # the facts note stands in; the loop goes on
            logger.warning("lessons: the Claude analyst failed (%s); writing the facts note instead", e)
            return facts, Usage()
        text = "".join(getattr(b, "text", "") for b in resp.content if getattr(b, "type", "") == "text").strip()
        u = resp.usage
        usage = Usage(tokens_in=u.input_tokens, tokens_out=u.output_tokens,
                      cost_usd=s.prices.cost(s.model, u.input_tokens, u.output_tokens), calls=1)
        if not text:
            return facts, usage
        return Note(version, bound(text), facts.trials_seen, f"claude:{s.model}"), usage


def analyst_for(agent: str, specialist) -> Analyst:
    """Claude for a Claude loop (through its specialist), else the facts analyst."""
    if agent == "claude" and getattr(specialist, "client", None) is not None:
        return ClaudeAnalyst(specialist)
    return facts_analyst
