"""Rendering a model-backed specialist's prompts from the template files.

Shared by every backend that talks to a model.  The text lives in
``specialists/prompts/`` (``system.md``, ``turn.md``, ``messages.yaml``,
``tools.yaml``); this module only fills the placeholders.

- :func:`system_prompt` is the *stable prefix*: role brief, recipe summary
  (limits, gates, seeds, the noise margin) and knowledge notes.  It is the
  same for every proposal of one role once the baseline is measured, so a
  backend may cache it.
- :func:`first_turn` is the per-proposal message: steering note, lineage
  views, the parent's facts and feedback, the saturation note and the
  parent's editable code.

Pure functions of the :class:`ProposalContext`; thread-safe.
"""

from __future__ import annotations

import copy
from functools import cache
from pathlib import PurePosixPath
from typing import Any

import yaml

from mlflow_autoresearch._errors import HarnessError
from mlflow_autoresearch.recipe import Recipe
from mlflow_autoresearch.specialists._base import ProposalContext
from mlflow_autoresearch.specialists._roles import prompt

PARENT_FILE_CHARS = 60_000  # per editable file in the first turn; read_file shows the rest
KNOWLEDGE_CHARS = 20_000
LANGS = {".py": "python", ".yaml": "yaml", ".yml": "yaml", ".json": "json", ".sh": "bash", ".toml": "toml",
         ".md": "markdown", ".cfg": "ini"}


@cache
def _messages() -> dict[str, Any]:
    return yaml.safe_load(prompt("messages.yaml"))


def message(key: str, **values: Any) -> str:
    """A short model-facing text from ``prompts/messages.yaml``, formatted."""
    try:
        return _messages()[key].format(**values)
    except KeyError as e:
        raise HarnessError(f"prompts/messages.yaml: no text {key!r} or no value for {e}") from None


@cache
def _tools() -> tuple[dict[str, Any], ...]:
    return tuple(yaml.safe_load(prompt("tools.yaml")))


def tool_specs() -> list[dict[str, Any]]:
    """The tools offered to the model (a fresh copy the caller may annotate)."""
    return copy.deepcopy(list(_tools()))


def _render(template: str, values: dict[str, Any]) -> str:
    try:
        return prompt(template).format_map(values)
    except (KeyError, IndexError, ValueError) as e:
        raise HarnessError(f"prompts/{template}: cannot fill placeholder {e}") from None


def margin(ctx: ProposalContext) -> float:
    """One measurement's spread near the best, in the score's units (0 before anything was measured twice)."""
    return ctx.lineage.noise()


def _keep_rule(ctx: ProposalContext) -> str:
    """The keep rule in words, rounded so the cached system prompt changes rarely."""
    from mlflow_autoresearch.acceptance import DEFAULT_MIN_EFFECT

    spec, scale = ctx.recipe.acceptance, ctx.lineage.scale
    eff = DEFAULT_MIN_EFFECT[scale.kind] if spec.min_effect is None else spec.min_effect
    min_effect = f"{eff:.0%} of the score" if scale.kind == "relative" else f"{eff:g} {ctx.recipe.metric.name}"
    nm = ctx.lineage.noise_model
    noise = "an unknown amount (not measured yet)" if nm.sigma is None else (
        f"±{float(f'{nm.sigma * 100:.1g}'):g}%" if scale.kind == "relative" else f"±{nm.sigma:.1g}")
    return message("margin", confidence=spec.confidence, min_effect=min_effect, noise=noise)


def _limits(recipe: Recipe) -> str:
    texts = _messages()["limits"]
    lim = recipe.limits.model_dump()
    parts = [texts[k].format(value=lim[k]) for k in texts if lim.get(k) is not None]
    return "; ".join(parts) or _messages()["none"]


def system_prompt(ctx: ProposalContext) -> str:
    """The stable prefix: role, recipe, limits, gates, seeds, margin, knowledge."""
    r = ctx.recipe
    none = _messages()["none"]
    values = {
        "role_title": ctx.role.title,
        "role_brief": ctx.role.brief.strip(),
        "recipe_name": r.name,
        "recipe_description": r.description.strip() or _messages()["no_description"],
        "metric_name": r.metric.name,
        "metric_goal": r.metric.goal,
        "margin": _keep_rule(ctx),
        "gates": "; ".join(message("gate_near_miss", gate=g, band=g.near_miss) if g.near_miss
                           else message("gate", gate=g) for g in r.gates) or none,
        "limits": _limits(r),
        "seeds": r.seeds,
        "editable": ", ".join(r.editable),
        "protected": ", ".join(r.protected) or none,
        "command": r.command,
        "knowledge": r.knowledge_text(KNOWLEDGE_CHARS).strip() or _messages()["no_knowledge"],
    }
    return _render("system.md", values).strip() + "\n"


def file_block(path: str, text: str, limit: int = PARENT_FILE_CHARS) -> str:
    """One file in a fenced block, cut at ``limit`` characters with a note saying so."""
    body = text.rstrip("\n")
    if len(body) > limit:
        body = body[:limit] + message("file_truncated", omitted=len(body) - limit)
    return message("file_block", path=path, lang=LANGS.get(PurePosixPath(path).suffix, ""), text=body)


def first_turn(ctx: ProposalContext) -> str:
    """The per-proposal user message: steering, lineage views, the parent and its code."""
    p = ctx.parent
    code = "\n".join(file_block(rel, ctx.parent_files[rel].decode(errors="replace"))
                     for rel in ctx.recipe.editable if rel in ctx.parent_files)
    values = {
        "steering": message("steering", note=ctx.steering.strip()) if ctx.steering.strip() else "",
        "lineage": ctx.lineage.render(ctx.role.name),
        "parent_name": p.name,
        "parent_outcome": p.outcome.value if p.outcome else p.status,
        "parent_score": "—" if p.score is None else f"{p.score:.5g}",
        "parent_hypothesis": p.hypothesis or _messages()["no_hypothesis"],
        "parent_feedback": p.feedback.strip() or _messages()["no_feedback"],
        "saturation": message("saturation", note=ctx.saturation.strip()) if ctx.saturation.strip() else "",
        "parent_code": code,
    }
    return _render("turn.md", values).strip() + "\n"
