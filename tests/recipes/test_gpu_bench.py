"""bench/gpu_checks.sh's data: random files in each recipe's real format, read back by the recipes' own loaders."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from tests.conftest import ROOT
from tests.recipes.test_reference_recipes import RECIPES, load_module


def test_gpu_bench_writes_data_the_recipes_read_as_their_real_data(tmp_path, monkeypatch):
    bench = load_module(ROOT / "bench" / "gpu_recipes.py", "bench_gpu_recipes")
    bench.write_data(tmp_path, small=True)
    monkeypatch.setenv("AUTORESEARCH_DATA_DIR", str(tmp_path))
    cifar = load_module(RECIPES / "cifar10-airbench96" / "data.py", "bench_cifar_data")
    x, y = cifar.load("test")
    assert x.shape == (1000, 3, 32, 32) and x.dtype == np.uint8 and y.max() < 10
    golf = load_module(RECIPES / "parameter-golf" / "data.py", "bench_golf_read")
    assert len(golf.tokenizer_pieces("sp8192")) == 8192  # the real path: the .model file parsed from disk
    assert len(golf.val_tokens("sp8192")) == 20_001 and len(golf.train_shards("sp8192")) == 2
    chat = load_module(RECIPES / "nanochat-d12" / "data.py", "bench_chat_read")
    assert len(chat.train_shards()) == 1 and len(chat.val_tokens()) == 20_000 and chat.core_tasks()


def test_gpu_checks_script_is_valid_bash_and_refuses_a_cpu_without_the_tiny_flag():
    assert subprocess.run(["bash", "-n", str(ROOT / "bench" / "gpu_checks.sh")]).returncode == 0
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_recipes.py")], capture_output=True, text=True)
    assert r.returncode == 2 and "no CUDA device" in r.stderr
