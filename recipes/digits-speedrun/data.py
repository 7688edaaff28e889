"""Protected: the fixed train/test split of scikit-learn's 8x8 digits (1,797 images), sealed.

The data ships inside scikit-learn, so no network is needed.  The split is
fixed (seeded permutation, 75/25).  ``python data.py --prepare`` (the recipe's
``data.prepare``, run by the evaluator before the first trial) writes the two
halves to the dataset cache: ``digits-speedrun/train.npz``, which training
reads, and ``digits-speedrun/test.npz``, which only the protected evaluation
can read.  Inside the sandbox, training finds the test file and scikit-learn's
own copy of the data empty (``data.eval`` in recipe.yaml).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

SPLIT_SEED = 1234
TEST_FRACTION = 0.25
DEFAULT_DATA_DIR = "/var/tmp/autoresearch-data"


def cache_dir() -> Path:
    return Path(os.environ.get("AUTORESEARCH_DATA_DIR") or DEFAULT_DATA_DIR) / "digits-speedrun"


def prepare() -> Path:
    """Write ``train.npz`` and ``test.npz`` to the cache (atomically, readable by everyone); idempotent."""
    from sklearn.datasets import load_digits

    root = cache_dir()
    if all((root / f"{s}.npz").is_file() for s in ("train", "test")):
        return root
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)
    digits = load_digits()
    x = digits.data.astype(np.float32)
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(x))
    n_test = int(len(x) * TEST_FRACTION)
    for split, idx in (("test", order[:n_test]), ("train", order[n_test:])):
        tmp = root / f"{split}.tmp{os.getpid()}.npz"
        np.savez(tmp, x=x[idx], y=y[idx])
        os.chmod(tmp, 0o644)
        os.replace(tmp, root / f"{split}.npz")
    return root


def _load(split: str) -> tuple[np.ndarray, np.ndarray]:
    path = cache_dir() / f"{split}.npz"
    if not path.is_file():
        prepare()  # outside the evaluator (running the script by hand): make the cache first
    with np.load(path) as f:
        return f["x"], f["y"]


def load_train() -> tuple[np.ndarray, np.ndarray]:
    """(x_train, y_train); x holds raw pixel values 0..16 as float32, shape [N, 64]."""
    return _load("train")


def load_test() -> tuple[np.ndarray, np.ndarray]:
    """(x_test, y_test): readable only by the protected evaluation."""
    return _load("test")


if __name__ == "__main__":
    if sys.argv[1:] == ["--prepare"]:
        print(f"digits split in {prepare()}")
    else:
        sys.exit("usage: python data.py --prepare")
