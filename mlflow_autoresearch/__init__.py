"""mlflow-autoresearch: specialist agents that propose, measure and revise training recipes.

Each trial is an MLflow run; the evaluator runs it under hard limits; the
lineage of trials is what the next specialist reads.
"""

from mlflow_autoresearch._errors import (
    AutoresearchError,
    HarnessError,
    PermissionDenied,
    ProposalError,
    RecipeError,
    StoreError,
    UsageError,
)
from mlflow_autoresearch.outcome import Decision, Direction, Outcome
from mlflow_autoresearch.recipe import Recipe, load_recipe

__version__ = "0.1.0"

__all__ = [
    "AutoresearchError",
    "Decision",
    "Direction",
    "HarnessError",
    "Outcome",
    "PermissionDenied",
    "ProposalError",
    "Recipe",
    "RecipeError",
    "StoreError",
    "UsageError",
    "load_recipe",
]
