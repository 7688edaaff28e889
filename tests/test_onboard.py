"""``autoresearch init``: scripts in other styles become recipes that the evaluator scores."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from mlflow_autoresearch.evaluator import evaluate_code
from mlflow_autoresearch.onboard import (
    fit_settings,
    guess_goal,
    init_command,
    local_imports,
    metric_candidates,
    nice_round,
    pick_metric,
    split_files,
)
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


def test_data_and_metric_modules_are_protected_not_editable():
    folder = RESOURCES / "multi_file"
    editable, protected = split_files(folder, local_imports(folder, "train.py"), "train.py")
    assert editable == ["model.py", "train.py", "utils/__init__.py"]
    assert list(protected) == ["utils/data.py"] and "data" in protected["utils/data.py"]


def test_a_module_that_splits_or_scores_is_protected_whatever_its_name(tmp_path):
    (tmp_path / "train.py").write_text("import helpers, scorer, net\n")
    (tmp_path / "helpers.py").write_text("from sklearn.model_selection import train_test_split\n"
                                         "X, Y = train_test_split([1, 2, 3, 4])\n")
    (tmp_path / "scorer.py").write_text("def compute_accuracy_score(p, y):\n    return 1.0\n")
    (tmp_path / "net.py").write_text("def forward(x):\n    return x\n")
    editable, protected = split_files(tmp_path, local_imports(tmp_path, "train.py"), "train.py")
    assert editable == ["net.py", "train.py"]
    assert protected == {"helpers.py": "calls train_test_split", "scorer.py": "defines compute_accuracy_score"}


def test_several_files_become_editable_and_the_custom_format_is_read(tmp_path):
    folder = copy("multi_file", tmp_path)
    r = init(folder, input="")  # utils/data.py is protected without being named
    assert r.exit_code == 0, r.output
    assert "protected: utils/data.py (its name says data)" in r.output
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


# ----- what init chooses: protected files, seeds, acceptance, the quick profile (issues 12, 14) ---------------

NOISY = ("import os, random\n"
         "rng = random.Random(int(os.environ.get('AUTORESEARCH_SEED', '0')))\n"
         "print(f'val_loss: {2.0 + rng.gauss(0, 0.05):.4f}')\n")


def test_the_baseline_runs_on_three_seeds_and_the_settings_fit_its_spread(tmp_path):
    import statistics

    folder = tmp_path / "noisy"
    folder.mkdir()
    (folder / "train.py").write_text(NOISY)
    r = init(folder, "--time-limit", "30", input="")
    assert r.exit_code == 0, r.output
    values = [2.0 + __import__("random").Random(s).gauss(0, 0.05) for s in range(3)]
    values = [round(v, 4) for v in values]
    sd = statistics.stdev(values)
    written = yaml.safe_load((folder / "recipe.yaml").read_text())
    assert written["seeds"] == 2
    assert written["acceptance"] == {"confidence": 0.95, "min_effect": nice_round(2.5 * sd), "max_confirm_seeds": 4}
    assert 1.5 * sd <= written["acceptance"]["min_effect"] <= 3.5 * sd
    assert written["profiles"] == {"quick": {"seeds": 1, "acceptance": {"max_confirm_seeds": 2}}}
    quick = load_recipe(folder, "quick")
    assert quick.seeds == 1 and quick.acceptance.max_confirm_seeds == 2
    assert quick.acceptance.min_effect == written["acceptance"]["min_effect"]  # the profile only lightens
    lines = {ln.split(":")[0]: ln for ln in r.output.splitlines()}
    assert "the score moves between seeds; 3 baseline runs" in lines["seeds"]
    assert f"min_effect {nice_round(2.5 * sd):g}" in lines["acceptance"] and "max_confirm_seeds 4" in lines["acceptance"]
    assert lines["quick profile"].startswith("quick profile: seeds 1, max_confirm_seeds 2")
    assert lines["editable"].startswith("editable: train.py") and lines["protected"].startswith("protected: none")


def test_the_header_points_at_files_that_exist(tmp_path):
    folder = copy("globals_config", tmp_path)
    r = init(folder, "--no-run", "--metric", "val_loss", input="")
    assert r.exit_code == 0, r.output
    header = [ln for ln in (folder / "recipe.yaml").read_text().splitlines() if ln.startswith("#")]
    named = re.findall(r"[\w/.-]+\.md", " ".join(header))
    assert named and all((Path(__file__).parents[1] / n).is_file() for n in named), named
    assert "DESIGN.md" not in " ".join(header)
    assert load_recipe(folder, "quick").seeds == 1
    assert "not measured" in r.output and "quick profile:" in r.output


def test_settings_fit_timings_long_runs_and_deterministic_scores():
    timing = fit_settings("train_seconds", [10.0, 10.4, 9.8], seconds=10)
    assert timing.scale == "relative" and timing.seeds == 2 and timing.max_confirm_seeds == 10
    assert timing.min_effect == 0.08  # 2.5 x 3.1%, to one digit
    long = fit_settings("val_loss", [3.01, 3.05], seconds=900)
    assert long.seeds == 1 and long.max_confirm_seeds == 4 and long.min_effect == 0.07  # 2.5 x 0.028
    same = fit_settings("val_acc", [0.9, 0.9, 0.9], seconds=1)
    assert same.seeds == 1 and same.min_effect == 0 and same.max_confirm_seeds == 0
    assert [nice_round(x) for x in (0.0137, 0.02, 0.031, 0.76, 12.0, 0.0)] == [0.01, 0.02, 0.03, 0.8, 10.0, 0.0]


def test_on_a_terminal_init_asks_which_files_are_protected_and_yes_takes_the_default(tmp_path):
    folder = copy("multi_file", tmp_path)
    # protected: '-' (none), editable: the default (now every module), then the detected rest
    r = init(folder, "--interactive", "--metric", "val_acc", "--goal", "maximize", "--time-limit", "30",
             input="\n-\n\n")
    assert r.exit_code == 0, r.output
    assert "utils/data.py (its name says data)" in r.output and "Protected files" in r.output
    recipe = load_recipe(folder)
    assert recipe.protected == () and "utils/data.py" in recipe.editable
    r = init(folder, "--interactive", "--yes", "--metric", "val_acc", "--goal", "maximize", "--time-limit", "30",
             "--force", input="\n")
    assert r.exit_code == 0, r.output
    assert "Protected files" not in r.output and "Editable files" not in r.output
    assert load_recipe(folder).protected == ("utils/data.py",)


def test_a_long_baseline_runs_twice_and_gets_one_seed_per_trial(tmp_path, monkeypatch):
    import mlflow_autoresearch.onboard as onboard

    monkeypatch.setattr(onboard, "LONG_RUN_SECONDS", 0.0)  # every run counts as long
    folder = tmp_path / "noisy"
    folder.mkdir()
    (folder / "train.py").write_text(NOISY)
    r = init(folder, "--time-limit", "30", input="")
    assert r.exit_code == 0, r.output
    assert "baseline: 1 more run(s)" in r.output and "2 baseline runs" in r.output
    written = yaml.safe_load((folder / "recipe.yaml").read_text())
    assert written["seeds"] == 1 and written["acceptance"]["max_confirm_seeds"] == 4
    r = init(folder, "--time-limit", "30", "--seeds", "3", "--baseline-runs", "1", "--force", input="")
    assert r.exit_code == 0, r.output
    assert "more run" not in r.output and "seeds: 3 per trial (--seeds" in r.output
    assert load_recipe(folder).seeds == 3
