"""Where Claude is served: the SDK's own client for each provider, chosen by a setting or by credentials.

=============  ==========================================  =========================================
provider       client                                      chosen by ``auto`` when
=============  ==========================================  =========================================
``anthropic``  ``anthropic.Anthropic``                     a base URL, ``ANTHROPIC_API_KEY`` or
                                                           ``ANTHROPIC_AUTH_TOKEN`` is set (default)
``foundry``    ``anthropic.AnthropicFoundry``              ``ANTHROPIC_FOUNDRY_API_KEY``/``_RESOURCE``/``_BASE_URL``
                                                           or ``CLAUDE_CODE_USE_FOUNDRY=1``
``vertex``     ``anthropic.AnthropicVertex``               ``ANTHROPIC_VERTEX_PROJECT_ID`` or
                                                           ``CLAUDE_CODE_USE_VERTEX=1``
``bedrock``    ``anthropic.AnthropicBedrock``              ``AWS_BEARER_TOKEN_BEDROCK``,
                                                           ``ANTHROPIC_BEDROCK_BASE_URL`` or
                                                           ``CLAUDE_CODE_USE_BEDROCK=1``
=============  ==========================================  =========================================

AWS keys alone never select Bedrock (they are common for S3 artifacts), nor
Google credentials alone Vertex.  Any Anthropic-compatible server (a local
model server speaking the Messages API, a gateway) is ``anthropic`` with a
base URL.  Every client is built with the SDK's retries off (the backend
retries itself, see ``_retry``) and a separate, short connect timeout.
"""

from __future__ import annotations

import os
from typing import Any

import anthropic

from mlflow_autoresearch._errors import UsageError

PROVIDERS = ("auto", "anthropic", "bedrock", "vertex", "foundry")
LOCAL_SERVER_KEY = "no-key-for-local-server"
_SIGNALS = {
    "foundry": ("ANTHROPIC_FOUNDRY_API_KEY", "ANTHROPIC_FOUNDRY_RESOURCE", "ANTHROPIC_FOUNDRY_BASE_URL"),
    "vertex": ("ANTHROPIC_VERTEX_PROJECT_ID",),
    "bedrock": ("AWS_BEARER_TOKEN_BEDROCK", "ANTHROPIC_BEDROCK_BASE_URL"),
}
_FLAGS = {"foundry": "CLAUDE_CODE_USE_FOUNDRY", "vertex": "CLAUDE_CODE_USE_VERTEX", "bedrock": "CLAUDE_CODE_USE_BEDROCK"}


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


def resolve_provider(provider: str = "auto", base_url: str | None = None) -> str:
    """The provider ``auto`` stands for here (see the module table); others are returned as given."""
    if provider not in PROVIDERS:
        raise UsageError(f"--provider {provider!r}: expected one of {', '.join(PROVIDERS)}")
    if provider != "auto":
        return provider
    if base_url or os.environ.get("ANTHROPIC_API_KEY") or os.environ.get("ANTHROPIC_AUTH_TOKEN"):
        return "anthropic"
    for name in ("foundry", "vertex", "bedrock"):
        if _truthy(_FLAGS[name]) or any(os.environ.get(v) for v in _SIGNALS[name]):
            return name
    return "anthropic"


def has_credentials(provider: str = "auto", base_url: str | None = None) -> bool:
    """Whether ``--agent auto`` should pick Claude: some provider's credentials or a base URL are set."""
    if base_url or os.environ.get("ANTHROPIC_BASE_URL") or os.environ.get("ANTHROPIC_API_KEY") \
            or os.environ.get("ANTHROPIC_AUTH_TOKEN"):
        return True
    if provider not in ("auto", "anthropic"):
        return True
    return resolve_provider("auto") != "anthropic"


def provider_model(provider: str, model: str) -> str:
    """The id to send: Bedrock's foundation-model ids carry an ``anthropic.`` prefix."""
    if provider == "bedrock" and "." not in model and not model.startswith("arn:"):
        return f"anthropic.{model}"
    return model


def endpoint(client: Any) -> str:
    return str(getattr(client, "base_url", "") or "").rstrip("/")


def make_client(provider: str, *, base_url: str | None, api_key: str | None, timeout: anthropic.Timeout,
                options: dict[str, Any] | None = None) -> Any:
    """The SDK client for ``provider`` (already resolved).  ``options`` go to its constructor.

    Raises:
        UsageError: the provider's credentials or settings are missing, naming what to set.
    """
    kw: dict[str, Any] = {"max_retries": 0, "timeout": timeout, **(options or {})}
    try:
        if provider == "anthropic":
            return _anthropic(base_url, api_key, kw)
        if provider == "bedrock":
            return anthropic.AnthropicBedrock(base_url=base_url, api_key=api_key, **kw)
        if provider == "vertex":
            return anthropic.AnthropicVertex(base_url=base_url, **kw)
        if provider == "foundry":
            return anthropic.AnthropicFoundry(base_url=base_url, api_key=api_key, **kw)
    except (anthropic.AnthropicError, ValueError, RuntimeError) as e:
        raise UsageError(f"provider {provider!r}: {e} (see docs/claude.md, 'Providers')") from None
    raise UsageError(f"--provider {provider!r}: expected one of {', '.join(PROVIDERS[1:])}")


def _anthropic(base_url: str | None, api_key: str | None, kw: dict[str, Any]) -> anthropic.Anthropic:
    try:
        client = anthropic.Anthropic(api_key=api_key, base_url=base_url, **kw)
        if client.api_key or client.auth_token or getattr(client, "credentials", None):
            return client
        problem = "none found"
    except anthropic.CredentialsError as e:  # e.g. a profile named but missing
        problem = str(e)
    if base_url:  # a local server usually wants no key; the SDK wants one to send
        return anthropic.Anthropic(api_key=LOCAL_SERVER_KEY, base_url=base_url, **kw)
    raise UsageError(f"agent 'claude' needs Anthropic credentials ({problem}): set ANTHROPIC_API_KEY (or "
                     "ANTHROPIC_BASE_URL for a compatible local server, or --provider bedrock/vertex/foundry with "
                     "that provider's credentials), or use --agent offline")
