"""Specialist backends by name: built-ins plus plug-ins (entry point group
``mlflow_autoresearch.specialists``).  An unknown name lists what exists; a
plug-in that fails to load is skipped with a warning."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import Any

from mlflow_autoresearch._errors import UsageError

logger = logging.getLogger(__name__)

BUILTIN = {
    "offline": "mlflow_autoresearch.specialists._offline:OfflineSpecialist",
    "claude": "mlflow_autoresearch.specialists._claude:ClaudeSpecialist",
}


def _factories() -> dict[str, Callable[..., Any]]:
    from importlib.metadata import entry_points

    out: dict[str, Callable[..., Any]] = {}
    for name, target in BUILTIN.items():
        module, attr = target.split(":")
        out[name] = lambda m=module, a=attr, **kw: getattr(importlib.import_module(m), a)(**kw)
    for ep in entry_points(group="mlflow_autoresearch.specialists"):
        try:
            out[ep.name] = ep.load()
        except Exception as e:  # a broken plug-in must not break the loop
            logger.warning("specialist plug-in %r failed to load: %s", ep.name, e)
    return out


def resolve_agent(agent: str, *, provider: str = "auto", base_url: str | None = None) -> str:
    """``auto`` means claude when credentials of a provider or a base URL are set, else offline.

    Credentials: ``ANTHROPIC_API_KEY``/``ANTHROPIC_AUTH_TOKEN``, ``ANTHROPIC_BASE_URL`` (or ``base_url``),
    an explicit ``provider``, or the Bedrock/Vertex/Foundry variables of
    :mod:`~mlflow_autoresearch.specialists._providers`.
    """
    if agent != "auto":
        return agent
    from mlflow_autoresearch.specialists._providers import has_credentials

    return "claude" if has_credentials(provider, base_url) else "offline"


def make_specialist(agent: str, **options: Any):
    """Build the backend named ``agent`` (after resolving ``auto``)."""
    name = resolve_agent(agent)
    if ":" in name:  # "package.module:Factory", for backends that are not installed as plug-ins
        module, attr = name.split(":", 1)
        try:
            factory = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise UsageError(f"agent {agent!r}: cannot import {attr} from {module}: {e}") from None
        return factory(**options)
    factories = _factories()
    if name not in factories:
        raise UsageError(f"unknown agent {agent!r}; available: {', '.join(sorted(factories))}, auto")
    return factories[name](**options)
