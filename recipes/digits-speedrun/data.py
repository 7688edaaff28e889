"""Protected: the fixed train/test split of scikit-learn's 8x8 digits (1,797 images).

The data ships inside scikit-learn, so no network is needed.  The split is
fixed (seeded permutation, 75/25), identical for training and evaluation.
"""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits

SPLIT_SEED = 1234
TEST_FRACTION = 0.25


def load_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test); x holds raw pixel values 0..16 as float32."""
    digits = load_digits()
    x = digits.data.astype(np.float32)
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(x))
    n_test = int(len(x) * TEST_FRACTION)
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]
