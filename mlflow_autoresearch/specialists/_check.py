"""The Claude backend's settings, and the check of endpoint and credentials that runs before the baseline."""

from __future__ import annotations

from typing import Any

from mlflow_autoresearch.specialists._registry import make_specialist, resolve_agent


def claude_options(settings: Any) -> dict[str, Any]:
    """Keyword arguments of :class:`~mlflow_autoresearch.specialists._claude.ClaudeSpecialist` from Settings."""
    return dict(model=settings.model, fallback_model=settings.fallback_model, max_turns=settings.max_turns,
                max_tokens=settings.max_tokens, thinking=settings.thinking, effort=settings.effort,
                cache_ttl=settings.cache_ttl, provider=settings.provider, base_url=settings.anthropic_base_url,
                connect_timeout=settings.connect_timeout, request_timeout=settings.request_timeout,
                prices=settings.prices, retry_seconds=settings.model_retry_seconds)


def check_backend(settings: Any, specialist: Any = None) -> str:
    """Check the specialist backend the settings name, before anything runs; a one-line summary.

    For Claude: the endpoint answers, the credentials and the model are
    accepted (one request of a few tokens), and a ``--dollars`` budget has a
    price to count with.  Backends without a ``check`` method pass.  An
    endpoint that is overloaded right now passes with a warning (the loop
    retries later); one that has never answered does not.

    Raises:
        BackendError: the cause and the fix (exit code 2).
        UsageError: a bad setting of the backend.
    """
    agent = getattr(specialist, "backend", None) or resolve_agent(
        settings.agent, provider=settings.provider, base_url=settings.anthropic_base_url)
    own = specialist is None
    if own:
        if agent != "claude":
            return f"{agent}: no model API to check"
        specialist = make_specialist("claude", **claude_options(settings))
    check = getattr(specialist, "check", None)
    try:
        return check(dollars=settings.dollars) if callable(check) else f"{agent}: no check"
    finally:
        if own:
            specialist.close()
