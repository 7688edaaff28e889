"""The first week of a new user (issue 14): setup problems fail early, with one line naming the cause and the fix.

Each test runs the CLI as a user would and checks what they see: the message,
the exit code, and that nothing was written to the tracking store.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlflow_autoresearch.cli import _load_plugins, cli
from tests.conftest import TOY_SPEC, TOY_TRAIN, write_recipe

_load_plugins()

CRASHING_TRAIN = TOY_TRAIN + 'import sys\nprint("loading the data", flush=True)\nsys.exit("boom: data/train.csv not found")\n'


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user's folder with a training script; the shell's working folder is that folder."""
    folder = tmp_path / "myproject"
    folder.mkdir()
    (folder / "train.py").write_text(TOY_TRAIN)
    monkeypatch.chdir(folder)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return folder


# ----- item 1: a trial that cannot start is a setup problem, not a result --------------------------

def test_an_interpreter_trials_cannot_see_stops_evaluate_before_any_trial(tmp_path, monkeypatch):
    # A Python of the user's own, kept under /tmp: each trial has a private /tmp, so it cannot start there.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    python = bin_dir / "mypython"
    python.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)
    recipe = write_recipe(tmp_path / "toy", {**TOY_SPEC, "command": f"{python} train.py"}, {"train.py": TOY_TRAIN})
    db = tmp_path / "store" / "mlflow.db"
    db.parent.mkdir()
    monkeypatch.chdir(tmp_path / "store")

    result = invoke("evaluate", "--recipe", str(recipe), "--tracking-uri", f"sqlite:///{db}")

    assert result.exit_code == 2
    assert f"starts {python}, which lies under /tmp, a folder trials never see" in result.output
    assert "Fix: start it as `python` (this interpreter)" in result.output
    assert "crashed" not in result.output
    assert not db.exists() and not (tmp_path / "store" / "mlruns").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox user is chosen only when the evaluator runs as root")
def test_a_sandbox_user_that_cannot_run_trials_stops_evaluate_before_any_trial(toy_recipe, tmp_path, monkeypatch):
    monkeypatch.setenv("AUTORESEARCH_SANDBOX_USER", "no-such-user-here")
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "mlflow.db"

    result = invoke("evaluate", "--recipe", str(toy_recipe), "--tracking-uri", f"sqlite:///{db}")

    assert result.exit_code == 2
    assert ("interpreter: sandbox user 'no-such-user-here' does not exist. Fix: create it or set "
            "AUTORESEARCH_SANDBOX_USER") in result.output
    assert not db.exists() and not (tmp_path / "mlruns").exists()


