"""Roles and prompts are data files; this module only loads them."""

from __future__ import annotations

from functools import cache
from importlib import resources

import yaml

from mlflow_autoresearch._errors import RecipeError
from mlflow_autoresearch.recipe import Recipe
from mlflow_autoresearch.specialists._base import Role

_PKG = "mlflow_autoresearch.specialists"


@cache
def builtin_roles() -> dict[str, Role]:
    """Every role shipped in ``specialists/roles/*.yaml``."""
    roles = {}
    for entry in resources.files(_PKG).joinpath("roles").iterdir():
        if entry.name.endswith(".yaml"):
            data = yaml.safe_load(entry.read_text())
            roles[data["name"]] = Role(data["name"], data["title"], data["brief"].strip())
    return roles


def roster(recipe: Recipe) -> list[Role]:
    """The recipe's roster: its own briefs first, then the shipped ones.

    Raises:
        RecipeError: a role with no brief anywhere, naming the roles on offer.
    """
    shipped = builtin_roles()
    out = []
    for spec in recipe.specialists:
        if spec.brief:
            out.append(Role(spec.name, spec.name.replace("_", " ").title() + " specialist", spec.brief.strip()))
        elif spec.name in shipped:
            out.append(shipped[spec.name])
        else:
            raise RecipeError(
                f"{recipe.yaml_path}: field 'specialists': role {spec.name!r} has no brief; give it one "
                f"({{name: {spec.name}, brief: ...}}) or use a shipped role: {', '.join(sorted(shipped))}"
            )
    return out


@cache
def prompt(name: str) -> str:
    """A prompt template from ``specialists/prompts/``."""
    return resources.files(_PKG).joinpath("prompts", name).read_text()
