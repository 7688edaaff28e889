"""Evaluation slots: one per visible GPU, one on a CPU machine (placeholder; see tests)."""

from __future__ import annotations

import os


def detect_slots(requested: int | None = None) -> list[str | None]:
    fake = os.environ.get("AUTORESEARCH_FAKE_GPUS") or os.environ.get("CUDA_VISIBLE_DEVICES")
    gpus = [g.strip() for g in fake.split(",") if g.strip()] if fake else []
    slots: list[str | None] = list(gpus) or [None]
    if requested:
        slots = (slots * requested)[:requested] if gpus else [None] * requested
    return slots
