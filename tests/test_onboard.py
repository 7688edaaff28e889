"""``autoresearch init``: scripts in other styles become recipes that the evaluator scores."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from mlflow_autoresearch.evaluator import evaluate_code
from mlflow_autoresearch.onboard import guess_goal, init_command, local_imports, metric_candidates, pick_metric
from mlflow_autoresearch.outcome import Outcome
from mlflow_autoresearch.recipe import load_recipe

RESOURCES = Path(__file__).parent / "resources" / "onboard"


def copy(name: str, tmp_path: Path) -> Path:
    dest = tmp_path / name
    shutil.copytree(RESOURCES / name, dest)
    return dest


def init(*args: str, input: str | None = None):
    return CliRunner().invoke(init_command, [str(a) for a in args], input=input)


# ----- detection on text and files (no runs) ----------------------------------------

def test_custom_log_format_yields_a_metric_and_a_regex_that_reads_it():
    out = "step 100: train loss 2.91, val loss 3.01\nstep 200: train loss 2.51, val loss 2.63\n"
    cands = {c.name: c for c in metric_candidates(out)}
    assert {"step", "train_loss", "val_loss"} <= set(cands)
    chosen = pick_metric(list(cands.values()))
    assert chosen.name == "val_loss" and chosen.value == 2.63
    assert re.findall(chosen.regex, out, re.MULTILINE) == ["3.01", "2.63"]
    assert re.findall(cands["train_loss"].regex, out, re.MULTILINE) == ["2.91", "2.51"]


def test_other_formats_and_goals():
    picked = pick_metric(metric_candidates("epoch 3 | loss: 0.52 | val_acc: 0.91\n"))
    assert (picked.name, picked.value) == ("val_acc", 0.91)
    picked = pick_metric(metric_candidates("Epoch 3/10 loss 0.5\n"))
    assert (picked.name, picked.value) == ("loss", 0.5)
    native = pick_metric(metric_candidates("train_loss: 0.9\nval_loss: 1.2\n"))
    assert native.name == "val_loss" and native.regex is None  # the evaluator reads `name: value` lines itself
    assert pick_metric(metric_candidates("step 10 done\nlr 0.1\n")) is None
    assert guess_goal("val_loss") == "minimize" and guess_goal("val_bpb") == "minimize"
    assert guess_goal("top1_acc") == "maximize" and guess_goal("core") == "maximize"
    assert guess_goal("widgets") is None


def test_local_imports_follow_modules_and_packages():
    assert local_imports(RESOURCES / "multi_file", "train.py") == [
        "model.py", "train.py", "utils/__init__.py", "utils/data.py"]


# ----- the command --------------------------------------------------------------------

@pytest.mark.slow
def test_flags_only_on_an_argparse_pytorch_script_then_evaluate_reads_its_own_format(tmp_path):
    folder = copy("argparse_torch", tmp_path)
    r = init(folder, "--command", "python train.py --epochs 20 --lr 0.1", "--metric", "val_loss",
             "--metric-regex", r"val loss ([0-9.]+)", "--goal", "minimize", "--editable", "train.py",
             "--time-limit", "120", "--no-interactive")
    assert r.exit_code == 0, r.output
    assert "baseline: ok" in r.output and "dry run" not in r.output  # every answer came from a flag
    recipe = load_recipe(folder)
    assert recipe.command == "python train.py --epochs 20 --lr 0.1" and recipe.limits.train_seconds == 120
    assert recipe.metric_regex == {"val_loss": r"val loss ([0-9.]+)"}
    ev = evaluate_code(recipe, folder)
    assert ev.outcome is Outcome.OK and 0 < ev.score < 0.5
    assert ev.histories["val_loss"] and len(ev.histories["val_loss"]) == 4  # every logged step, in order


def test_no_flags_on_a_globals_script_detects_everything_from_a_dry_run(tmp_path):
    folder = copy("globals_config", tmp_path)
    r = init(folder, input="")  # not a terminal: detect, never ask
    assert r.exit_code == 0, r.output
    written = yaml.safe_load((folder / "recipe.yaml").read_text())
    assert written["command"] == "python train.py" and written["editable"] == ["train.py"]
    assert written["metric"] == {"name": "val_loss", "goal": "minimize"}
    assert written["limits"]["train_seconds"] == 60 and "metric_regex" not in written
    assert "command: python train.py (detected)" in r.output and "baseline: ok" in r.output
    ev = evaluate_code(load_recipe(folder), folder)
    assert ev.outcome is Outcome.OK and ev.score == pytest.approx(0.020071)


def test_several_files_become_editable_and_the_custom_format_is_read(tmp_path):
    folder = copy("multi_file", tmp_path)
    r = init(folder, "--protected", "utils/data.py", input="")
    assert r.exit_code == 0, r.output
    recipe = load_recipe(folder)
    assert recipe.editable == ("model.py", "train.py", "utils/__init__.py")
    assert recipe.protected == ("utils/data.py",)
    assert recipe.metric.name == "val_acc" and recipe.metric.goal == "maximize" and "val_acc" in recipe.metric_regex
    trial = tmp_path / "trial"
    shutil.copytree(folder, trial)
    (trial / "utils" / "data.py").write_text("def validation():\n    return [(0.0, 0)]\n")
    assert evaluate_code(recipe, trial).outcome is Outcome.PROTECTED_VIOLATION
    ev = evaluate_code(recipe, folder)
    assert ev.outcome is Outcome.OK and ev.score == 1.0


@pytest.mark.parametrize("args, names", [
    (["--goal", "sideways"], "--goal"),
    (["--metric", "val_accuracy_typo", "--goal", "maximize"], "--metric val_accuracy_typo"),
    (["--editable", "missing.py"], "--editable missing.py"),
    (["--metric", "val_acc", "--metric-regex", "val_acc [0-9.]+"], "--metric-regex"),
    (["--metric-regex", "val_acc ([0-9.]+)"], "--metric-regex needs --metric"),
    (["--command", "python nonexistent.py", "--editable", "train.py", "--metric", "val_acc"], "did not run"),
])
def test_a_bad_flag_exits_2_and_writes_no_recipe(tmp_path, args, names):
    folder = copy("multi_file", tmp_path)
    r = init(folder, *args, "--time-limit", "30", input="")
    assert r.exit_code == 2, r.output
    assert names in r.output
    assert not (folder / "recipe.yaml").exists()


def test_missing_answer_without_a_terminal_names_the_flag(tmp_path):
    folder = tmp_path / "two"
    folder.mkdir()
    for name in ("a.py", "b.py"):
        (folder / name).write_text("if __name__ == '__main__':\n    print('widgets 3')\n")
    r = init(folder, input="")
    assert r.exit_code == 2 and "--command is required" in r.output
    r = init(folder, "--command", "python a.py", input="")
    assert r.exit_code == 2 and "--metric is required" in r.output and "widgets" in r.output
    r = init(folder, "--command", "python a.py", "--metric", "widgets", input="")
    assert r.exit_code == 2 and "--goal is required" in r.output
    assert not (folder / "recipe.yaml").exists()


def test_refuses_to_overwrite_without_force(tmp_path):
    folder = copy("globals_config", tmp_path)
    (folder / "recipe.yaml").write_text("name: mine\n")
    r = init(folder, input="")
    assert r.exit_code == 2 and "--force" in r.output
    assert (folder / "recipe.yaml").read_text() == "name: mine\n"
    r = init(folder, "--force", input="")
    assert r.exit_code == 0 and load_recipe(folder).metric.name == "val_loss"


def test_interactive_answers_questions_with_detected_defaults(tmp_path):
    folder = copy("globals_config", tmp_path)
    # command (default), editable (default), metric: train_loss instead of the detected val_loss,
    # time limit 45, goal (default from the name)
    r = init(folder, "--interactive", input="\n\ntrain_loss\n45\n\n")
    assert r.exit_code == 0, r.output
    assert "numbers the run printed" in r.output and "val_loss=0.020071" in r.output
    recipe = load_recipe(folder)
    assert recipe.metric.name == "train_loss" and recipe.metric.goal == "minimize"
    assert recipe.limits.train_seconds == 45


def test_a_metric_named_by_flag_in_a_custom_format_gets_its_regex(tmp_path):
    folder = tmp_path / "custom"
    folder.mkdir()
    (folder / "train.py").write_text(
        "LR = 0.5  # step size\n"
        "for step in (100, 200):\n"
        "    print(f'step {step}: train loss {1 / step:.4f}, val loss {LR / step:.4f}')\n")
    for extra in ([], ["--time-limit", "30"]):  # with a dry run, and with only the baseline run
        r = init(folder, "--metric", "val_loss", "--force", *extra, input="")
        assert r.exit_code == 0, r.output
        recipe = load_recipe(folder)
        assert set(recipe.metric_regex) == {"val_loss"} and recipe.metric.goal == "minimize"
        assert evaluate_code(recipe, folder).score == 0.0025


def test_a_script_reading_its_data_folder_runs_and_the_users_files_leave_trials_alone(tmp_path):
    """nanoGPT-style `data/` reads next to the script; `init . > init.log` and a store in the folder (issue 13)."""
    from mlflow_autoresearch.evaluator import evaluate_code

    folder = tmp_path / "reads_data"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "train.csv").write_text("1,2\n")
    (folder / "train.py").write_text("import os\nhere = os.path.dirname(os.path.abspath(__file__))\n"
                                     "print('val_loss:', len(open(os.path.join(here, 'data/train.csv')).read()))\n")
    r = init(folder, input="")
    assert r.exit_code == 0, r.output
    recipe = load_recipe(folder)
    assert recipe.data.local == ("data",) and (folder / ".autoresearchignore").exists()
    (folder / "init.log").write_text(r.output)
    (folder / "mlflow.db").write_bytes(b"SQLite format 3\0")
    (folder / "mlruns" / "0").mkdir(parents=True)
    ev = evaluate_code(recipe, folder)
    assert ev.outcome is Outcome.OK and ev.score == 4.0, ev.reason


@pytest.mark.slow
def test_init_then_the_loop_runs_trials_on_the_script(tmp_path, monkeypatch):
    """issue 4: a plain PyTorch script that prints its own log format, onboarded, then looped on."""
    from mlflow_autoresearch.lineage import MlflowStore
    from mlflow_autoresearch.loop import run_loop
    from mlflow_autoresearch.research import DUPLICATE_OF
    from mlflow_autoresearch.settings import make_settings

    folder = copy("argparse_torch", tmp_path)
    r = init(folder, "--command", "python train.py --epochs 20 --lr 0.1", "--metric", "val_loss",
             "--metric-regex", r"val loss ([0-9.]+)", "--goal", "minimize", "--editable", "train.py",
             "--time-limit", "120", "--no-interactive")
    assert r.exit_code == 0, r.output
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    store = MlflowStore("onboarded", uri)
    result = run_loop(load_recipe(folder), make_settings(trials=3, agent="offline", in_process=True,
                                                         tracking_uri=uri), store=store, echo=lambda m: None)
    trials = store.trials()
    counted = [t for t in trials if DUPLICATE_OF not in t.tags]  # a refused duplicate costs no budget
    assert result.trials == 3 and len(counted) == 4 and all(t.finished for t in trials)
    assert trials[0].decision == "baseline" and trials[0].score is not None
    evaluated = [t for t in trials[1:] if t.outcome is not Outcome.INVALID_PROPOSAL]
    assert evaluated, [(t.short, t.outcome, t.reason) for t in trials]
    assert all(t.parent_id for t in trials[1:])
