"""scripts/ui_screenshots.py against a real MLflow server: the four views show our runs, columns and note."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mlflow_autoresearch.lineage import MlflowStore
from mlflow_autoresearch.recipe import load_recipe
from mlflow_autoresearch.trial import evaluate_folder

from ..conftest import ROOT, TOY_SPEC, TOY_TRAIN, write_recipe
from ..servers import unique_name
from .browser import chromium


def _script():
    spec = importlib.util.spec_from_file_location("ui_screenshots", ROOT / "scripts" / "ui_screenshots.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_screenshots_show_runs_table_note_compare_and_charts(live_mlflow_server, tmp_path, monkeypatch):
    chromium()  # fail clearly when the browser is missing
    monkeypatch.chdir(tmp_path)
    name = unique_name("ui-shots")
    store = MlflowStore(name, live_mlflow_server.url)
    recipe = load_recipe(write_recipe(tmp_path / "toy", TOY_SPEC, {"train.py": TOY_TRAIN}))
    base = evaluate_folder(store, recipe)
    better = tmp_path / "better"
    better.mkdir()
    (better / "train.py").write_text(TOY_TRAIN.replace("SCORE = 0.5", "SCORE = 0.25"))
    kept = evaluate_folder(store, recipe, better)
    assert kept.decision == "keep"

    shots = _script().take(live_mlflow_server.url, tmp_path / "img", experiment=name)
    assert set(shots) == {"runs", "run", "compare", "chart"}
    for key, shot in shots.items():
        with Image.open(shot.path) as im:
            assert im.size == (1600, 1000), key
            px = np.asarray(im.convert("RGB"), dtype=np.int16)
        dark = (px.max(axis=2) < 120).mean()  # text, icons, chart marks on the UI's light background
        assert dark > 0.002 and px.std() > 8, f"{key} looks blank ({dark:.2%} dark pixels)"
    runs = shots["runs"].text
    assert kept.name in runs and base.name in runs
    assert "autoresearch.outcome" in runs and "autoresearch.decision" in runs and "keep" in runs
    assert ".autoresearch-ledger" not in runs  # the table is filtered to trials
    note = shots["run"].text
    assert "Hypothesis:" in note and "manual submission" in note and "Outcome:" in note
    assert "decision: keep" in note  # the note's feedback block, expanded
    assert base.name in shots["compare"].text and kept.name in shots["compare"].text
    assert "loss" in shots["chart"].text
    assert Path(shots["run"].url).name  # an address someone can open
