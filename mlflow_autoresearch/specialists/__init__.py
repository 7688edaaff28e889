"""Specialists: roles (data files) plus backends (Claude, the offline playbook)."""

from mlflow_autoresearch.specialists._base import Edit, Proposal, ProposalContext, Role, Specialist, Usage
from mlflow_autoresearch.specialists._check import check_backend, claude_options
from mlflow_autoresearch.specialists._edits import EditSession, apply_edits
from mlflow_autoresearch.specialists._registry import make_specialist, resolve_agent
from mlflow_autoresearch.specialists._roles import builtin_roles, prompt, roster
from mlflow_autoresearch.specialists._tracing import link_trace

__all__ = [
    "Edit",
    "EditSession",
    "Proposal",
    "ProposalContext",
    "Role",
    "Specialist",
    "Usage",
    "apply_edits",
    "builtin_roles",
    "check_backend",
    "claude_options",
    "link_trace",
    "make_specialist",
    "prompt",
    "resolve_agent",
    "roster",
]
