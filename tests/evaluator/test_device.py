"""What a trial ran on: the evaluator's ``autoresearch.device`` fact, from the environment the trial gets."""

from __future__ import annotations

import shutil

import pytest

from mlflow_autoresearch.evaluator._core import trial_device


@pytest.mark.parametrize("env, extra, smi, device", [
    ({"CUDA_VISIBLE_DEVICES": "0,1"}, None, None, "gpu:0,1"),
    ({}, {"CUDA_VISIBLE_DEVICES": "3"}, None, "gpu:3"),  # the slot's GPU wins
    ({"CUDA_VISIBLE_DEVICES": "0"}, {"CUDA_VISIBLE_DEVICES": ""}, None, "cpu"),  # a CPU slot hides the GPUs
    ({"CUDA_VISIBLE_DEVICES": "-1"}, None, "/usr/bin/nvidia-smi", "cpu"),
    ({}, None, None, "cpu"),  # nothing set, no driver
    ({}, None, "/usr/bin/nvidia-smi", "gpu:all"),  # nothing set: the trial sees every GPU
])
def test_trial_device_reads_what_the_trial_can_see(monkeypatch, env, extra, smi, device):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(shutil, "which", lambda name: smi if name == "nvidia-smi" else None)
    assert trial_device(extra) == device
