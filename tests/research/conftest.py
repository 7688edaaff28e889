"""The toy recipe for these tests: its loss moves a little with the seed, as a real score does."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import TOY_SPEC, TOY_TRAIN, write_recipe

# Seed noise of 1% keeps the acceptance rule's noise model positive (a score identical on every seed has none).
NOISY_TRAIN = TOY_TRAIN.replace('print(f"loss: {SCORE}")',
                                'print(f"loss: {SCORE * (1 + 0.01 * (int(os.environ.get(\'AUTORESEARCH_SEED\', \'0\')) % 5))}")')


@pytest.fixture
def toy_recipe(tmp_path: Path) -> Path:
    assert NOISY_TRAIN != TOY_TRAIN
    spec = {**TOY_SPEC, "acceptance": {"max_confirm_seeds": 2}}
    return write_recipe(tmp_path / "toy", spec, {"train.py": NOISY_TRAIN})
