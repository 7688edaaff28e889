"""Trials on a SLURM cluster: the ``slurm`` MLflow project backend and a one-node cluster for trying it.

- :class:`SlurmBackend` (entry point ``mlflow.project_backend: slurm``): each run
  of an MLflow project entry point is one ``sbatch`` job; see ``_backend``.
- :mod:`mlflow_autoresearch.slurm.local`: a one-node cluster on 127.0.0.1 in one
  folder (laptop, CI, tests).
"""

from mlflow_autoresearch.slurm._backend import (
    JOB_TAG,
    SlurmBackend,
    SlurmConfig,
    SlurmSubmittedRun,
    find_job,
    job_name,
    parse_config,
    run_status,
    slurm_backend_builder,
)

__all__ = ["JOB_TAG", "SlurmBackend", "SlurmConfig", "SlurmSubmittedRun", "find_job", "job_name", "parse_config",
           "run_status", "slurm_backend_builder"]
