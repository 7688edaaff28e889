"""A gate met or missed within its noise gets extra seeds before it is called."""

from __future__ import annotations

from pathlib import Path

from mlflow_autoresearch.evaluator import evaluate_code
from mlflow_autoresearch.evaluator._core import gates_within_noise
from mlflow_autoresearch.outcome import Outcome
from mlflow_autoresearch.recipe import load_recipe
from mlflow_autoresearch.trial import facts_text

DIGITS = Path(__file__).resolve().parents[2] / "recipes" / "digits-speedrun"  # gate: accuracy >= 0.97, band 0.005


def test_within_noise_means_closer_than_the_standard_error_allows():
    recipe = load_recipe(DIGITS)
    assert gates_within_noise(recipe, [{"accuracy": 0.969}, {"accuracy": 0.973}]) == "accuracy >= 0.97"
    assert gates_within_noise(recipe, [{"accuracy": 0.990}, {"accuracy": 0.991}]) is None
    assert gates_within_noise(recipe, [{"accuracy": 0.968}]) == "accuracy >= 0.97"  # one seed: the near-miss band
    assert gates_within_noise(recipe, [{"accuracy": 0.90}]) is None


def test_a_borderline_gate_is_measured_again_and_its_margin_says_how_sure(tmp_path):
    (tmp_path / "recipe.yaml").write_text("""
name: borderline
editable: [train.py]
command: python train.py
metric: {name: loss, goal: minimize}
gates: [{metric: accuracy, op: ">=", value: 0.5, near_miss: 0.05}]
limits: {train_seconds: 30}
seeds: 2
acceptance: {max_gate_seeds: 3}
""")
    # Seeds 0 and 1 straddle the gate; later seeds pass it clearly.
    (tmp_path / "train.py").write_text(
        "import os\ns = int(os.environ['AUTORESEARCH_SEED'])\n"
        "print('loss: 1.0')\nprint('accuracy:', {0: 0.47, 1: 0.51}.get(s, 0.60))\n")
    recipe = load_recipe(tmp_path)
    ev = evaluate_code(recipe, tmp_path)
    assert ev.metrics["seeds"] > 2, "the gate was within its noise after two seeds: more were run"
    assert ev.outcome is Outcome.OK and any("within its noise" in n for n in ev.notes)
    assert "P(pass)" in facts_text(ev, recipe, None, None)
    # Asked-for seeds (a confirmation run) are never extended.
    assert evaluate_code(recipe, tmp_path, seeds=[0]).metrics["seeds"] == 1
