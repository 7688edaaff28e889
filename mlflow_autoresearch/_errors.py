"""The plugin's error hierarchy.

A trial's failure is data (an :class:`~mlflow_autoresearch.outcome.Outcome`),
never one of these.  These are raised for bad input and for bugs or faults
of the harness itself.
"""

from __future__ import annotations


class AutoresearchError(Exception):
    """Base of every error this package raises on purpose."""

    exit_code = 1


class UsageError(AutoresearchError):
    """Bad input from the user: a recipe, a flag, a proposal.  Exit code 2."""

    exit_code = 2


class RecipeError(UsageError):
    """A recipe folder or ``recipe.yaml`` that cannot be used."""


class ProposalError(UsageError):
    """A proposal whose edits cannot be applied (refused before anything runs)."""


class BackendError(UsageError):
    """The model backend cannot work with this setup: credentials, billing, spend limit, model, endpoint.

    Retrying cannot help, so the loop stops (exit code 2).  ``cause`` says what
    the backend answered, ``fix`` what the user can do about it.
    """

    def __init__(self, cause: str, fix: str) -> None:
        super().__init__(f"{cause}. Fix: {fix}")
        self.cause = cause
        self.fix = fix


class HarnessError(AutoresearchError):
    """The evaluator or the loop itself failed; not the trial's fault."""


class SandboxError(HarnessError):
    """This machine cannot contain trials as configured (e.g. the trial uid cannot run the interpreter).

    A setup problem for the user to fix before any trial runs: the message names
    the fix.  Exit code 2, like a usage error; trials never run with more rights
    instead.
    """

    exit_code = 2


class ModelUnavailable(HarnessError):
    """The model API stayed unreachable or overloaded for the whole retry budget.

    Not the proposal's fault: the loop pauses proposing, says so, and tries
    again later.  ``status`` is the last HTTP status (``None`` for a timeout or
    a connection failure); ``retry_after`` is the server's last hint in seconds;
    ``answered`` is whether any attempt got an HTTP answer at all.
    """

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None,
                 waited_seconds: float = 0.0, answered: bool = True) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.waited_seconds = waited_seconds
        self.answered = answered


class BaselineFailed(AutoresearchError):
    """The recipe's own code did not pass (crashed, timed out, missed a gate, ...): exit code 1.

    Every later trial would be compared with nothing, so ``run`` and ``evaluate``
    stop and show why (the tail of its stderr), unless told to keep a failed
    baseline for the specialists to repair (``--allow-failed-baseline``).
    """


class StoreError(AutoresearchError):
    """The lineage store refused or failed an operation."""


class PermissionDenied(StoreError):
    """The tracking server refused a write: the user lacks permission."""

    exit_code = 2
