"""Knobs are found in the code by parsing it, checked before anything runs, and rewritten in place."""

from __future__ import annotations

from pathlib import Path

import pytest
from sweepkit import KNOB_TRAIN, write_toy

from mlflow_autoresearch._errors import UsageError
from mlflow_autoresearch.recipe import Knob, load_recipe
from mlflow_autoresearch.sweep import check_knobs, current_values, format_value, parse_knob, set_knobs


@pytest.fixture
def recipe(tmp_path: Path):
    return load_recipe(write_toy(tmp_path))


FILES = {"train.py": KNOB_TRAIN.encode()}


def test_check_knobs_finds_constants_and_their_file(recipe):
    knobs = check_knobs(recipe, FILES, [Knob(name="X", low=0.01, high=1, log=True), Knob(name="Y", low=0, high=3)])
    assert [(k.name, k.file) for k in knobs] == [("X", "train.py"), ("Y", "train.py")]
    assert current_values(FILES, knobs) == {"X": 0.5, "Y": 2.0}


@pytest.mark.parametrize("knob, words", [
    (Knob(name="LR", low=0.001, high=0.1), ["knob LR", "missing", "train.py"]),
    (Knob(name="SEED", low=0, high=10), ["knob SEED", "not numeric", "train.py line 6", 'int("0")']),
    (Knob(name="X", low=0.6, high=0.9), ["knob X", "out of range", "0.5", "train.py line 3", "[0.6, 0.9]"]),
    (Knob(name="X", low=0.1, high=0.9, integer=True), ["knob X", "integer knob", "0.5"]),
    (Knob(name="X", low=0.1, high=0.9, file="data.py"), ["knob X", "data.py", "not an editable file"]),
])
def test_a_knob_the_code_refutes_is_refused_with_its_reason(recipe, knob, words):
    with pytest.raises(UsageError) as e:
        check_knobs(recipe, FILES, [knob])
    for w in words:
        assert w in str(e.value)


def test_every_problem_is_reported_at_once(recipe):
    with pytest.raises(UsageError) as e:
        check_knobs(recipe, FILES, [Knob(name="NOPE", low=0, high=1), Knob(name="Y", low=2.5, high=3)])
    assert "knob NOPE: missing" in str(e.value) and "knob Y: out of range" in str(e.value)


def test_a_constant_assigned_twice_is_ambiguous(recipe):
    files = {"train.py": KNOB_TRAIN.encode() + b"X = 0.7  # again\n"}
    with pytest.raises(UsageError, match=r"assigned 2 times at module level \(train.py line 3, train.py line 14\); a knob must be assigned exactly once$"):
        check_knobs(recipe, files, [Knob(name="X", low=0.01, high=1)])


def test_set_knobs_rewrites_only_the_literals():
    source = (b'"""doc"""\nLR: float = 2e-2  # peak learning rate\nEPOCHS = 60  # passes\n'
              b"A = 1; B = -2.5  # two on a line\ndef f():\n    LR = 5  # not module level\n")
    knobs = [Knob(name="EPOCHS", low=1, high=100, integer=True, file="train.py")]
    out = set_knobs({"train.py": source, "data.bin": b"\x00\xff"}, {"LR": 0.0312345678, "EPOCHS": 17.4, "A": 3,
                                                                       "B": -0.25}, knobs)
    assert out["train.py"] == (b'"""doc"""\nLR: float = 0.0312346  # peak learning rate\nEPOCHS = 17  # passes\n'
                               b"A = 3.0; B = -0.25  # two on a line\ndef f():\n    LR = 5  # not module level\n")
    assert out["data.bin"] == b"\x00\xff"


def test_format_value_keeps_the_literal_kind():
    assert format_value(2.0) == "2.0" and format_value(1e-5) == "1e-05" and format_value(59.6, integer=True) == "60"


def test_parse_knob_flag():
    assert parse_knob("LR:1e-4:1e-2:log") == Knob(name="LR", low=1e-4, high=1e-2, log=True)
    assert parse_knob("EPOCHS:2:80:int@train.py") == Knob(name="EPOCHS", low=2, high=80, integer=True,
                                                          file="train.py")
    for bad, words in [("LR:1", "expected NAME:LOW:HIGH"), ("LR:a:b", "must be numbers"),
                       ("LR:0.1:0.01", "must be below high"), ("LR:0:1:log", "needs low > 0"),
                       ("LR:0:1:cube", "unknown scale")]:
        with pytest.raises(UsageError, match=words):
            parse_knob(bad)


ARGPARSE_TRAIN = b'''import argparse

LAYERS = 2  # a module-level constant still wins for its own name


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--lr", type=float, default=3e-4, help="peak learning rate")
    p.add_argument("--warmup-frac", type=float, default=0.05)
    p.add_argument("--epochs", "-e", type=int, default=20)
    p.add_argument("--width", dest="hidden", type=int, default=64)
    p.add_argument("--name", default="run")
    args = p.parse_args()
    print(f"lr: {args.lr}")
    print(f"epochs: {args.epochs}")


if __name__ == "__main__":
    main()
'''


def test_argparse_defaults_are_knobs_and_are_rewritten_in_place(recipe, tmp_path):
    import subprocess
    import sys

    files = {"train.py": ARGPARSE_TRAIN}
    knobs = check_knobs(recipe, files, [Knob(name="lr", low=1e-5, high=1e-2, log=True),
                                        Knob(name="warmup_frac", low=0, high=0.3),
                                        Knob(name="epochs", low=2, high=80, integer=True),
                                        Knob(name="hidden", low=16, high=256, integer=True),
                                        Knob(name="LAYERS", low=1, high=8, integer=True)])
    assert [k.file for k in knobs] == ["train.py"] * 5
    assert current_values(files, knobs) == {"lr": 3e-4, "warmup_frac": 0.05, "epochs": 20, "hidden": 64, "LAYERS": 2}
    out = set_knobs(files, {"lr": 0.00123, "epochs": 7.2, "warmup_frac": 0.1}, knobs)["train.py"]
    assert out == (ARGPARSE_TRAIN.replace(b"default=3e-4", b"default=0.00123").replace(b"default=20", b"default=7")
                   .replace(b"default=0.05", b"default=0.1"))
    (tmp_path / "train.py").write_bytes(out)
    ran = subprocess.run([sys.executable, str(tmp_path / "train.py")], capture_output=True, text=True, check=True)
    assert ran.stdout == "lr: 0.00123\nepochs: 7\n"  # the script trains with the swept values


@pytest.mark.parametrize("command, knob, words", [
    ("python train.py --lr 0.001", Knob(name="lr", low=1e-5, high=1e-2),
     ["knob lr", "passes --lr 0.001", "overrides the default at train.py line 8", "remove --lr"]),
    ("python train.py --epochs=5", Knob(name="epochs", low=2, high=80, integer=True), ["passes --epochs 5"]),
    ("python train.py", Knob(name="name", low=0, high=1), ["knob name", "not numeric", "defaults to `\"run\"`"]),
    ("python train.py", Knob(name="momentum", low=0, high=1),
     ["knob momentum: missing", "no argparse flag `add_argument(\"--momentum\", default=<number>)`"]),
])
def test_an_argparse_knob_the_command_overrides_or_the_code_refutes_is_refused(recipe, command, knob, words):
    with pytest.raises(UsageError) as e:
        check_knobs(recipe.model_copy(update={"command": command}), {"train.py": ARGPARSE_TRAIN}, [knob])
    for w in words:
        assert w in str(e.value)
