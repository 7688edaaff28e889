"""Evaluation slots: one per visible GPU, one on a CPU machine.

A slot is the value an evaluation gets as ``CUDA_VISIBLE_DEVICES`` (a device
index or UUID as this machine names it), or None on a CPU machine, where the
evaluation inherits the environment unchanged.

Where the devices come from, first match wins:

1. ``$AUTORESEARCH_FAKE_GPUS`` (``"0,1,2,3"``): a fake device list, for tests
   and for planning on a machine without the GPUs;
2. ``$CUDA_VISIBLE_DEVICES`` when set: exactly what the process may use
   (empty, ``-1`` or ``none``: no GPU at all);
3. ``nvidia-smi -L``: every GPU of the machine;
4. ``torch.cuda.device_count()``.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess

from mlflow_autoresearch._errors import UsageError

logger = logging.getLogger(__name__)

FAKE_ENV = "AUTORESEARCH_FAKE_GPUS"
_NVIDIA_SMI_LINE = re.compile(r"^GPU (\d+):", re.MULTILINE)


def _split(value: str) -> list[str]:
    items = [v.strip() for v in value.split(",")]
    if any(v in ("-1", "none", "NoDevFiles") for v in items):
        return []  # CUDA stops at the first invalid id; these mean "no GPU"
    return [v for v in items if v]


def _nvidia_smi() -> list[str] | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        logger.debug("nvidia-smi -L failed: %s", e)
        return None
    if out.returncode != 0:
        logger.debug("nvidia-smi -L exited %s: %s", out.returncode, out.stderr.strip()[:200])
        return None
    return _NVIDIA_SMI_LINE.findall(out.stdout)


def _torch_count() -> int:
    try:
        import torch
    except ImportError:
        return 0
    try:
        return int(torch.cuda.device_count())
    except Exception as e:  # a broken driver means: no usable GPU
        logger.debug("torch.cuda.device_count() failed: %s", e)
        return 0


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` values (see the module doc)."""
    fake = os.environ.get(FAKE_ENV)
    if fake is not None:
        return _split(fake)
    cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
    if cvd is not None:
        return _split(cvd)
    listed = _nvidia_smi()
    if listed is not None:
        return listed
    return [str(i) for i in range(_torch_count())]


def detect_slots(requested: int | None = None) -> list[str | None]:
    """One slot per visible GPU, or ``[None]`` on a CPU machine.

    ``requested`` (``--slots``) caps or extends the list: fewer than the GPUs
    takes the first ones; more than the GPUs shares them round-robin (two
    evaluations per GPU), with a warning; on a CPU machine it gives that many
    ``None`` slots.  Raises UsageError for a count below 1.
    """
    if requested is not None and requested < 1:
        raise UsageError(f"--slots must be at least 1, got {requested}")
    gpus = visible_gpus()
    if not gpus:
        return [None] * (requested or 1)
    if requested is None:
        return list(gpus)
    if requested > len(gpus):
        logger.warning("%d slots on %d GPU(s): evaluations will share GPUs", requested, len(gpus))
    return [gpus[i % len(gpus)] for i in range(requested)]


def job_slots(requested: int | None = None) -> list[str | None]:
    """Slots for a cluster backend (slurm, kubernetes): ``--slots`` jobs at once, default 1.

    The loop's own GPUs do not matter there: each job gets its GPUs from the
    scheduler, so no slot pins ``CUDA_VISIBLE_DEVICES``.
    """
    if requested is not None and requested < 1:
        raise UsageError(f"--slots must be at least 1, got {requested}")
    return [None] * (requested or 1)
