"""The offline playbook: a catalogue of program rewrites and numeric moves, matched on the parent's code.

Used by :class:`~mlflow_autoresearch.specialists._offline.OfflineSpecialist`, the no-API default
backend and the baseline the Claude backend is measured against.  Everything here is pure and
immutable: safe to share between threads.
"""

from mlflow_autoresearch.specialists.playbook._catalogue import Candidate, Catalogue, candidates, catalogue
from mlflow_autoresearch.specialists.playbook._source import Rewriter, Setting, Source

__all__ = ["Candidate", "Catalogue", "Rewriter", "Setting", "Source", "candidates", "catalogue"]
