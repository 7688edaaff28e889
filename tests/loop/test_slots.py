"""Evaluation slots: one per GPU, from a fake device list, CUDA_VISIBLE_DEVICES, nvidia-smi or torch."""

from __future__ import annotations

import logging
import stat
import threading

import pytest

from mlflow_autoresearch._errors import UsageError
from mlflow_autoresearch.lineage import InMemoryStore
from mlflow_autoresearch.loop._slots import detect_slots
from mlflow_autoresearch.recipe import load_recipe
from mlflow_autoresearch.trial import create_trial, evaluate_trial, recipe_files
from tests.conftest import TOY_SPEC, write_recipe

NVIDIA_SMI = """#!/bin/sh
[ "$1" = "-L" ] || exit 2
echo "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-11111111-2222-3333-4444-555555555555)"
echo "GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-66666666-7777-8888-9999-000000000000)"
"""


@pytest.fixture
def no_gpu_env(monkeypatch, tmp_path):
    """No fake list, no CUDA_VISIBLE_DEVICES, and a PATH without nvidia-smi."""
    monkeypatch.delenv("AUTORESEARCH_FAKE_GPUS", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    monkeypatch.setenv("PATH", str(bindir))
    return bindir


def test_fake_device_list_gives_one_slot_per_gpu(monkeypatch, caplog):
    monkeypatch.setenv("AUTORESEARCH_FAKE_GPUS", "0,1,2,3")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7")  # the fake list wins
    assert detect_slots(None) == ["0", "1", "2", "3"]
    assert detect_slots(2) == ["0", "1"]
    with caplog.at_level(logging.WARNING):
        assert detect_slots(6) == ["0", "1", "2", "3", "0", "1"]
    assert "share GPUs" in caplog.text


def test_cuda_visible_devices_is_what_the_process_may_use(no_gpu_env, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2, 3")
    assert detect_slots(None) == ["2", "3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-abc,GPU-def")
    assert detect_slots(None) == ["GPU-abc", "GPU-def"]
    for none in ("", "-1"):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", none)
        assert detect_slots(None) == [None]


def test_nvidia_smi_lists_the_machines_gpus(no_gpu_env):
    exe = no_gpu_env / "nvidia-smi"
    exe.write_text(NVIDIA_SMI)
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    assert detect_slots(None) == ["0", "1"]
    assert detect_slots(3) == ["0", "1", "0"]


@pytest.mark.slow  # imports torch (seconds)
def test_cpu_machine_has_one_slot_or_as_many_as_asked(no_gpu_env):
    assert detect_slots(None) == [None]  # no nvidia-smi; the CPU build of torch counts 0 GPUs
    assert detect_slots(3) == [None, None, None]
    with pytest.raises(UsageError, match="--slots"):
        detect_slots(0)


def test_each_slot_pins_its_trial_to_its_gpu(monkeypatch, tmp_path):
    """Four trials evaluated at once on four fake slots: each sees only its own device."""
    monkeypatch.setenv("AUTORESEARCH_FAKE_GPUS", "0,1,2,3")
    train = ("import os\nprint('loss: 0.5')\nprint('accuracy: 0.9')\n"
             "print('gpu:', int(os.environ['CUDA_VISIBLE_DEVICES']))\n")
    recipe = load_recipe(write_recipe(tmp_path / "gpu-toy", TOY_SPEC, {"train.py": train}))
    store = InMemoryStore("slots")
    slots = detect_slots(None)
    trials = [create_trial(store, recipe, recipe_files(recipe), specialist="systems", hypothesis=f"slot {s}")
              for s in slots]
    done: dict[str, float] = {}

    def run(trial, slot):
        rec = evaluate_trial(store, trial.run_id, recipe=recipe, extra_env={"CUDA_VISIBLE_DEVICES": slot})
        done[slot] = rec.metrics["gpu"]

    threads = [threading.Thread(target=run, args=(t, s)) for t, s in zip(trials, slots, strict=True)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert done == {"0": 0.0, "1": 1.0, "2": 2.0, "3": 3.0}
