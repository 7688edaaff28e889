"""A real lineage for the report's tests: trials of the toy recipe, evaluated by the real evaluator.

Built once per session (5-15 s, by the CPU's load): a baseline, a kept improvement, a
regression, a crash and its kept repair, and a gate near miss.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from ..conftest import TOY_SPEC, TOY_TRAIN, write_recipe

COST = {"llm_cost_usd": 0.02, "llm_tokens_in": 1000.0, "llm_tokens_out": 200.0}
CRASH = "raise RuntimeError('scripted crash')\n"


def variant(score: float, *, crash: bool = False, accuracy: str | None = None) -> bytes:
    text = TOY_TRAIN.replace("SCORE = 0.5", f"SCORE = {score}")
    if accuracy is not None:
        # The same accuracy on every seed: a miss the extra gate seed confirms (it does not move the mean).
        text = text.replace("0.9 + 0.01 *", f"{accuracy} + 0.0 *")
    return (text + (CRASH if crash else "")).encode()


@dataclass
class ToyLineage:
    store: object
    recipe: object
    root: Path
    uri: str
    trials: dict  # label -> TrialRecord


@pytest.fixture(scope="session")
def toy_lineage(tmp_path_factory: pytest.TempPathFactory) -> ToyLineage:
    from mlflow_autoresearch.lineage import MlflowStore
    from mlflow_autoresearch.loop import evaluate_and_decide
    from mlflow_autoresearch.recipe import load_recipe
    from mlflow_autoresearch.trial import create_trial, evaluate_folder

    root = tmp_path_factory.mktemp("report-lineage")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)  # ./mlruns lands here
        recipe = load_recipe(write_recipe(root / "toy", TOY_SPEC, {"train.py": TOY_TRAIN}))
        store = MlflowStore("report-toy", uri)

        def child(parent, code: bytes, specialist: str, hypothesis: str):
            t = create_trial(store, recipe, {"train.py": code}, specialist=specialist, hypothesis=hypothesis,
                             parent=parent, metrics=COST)
            return evaluate_and_decide(store, t.run_id, recipe=recipe)

        trials = {"baseline": evaluate_folder(store, recipe)}
        trials["keep"] = child(trials["baseline"], variant(0.4), "optimization", "halve the warmup")
        trials["regression"] = child(trials["keep"], variant(0.45), "systems", "bigger batches")
        trials["crash"] = child(trials["keep"], variant(0.3, crash=True), "architecture", "wider hidden layer")
        trials["repair"] = child(trials["crash"], variant(0.3), "architecture", "wider hidden layer, crash fixed")
        trials["near_miss"] = child(trials["repair"], variant(0.2, accuracy="0.845"), "data",
                                    "drop the hardest tenth of the data")
    return ToyLineage(store, recipe, root, uri, trials)


@pytest.fixture(scope="session")
def toy_report(toy_lineage: ToyLineage, tmp_path_factory: pytest.TempPathFactory):
    from mlflow_autoresearch.report import build_report

    return build_report(toy_lineage.store, tmp_path_factory.mktemp("report-out"))
