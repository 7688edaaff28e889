"""The three reference recipes: every tiny mode scored through the real evaluator.

Each tiny trial trains on generated data, the protected evaluate.py scores the
saved artifact in a fresh folder, and the evaluator applies the recipe's
gates and size rule, exactly as for a real trial.
"""

from __future__ import annotations

import importlib.util
import math
import re
import shutil
import sys
from pathlib import Path

import pytest

from mlflow_autoresearch.evaluator import evaluate_code
from mlflow_autoresearch.outcome import Outcome
from mlflow_autoresearch.recipe import load_recipe
from tests.conftest import ROOT, write_recipe

RECIPES = ROOT / "recipes"
NAMES = ("cifar10-airbench96", "parameter-golf", "nanochat-d12")
_CACHE: dict[str, object] = {}


def load_module(path: Path, name: str):
    """Import a recipe's module by path, under a unique name (every recipe has a data.py)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


def tiny(name: str):
    """The tiny profile's evaluation of the recipe's own code (run once per test session)."""
    if name not in _CACHE:
        recipe = load_recipe(RECIPES / name, "tiny")
        _CACHE[name] = (recipe, evaluate_code(recipe, recipe.root))
    return _CACHE[name]


@pytest.mark.parametrize("name", NAMES)
def test_recipe_and_profiles_load_and_name_real_constants(name):
    for profile in (None, "tiny"):
        recipe = load_recipe(RECIPES / name, profile)
        assert recipe.evaluate and "evaluate.py" in recipe.protected and "data.py" in recipe.protected
        assert recipe.knowledge_text().count("\n") > 10, "knowledge notes hold the field's known tricks"
        code = (recipe.root / recipe.editable[0]).read_text()
        for knob in recipe.knobs:  # a sweep edits these module-level constants
            assert re.search(rf"^{knob.name} = ", code, re.MULTILINE), f"{knob.name} is not a constant in the script"
    real, small = load_recipe(RECIPES / name), load_recipe(RECIPES / name, "tiny")
    assert "--tiny" in small.command and "--tiny" in small.evaluate and small.preflight is None
    assert real.preflight and "--smoke" in real.preflight


def test_real_settings_match_the_reference_tasks():
    cifar = load_recipe(RECIPES / "cifar10-airbench96")
    assert cifar.seeds == 10 and cifar.metric.name == "train_seconds" and cifar.metric.goal == "minimize"
    (gate,) = cifar.gates
    assert (gate.metric, gate.op, gate.value) == ("accuracy", ">=", 0.96) and gate.near_miss > 0
    golf = load_recipe(RECIPES / "parameter-golf")
    assert golf.limits.artifact_bytes == 16_000_000
    assert golf.artifact.include_code and golf.artifact.files == ("final_model.ptz",)
    assert [s.name for s in golf.specialists] == ["arch", "opt", "tok", "quant", "reg", "loss", "eval",
                                                  "curriculum", "ttt", "meta"]
    assert all(s.brief for s in golf.specialists)
    assert load_recipe(RECIPES / "parameter-golf", "tiny").limits.artifact_bytes == 16_000_000
    chat = load_recipe(RECIPES / "nanochat-d12")
    assert (chat.metric.name, chat.metric.goal) == ("core", "maximize")


@pytest.mark.slow
def test_cifar_tiny_score_is_the_evaluators_clock_and_the_gate_holds_over_seeds():
    recipe, ev = tiny("cifar10-airbench96")
    assert ev.outcome is Outcome.OK, ev.reason + ev.error_tail
    assert len(ev.seed_metrics) == 2
    assert ev.score == ev.metrics["train_seconds"] == pytest.approx(ev.train_seconds)
    assert 0 < ev.score < recipe.limits.train_seconds
    (gate,) = ev.gates
    assert gate.passed and gate.observed >= 0.9 and gate.observed == ev.metrics["accuracy"]
    assert all(0.9 <= m["accuracy"] <= 1.0 for m in ev.seed_metrics)
    code = (recipe.root / recipe.editable[0]).stat().st_size
    assert ev.artifact_bytes > code  # code + model.pt


@pytest.mark.slow
def test_parameter_golf_tiny_scores_bits_per_byte_below_uniform_and_counts_code_plus_model():
    recipe, ev = tiny("parameter-golf")
    assert ev.outcome is Outcome.OK, ev.reason + ev.error_tail
    data = load_module(recipe.root / "data.py", "golf_data")
    assert "--tokenizer sp8192" in recipe.evaluate and "--stride 32" in recipe.evaluate  # sliding, as the real one
    pieces, val = data.tokenizer_pieces("sp8192", True), data.val_tokens("sp8192", True)
    n_bytes = data.count_bytes(val[:-1].astype(int), val[1:].astype(int), data.byte_luts(pieces))
    uniform_bpb = (len(val) - 1) * math.log2(len(pieces)) / n_bytes
    assert 0 < ev.score < 0.75 * uniform_bpb, "the model learned the generated text"
    assert ev.metrics["val_tokens"] > 0 and "train/train_loss" in ev.metrics  # training's prints kept apart
    code = (recipe.root / "train_gpt.py").stat().st_size
    assert ev.artifact_bytes == code + ev.metrics["train/model_bytes"] < 16_000_000


@pytest.mark.slow
def test_nanochat_tiny_core_is_mean_centered_accuracy_well_above_chance():
    recipe, ev = tiny("nanochat-d12")
    assert ev.outcome is Outcome.OK, ev.reason + ev.error_tail
    tasks = {"next_token": 0.25, "two_step": 0.5, "which_context": 0.5, "greedy_chain": 0.0}
    centered = []
    for task, chance in tasks.items():
        acc = ev.metrics[f"accuracy/{task}"]
        assert ev.metrics[f"core/{task}"] == pytest.approx((acc - chance) / (1 - chance), abs=1e-5)
        centered.append(ev.metrics[f"core/{task}"])
    assert ev.score == pytest.approx(sum(centered) / len(centered), abs=1e-5)
    assert ev.score > 0.5


def _size_recipe(tmp_path: Path) -> Path:
    """A recipe with Parameter Golf's size rule whose training writes final_model.ptz to a chosen size."""
    golf = load_recipe(RECIPES / "parameter-golf", "tiny")
    train = (
        "import os\n"
        f"LIMIT = {golf.limits.artifact_bytes}  # decimal bytes\n"
        "OVER = 0  # bytes beyond the limit\n"
        "# naïve: the challenge counts len(code.encode('utf-8')), bytes, not characters\n"
        "size = LIMIT - os.path.getsize(__file__) + OVER\n"
        "with open('final_model.ptz', 'wb') as f:\n"
        "    f.write(b'\\0' * size)\n"
        "print('val_bpb: 1.0')\n"
    )
    spec = {"name": "golf-size-rule", "editable": ["train_gpt.py"], "command": "python train_gpt.py",
            "metric": golf.metric.model_dump(), "seeds": 1,
            "limits": {"train_seconds": 60, "artifact_bytes": golf.limits.artifact_bytes},
            "artifact": golf.artifact.model_dump(mode="json")}
    return write_recipe(tmp_path / "size-rule", spec, {"train_gpt.py": train})


