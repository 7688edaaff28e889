"""Which refusals of the model API are the account's (stop the loop) and which are one request's.

The API's error types (``authentication_error`` 401, ``permission_error``
403, ``billing_error`` 402, ``not_found_error`` 404, ``request_too_large``
413, ``invalid_request_error`` 400) and the texts it puts in a 400 for
credit and spend limits.  An account-level problem becomes a
:class:`~mlflow_autoresearch._errors.BackendError` naming the cause and the
fix; every proposal would fail the same way, so retrying cannot help.
"""

from __future__ import annotations

import re

import anthropic

from mlflow_autoresearch._errors import BackendError

_BILLING = re.compile(r"credit balance|billing|payment|purchase credits|insufficient (funds|credit)", re.I)
_SPEND = re.compile(r"spend(ing)? limit|usage limit|monthly limit|reached your specified", re.I)
_TOO_LONG = re.compile(r"prompt is too long|too many (input )?tokens|context (window|length)|maximum context", re.I)
_COUNT = re.compile(r"(\d[\d,]*) tokens? > (\d[\d,]*)")


def detail(e: anthropic.APIStatusError) -> str:
    """``HTTP 400 invalid_request_error: <message>``."""
    message = getattr(e, "api_message", None) or e.message
    return f"HTTP {e.status_code} {getattr(e, 'type', None) or 'error'}: {message}"


def is_too_long(e: anthropic.APIStatusError) -> bool:
    """A request refused for its size: 413, or a 400 saying the prompt exceeds the window."""
    return e.status_code == 413 or (e.status_code == 400 and bool(_TOO_LONG.search(detail(e))))


def counted_tokens(e: anthropic.APIStatusError) -> tuple[int, int] | None:
    """``(tokens, maximum)`` from "prompt is too long: 210000 tokens > 200000 maximum"."""
    m = _COUNT.search(detail(e))
    return (int(m.group(1).replace(",", "")), int(m.group(2).replace(",", ""))) if m else None


def account_problem(e: anthropic.APIStatusError, *, model: str, provider: str, endpoint: str) -> BackendError | None:
    """A :class:`BackendError` when ``e`` is about the account, credentials or model; else ``None``."""
    d = detail(e)
    where = f"{provider} at {endpoint}" if endpoint else provider
    key = {"anthropic": "ANTHROPIC_API_KEY (or ANTHROPIC_AUTH_TOKEN)", "bedrock": "your AWS credentials or "
           "AWS_BEARER_TOKEN_BEDROCK", "vertex": "your Google Cloud credentials (gcloud auth application-default "
           "login)", "foundry": "ANTHROPIC_FOUNDRY_API_KEY"}.get(provider, "the provider's credentials")
    status = e.status_code
    if status == 401:
        return BackendError(f"the model API ({where}) refused the credentials ({d})",
                            f"set a valid {key}; for a local server without keys, set only ANTHROPIC_BASE_URL")
    if status == 403:
        return BackendError(f"the model API ({where}) does not allow this key to use model {model!r} ({d})",
                            "use a key of a workspace with access to this model, or another --model")
    if status == 402 or (status == 400 and _BILLING.search(d)):
        return BackendError(f"the model API ({where}) refused for billing ({d})",
                            "add credits or a payment method to the account (Anthropic Console: Billing), "
                            "or use --agent offline")
    if status in (400, 429) and _SPEND.search(d):
        return BackendError(f"the account reached a spend limit ({d})",
                            "raise the workspace's spend limit (Anthropic Console: Limits) or wait until the "
                            "date the message names; lower --dollars to stay under it")
    if status == 404:
        return BackendError(f"the model API ({where}) does not know model {model!r} or this route ({d})",
                            "check --model against the provider's model ids (Bedrock: anthropic.claude-…, Vertex: "
                            "claude-…@date) and ANTHROPIC_BASE_URL / --provider")
    return None
