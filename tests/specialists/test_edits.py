"""EditSession: the only way a proposal changes code, and the reasons it gives when it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mlflow_autoresearch._errors import ProposalError
from mlflow_autoresearch.recipe import load_recipe
from mlflow_autoresearch.specialists import Edit, EditSession, apply_edits

TRAIN = """\
import os
LR = 0.1  # learning rate
EPOCHS = 3  # passes over the data
for epoch in range(EPOCHS):
    pass
for epoch in range(EPOCHS):
    pass
"""


@pytest.fixture
def recipe(tmp_path: Path):
    root = tmp_path / "r"
    root.mkdir()
    (root / "train.py").write_text(TRAIN)
    (root / "evaluate.py").write_text("print('accuracy: 1.0')\n")
    (root / "recipe.yaml").write_text(yaml.safe_dump({
        "name": "edits", "editable": ["train.py"], "protected": ["evaluate.py"], "command": "python train.py",
        "metric": {"name": "loss", "goal": "minimize"}, "limits": {"train_seconds": 5}}))
    return load_recipe(root)


@pytest.fixture
def session(recipe) -> EditSession:
    return EditSession(recipe, {"train.py": TRAIN.encode(), "evaluate.py": b"print('accuracy: 1.0')\n"})


def test_exact_replacement_changes_only_the_working_copy(session):
    parent = session.files
    assert session.replace("train.py", "LR = 0.1", "LR = 0.05") == "train.py"
    assert "LR = 0.05  # learning rate" in session.read("train.py")
    assert parent["train.py"].decode() == TRAIN  # the parent's snapshot is untouched
    assert session.changed and session.edits == [Edit("train.py", "LR = 0.1", "LR = 0.05")]


def test_protected_file_refused_with_the_editable_ones_named(session):
    with pytest.raises(ProposalError, match=r"evaluate.py is protected: only train.py may be edited"):
        session.replace("evaluate.py", "1.0", "2.0")
    assert session.read("evaluate.py") == "print('accuracy: 1.0')\n"  # reading it is fine
    assert not session.changed


def test_unknown_file_refused(session):
    with pytest.raises(ProposalError, match=r"notes.txt is not an editable file of this recipe; editable: train.py"):
        session.replace("notes.txt", "a", "b")
    with pytest.raises(ProposalError, match=r"no file 'nope.py'; files: evaluate.py, train.py"):
        session.read("nope.py")


@pytest.mark.parametrize("path", ["../train.py", "sub/../../train.py", "/etc/passwd", "/work/train.py",
                                  "..\\train.py", " "])
def test_paths_leaving_the_recipe_refused(session, path):
    with pytest.raises(ProposalError, match="leaves the recipe folder; use a relative path like 'train.py'"):
        session.replace(path, "x", "y")
    with pytest.raises(ProposalError, match="leaves the recipe folder"):
        session.read(path)


def test_not_found_names_the_closest_line(session):
    with pytest.raises(ProposalError) as e:
        session.replace("train.py", "LR=0.1 # learning rate", "LR = 0.2")
    assert "old_text not found in train.py; the closest line is: 'LR = 0.1  # learning rate'" in str(e.value)
    assert "quote it exactly, whitespace included" in str(e.value)
    with pytest.raises(ProposalError, match="old_text not found in train.py. Read the file again"):
        session.replace("train.py", "completely unrelated text", "x")  # nothing close: no hint
    assert not session.changed


def test_ambiguous_match_asks_for_more_context(session):
    with pytest.raises(ProposalError, match="old_text occurs 2 times in train.py; include more surrounding lines"):
        session.replace("train.py", "for epoch in range(EPOCHS):\n    pass", "")
    with pytest.raises(ProposalError, match="old_text is empty"):
        session.replace("train.py", "", "x")


def test_syntax_check_names_file_and_line(session, recipe):
    assert session.syntax_errors() == []
    session.replace("train.py", "EPOCHS = 3  # passes over the data", "EPOCHS = = 3")
    errors = session.syntax_errors()
    assert len(errors) == 1 and errors[0].startswith("train.py line 3:")
    with pytest.raises(ProposalError, match=r"SyntaxError after edits: train.py line 3"):
        apply_edits(recipe, {"train.py": TRAIN.encode()}, [Edit("train.py", "EPOCHS = 3", "EPOCHS = = 3")])


def test_apply_edits_in_order(recipe):
    files = apply_edits(recipe, {"train.py": TRAIN.encode()},
                        [Edit("train.py", "LR = 0.1", "LR = 0.2"), Edit("train.py", "LR = 0.2", "LR = 0.3")])
    assert b"LR = 0.3  # learning rate" in files["train.py"]