def test_parameter_golf_size_rule_exactly_at_the_limit_passes_one_byte_over_fails(tmp_path):
    root = _size_recipe(tmp_path)
    recipe = load_recipe(root)
    code = (root / "train_gpt.py").read_text()
    assert len(code.encode("utf-8")) > len(code)  # a multi-byte character: bytes are what count
    at = evaluate_code(recipe, root)
    assert at.outcome is Outcome.OK and at.artifact_bytes == 16_000_000
    over = tmp_path / "over"
    over.mkdir()
    (over / "train_gpt.py").write_text((root / "train_gpt.py").read_text().replace("OVER = 0", "OVER = 1"))
    ev = evaluate_code(recipe, over)
    assert ev.outcome is Outcome.SIZE_EXCEEDED and ev.artifact_bytes == 16_000_001
    assert "1 bytes over the 16,000,000-byte limit" in ev.reason


@pytest.mark.slow
def test_parameter_golf_protected_evaluation_rejects_a_model_that_sees_the_future(tmp_path):
    recipe = load_recipe(RECIPES / "parameter-golf", "tiny")
    trial = tmp_path / "trial"
    shutil.copytree(recipe.root, trial)
    code = (recipe.root / "train_gpt.py").read_text()
    assert "is_causal=True" in code and "MAX_STEPS=60," in code
    # a few steps are enough: the causality check looks at the exported graph, not at how well it learned
    (trial / "train_gpt.py").write_text(code.replace("is_causal=True", "is_causal=False")
                                        .replace("MAX_STEPS=60,", "MAX_STEPS=4,"))
    ev = evaluate_code(recipe, trial)
    assert ev.outcome is Outcome.CRASHED and "protected evaluation" in ev.reason
    assert "not causal" in ev.error_tail and ev.score is None


def test_a_trial_cannot_replace_the_protected_evaluation(tmp_path):
    recipe = load_recipe(RECIPES / "cifar10-airbench96", "tiny")
    trial = tmp_path / "trial"
    shutil.copytree(recipe.root, trial)
    (trial / "evaluate.py").write_text("print('accuracy: 1.0')\n")
    ev = evaluate_code(recipe, trial)
    assert ev.outcome is Outcome.PROTECTED_VIOLATION and "evaluate.py" in ev.reason


def test_recipe_scripts_and_the_gpu_bench_import_only_torch_numpy_and_the_standard_library():
    """The GPU machines have torch but not mlflow, optuna or pydantic: the code that runs there must not need them."""
    import ast

    allowed = set(sys.stdlib_module_names) | {"torch", "numpy", "data", "__future__"}
    files = [p for name in NAMES for p in (RECIPES / name).glob("*.py")] + [ROOT / "bench" / "gpu_recipes.py"]
    for path in files:
        tree = ast.parse(path.read_text())
        top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        roots = {a.name.split(".")[0] for n in top if isinstance(n, ast.Import) for a in n.names}
        roots |= {n.module.split(".")[0] for n in top if isinstance(n, ast.ImportFrom) and n.module}
        assert roots <= allowed, f"{path.relative_to(ROOT)} imports {sorted(roots - allowed)} at module level"