def test_doctor_prints_one_line_per_check_and_exits_2_on_a_problem(toy_recipe, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    db = tmp_path / "mlflow.db"

    good = invoke("doctor", "--recipe", str(toy_recipe), "--tracking-uri", f"sqlite:///{db}", "--agent", "offline")
    lines = good.stdout.splitlines()
    assert good.exit_code == 0, good.output
    names = [ln.split(":")[0].split(None, 1)[1] for ln in lines]
    assert names == ["interpreter", "recipe command", "recipe data", "tracking store", "model backend", "free disk",
                     "GPUs"]
    assert all(ln.startswith("ok ") for ln in lines)

    bad = invoke("doctor", "--recipe", str(toy_recipe), "--tracking-uri", f"sqlite:///{db}", "--agent", "claude")
    assert bad.exit_code == 2
    line = next(ln for ln in bad.stdout.splitlines() if "model backend" in ln)
    assert line.startswith("problem ") and "no credentials are set" in line and "Fix: export ANTHROPIC_API_KEY" in line
    assert not db.exists()  # the doctor never creates a store


def test_claude_without_credentials_stops_run_before_the_store_is_created(toy_recipe, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for var in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    db = tmp_path / "mlflow.db"

    result = invoke("run", "--recipe", str(toy_recipe), "--agent", "claude", "--trials", "1", "--in-process",
                    "--tracking-uri", f"sqlite:///{db}")

    assert result.exit_code == 2
    assert "model backend: --agent claude, but no credentials are set" in result.output
    assert not db.exists()


# ----- item 2: the default store in the recipe folder -----------------------------------------------

def test_init_then_run_in_the_project_folder_with_the_default_store(project):
    init = invoke("init", ".", "--metric", "loss", "--goal", "minimize", "--no-interactive")
    assert init.exit_code == 0, init.output

    result = invoke("run", "--recipe", ".", "--trials", "1", "--agent", "offline", "--in-process")

    assert result.exit_code == 0, result.output
    assert "t0000 baseline ok 0.5 · baseline" in result.output
    assert "protected_violation" not in result.output
    assert (project / "mlflow.db").is_file()  # ./mlflow.db and ./mlruns/ in the folder are ignored by default


def test_a_store_in_the_recipe_folder_that_is_not_ignored_is_refused(project):
    write_recipe(project, TOY_SPEC, {})

    result = invoke("run", "--recipe", ".", "--trials", "1", "--agent", "offline", "--in-process",
                    "--tracking-uri", "sqlite:///runs.db")

    assert result.exit_code == 2
    assert "the tracking store" in result.output and "runs.db lies in the recipe folder and is not ignored" in result.output
    assert f"or add `runs.db*` to {project.resolve()}/.autoresearchignore" in result.output
    assert not (project / "runs.db").exists() and not (project / "mlruns").exists()

    (project / ".autoresearchignore").write_text("# mine\nruns.db*\n")
    assert invoke("doctor", "--recipe", ".", "--tracking-uri", "sqlite:///runs.db").exit_code == 0


# ----- item 3: a user's own files in the recipe folder never count as tampering ---------------------

def test_init_with_its_output_redirected_into_the_recipe_folder(project):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run(f"{sys.executable} -m mlflow_autoresearch.cli init . --metric loss --goal minimize "
                          "--no-interactive > init.log 2>&1", shell=True, cwd=project, env=env, timeout=120)
    log = (project / "init.log").read_text()

    assert done.returncode == 0, log
    assert "baseline: ok" in log and "changed while" not in log
    assert (project / "recipe.yaml").is_file()


def test_an_ignore_glob_never_hides_the_recipes_own_files(tmp_path, monkeypatch):
    # train.py imports model.py; the user's ignore list would match both: the recipe wins.
    recipe = write_recipe(tmp_path / "toy", TOY_SPEC, {
        "train.py": "from model import SCALE\n" + TOY_TRAIN.replace("SCORE = 0.5", "SCORE = 0.5 * SCALE"),
        "model.py": "SCALE = 1.0\n",
        ".autoresearchignore": "*.py\nscratch/\n",
        "scratch/notes.py": "x = 1\n",
    })
    monkeypatch.chdir(tmp_path)
    from mlflow_autoresearch.recipe import load_recipe

    assert list(load_recipe(recipe).snapshot_files()) == ["model.py", "train.py"]
    result = invoke("evaluate", "--recipe", str(recipe), "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}")

    assert result.exit_code == 0, result.output
    assert ": ok, score 0.5, decision baseline" in result.output


# ----- item 4: a baseline that does not pass is fatal, and shows why -------------------------------

def test_a_typo_in_the_command_is_caught_before_any_trial(project):
    write_recipe(project, {**TOY_SPEC, "command": "python trian.py"}, {})

    result = invoke("evaluate", "--recipe", ".")

    assert result.exit_code == 2
    assert "`python trian.py` runs trian.py, which is not a file of the recipe folder" in result.output
    assert "Fix: did you mean train.py?" in result.output
    assert not (project / "mlflow.db").exists()


def test_a_crashing_baseline_stops_evaluate_and_run_with_its_stderr(project):
    write_recipe(project, TOY_SPEC, {"train.py": CRASHING_TRAIN})

    ev = invoke("evaluate", "--recipe", ".")
    assert ev.exit_code == 1
    assert "the baseline t0000 (the recipe's own code) did not pass: crashed" in ev.output
    assert "  | boom: data/train.csv not found" in ev.output

    run = invoke("run", "--recipe", ".", "--trials", "3", "--agent", "offline", "--in-process")
    assert run.exit_code == 1
    assert "t0001 discard crashed · baseline" in run.output  # a fresh baseline: the first was discarded
    assert "  | boom: data/train.csv not found" in run.output
    assert "architecture]" not in run.output and "systems]" not in run.output  # no specialist trial was made

    kept = invoke("run", "--recipe", ".", "--trials", "1", "--agent", "offline", "--in-process",
                  "--allow-failed-baseline")
    assert kept.exit_code == 0, kept.output
    assert "warning: the baseline itself is crashed" in kept.output

    (project / "train.py").write_text(TOY_TRAIN)  # fixed: the next experiment's baseline passes
    fixed = invoke("evaluate", "--recipe", ".", "--experiment", "fixed")
    assert fixed.exit_code == 0 and ": ok, score 0.5, decision baseline" in fixed.output


def test_data_read_from_a_home_trials_never_see_is_refused(tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / "datasets").mkdir(parents=True)
    (home / "datasets" / "train.csv").write_text("1,2\n")
    monkeypatch.setenv("HOME", str(home))  # the evaluator's own home is hidden from every trial
    train = f'DATA = "{home}/datasets/train.csv"  # the user\'s own copy\nprint(open(DATA).read())\n' + TOY_TRAIN
    recipe = write_recipe(tmp_path / "toy", TOY_SPEC, {"train.py": train})
    db = tmp_path / "mlflow.db"
    monkeypatch.chdir(tmp_path)

    result = invoke("evaluate", "--recipe", str(recipe), "--tracking-uri", f"sqlite:///{db}")

    assert result.exit_code == 2
    assert f"recipe data: train.py reads {home}/datasets/train.csv, which lies under {home}: trials never see it" \
        in result.output
    assert "Fix: move the data under $AUTORESEARCH_DATA_DIR" in result.output
    assert not db.exists()
