"""recipe.yaml validation: one clear message naming the file, the field and what is allowed.

Through the CLI a bad recipe (or a bad argument) ends with exit code 2 and
nothing written to the tracking store.  Hypothesis fuzzes recipe files and
command lines: never a traceback, always a message.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlflow_autoresearch._errors import RecipeError
from mlflow_autoresearch.cli import cli
from mlflow_autoresearch.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]
GOOD = {
    "name": "toy",
    "editable": ["train.py"],
    "command": "python train.py",
    "metric": {"name": "loss", "goal": "minimize"},
    "gates": [{"metric": "accuracy", "op": ">=", "value": 0.9, "near_miss": 0.01}],
    "limits": {"train_seconds": 20},
}
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def write(folder: Path, spec: dict | str | bytes, files: tuple[str, ...] = ("train.py",)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for rel in files:
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text("print('loss: 1')\n")
    path = folder / "recipe.yaml"
    if isinstance(spec, bytes):
        path.write_bytes(spec)
    else:
        path.write_text(spec if isinstance(spec, str) else yaml.safe_dump(spec, sort_keys=False))
    return folder


def with_(**changes) -> dict:
    spec = copy.deepcopy(GOOD)
    for key, value in changes.items():
        if value is None:
            spec.pop(key, None)
        else:
            spec[key] = value
    return spec


def error_of(folder: Path, profile: str | None = None) -> str:
    with pytest.raises(RecipeError) as e:
        load_recipe(folder, profile)
    return str(e.value)


def test_a_good_recipe_and_the_shipped_ones_load():
    for folder in sorted((ROOT / "recipes").iterdir()):
        if not (folder / "recipe.yaml").is_file():
            continue
        raw = yaml.safe_load((folder / "recipe.yaml").read_text())
        for profile in (None, *raw.get("profiles", {})):
            assert load_recipe(folder, profile).name == raw["name"]


# (changes to the good spec, the field the message must name, what it must say is allowed)
BAD = {
    "unknown top-level field": (dict(colour="red"), "colour", "allowed fields: acceptance, artifact, command, data, description"),
    "unknown limit": (dict(limits={"train_seconds": 5, "gpu_hours": 1}), "limits.gpu_hours",
                      "allowed fields: artifact_bytes, code_bytes, disk_bytes"),
    "missing limits": (dict(limits=None), "limits", "required field is missing"),
    "limits not a mapping": (dict(limits=[5]), "limits", "must be a mapping of fields (allowed: artifact_bytes"),
    "goal": (dict(metric={"name": "loss", "goal": "lowest"}), "metric.goal", "'minimize' or 'maximize'"),
    "gate operator": (dict(gates=[{"metric": "a", "op": "=>", "value": 1}]), "gates.0.op", "'>=', '>', '<=' or '<'"),
    "gate value nan": (dict(gates=[{"metric": "a", "op": ">=", "value": float("nan")}]), "gates.0.value",
                       "finite number"),
    "negative budget": (dict(limits={"train_seconds": -1}), "limits.train_seconds", "greater than 0"),
    "infinite budget": (dict(limits={"train_seconds": float("inf")}), "limits.train_seconds", "finite number"),
    "boolean seeds": (dict(seeds=True), "seeds", "must be a number, not true"),
    "too many seeds": (dict(seeds=1000), "seeds", "less than or equal to 100"),
    "editable not a list": (dict(editable="train.py"), "editable", "must be a list"),
    "editable empty": (dict(editable=[]), "editable", "at least 1 item"),
    "editable escapes with ..": (dict(editable=["../train.py"]), "editable", "plain relative path"),
    "editable absolute": (dict(editable=["/etc/passwd"]), "editable", "plain relative path"),
    "editable ./": (dict(editable=["./train.py"]), "editable", "no '..', no leading '/' or './'"),
    "editable twice": (dict(editable=["train.py", "train.py"]), "editable", "listed twice"),
    "editable hidden": (dict(editable=[".secret.py"]), "editable", "never part of a snapshot"),
    "protected is recipe.yaml": (dict(protected=["recipe.yaml"]), "protected", "never part of a snapshot"),
    "both editable and protected": (dict(protected=["train.py"]), "(top level)", "both editable and protected"),
    "name with spaces": (dict(name="my recipe!"), "name", "should match pattern"),
    "bad regex": (dict(metric_regex={"loss": "("}), "metric_regex", "not a regular expression"),
    "regex without group": (dict(metric_regex={"loss": "loss=\\d+"}), "metric_regex", "one capture group"),
    "specialist role": (dict(specialists=["Chief Scientist"]), "specialists.0.name", "should match pattern"),
    "knob range": (dict(knobs=[{"name": "LR", "low": 1, "high": 0}]), "knobs.0", "must be below high"),
    "command missing": (dict(command=None), "command", "required field is missing"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_recipe_gets_one_message_naming_file_field_and_what_is_allowed(tmp_path, case):
    changes, field, allowed = BAD[case]
    folder = write(tmp_path / "r", with_(**changes))
    msg = error_of(folder)
    assert msg.startswith(f"{folder / 'recipe.yaml'}: ")
    assert f"field '{field}'" in msg, msg
    assert allowed in msg, msg
    assert "Traceback" not in msg and "pydantic" not in msg.lower() and "Value error" not in msg


def test_files_the_recipe_names_must_exist_as_regular_files(tmp_path):
    folder = write(tmp_path / "r", with_(editable=["train.py", "model.py"]))
    assert "field 'editable': 'model.py' is not a regular file" in error_of(folder)
    (folder / "model.py").symlink_to(folder / "train.py")
    assert "field 'editable': 'model.py' is not a regular file" in error_of(folder)
    folder2 = write(tmp_path / "r2", with_(knowledge=["notes.md"]))
    assert "field 'knowledge': 'notes.md'" in error_of(folder2)


@pytest.mark.parametrize("content, says", [
    ("", "must be a mapping of fields (name, editable, command"),
    ("[1, 2]", "must be a mapping of fields"),
    ("name: [", "not valid YAML"),
    ("name: !!python/object/apply:os.system ['true']", "not valid YAML"),
    (b"name: \xff\xfe toy\n", "not UTF-8 text"),
    ("[" * 5000 + "]" * 5000, "not valid YAML"),
    ("1: a\n2: b\n", "must be a mapping of fields"),
])
def test_unreadable_files_get_a_message_not_a_traceback(tmp_path, content, says):
    folder = write(tmp_path / "r", content)
    msg = error_of(folder)
    assert msg.startswith(str(folder / "recipe.yaml")) and says in msg


def test_missing_recipe_and_profiles(tmp_path):
    assert "no recipe file here" in error_of(tmp_path / "nowhere")
    folder = write(tmp_path / "r", {**GOOD, "profiles": {"quick": {"seeds": 1}, "tiny": {"seeds": 2}}})
    assert "no profile 'huge'; this recipe has: quick, tiny" in error_of(folder, "huge")
    assert load_recipe(folder, "tiny").seeds == 2
    bad = write(tmp_path / "r2", {**GOOD, "profiles": {"quick": 5}})
    assert "field 'profiles': must map profile names to mappings" in error_of(bad, "quick")
    bad_seeds = write(tmp_path / "r3", {**GOOD, "profiles": {"quick": {"seeds": 0}}})
    assert "field 'seeds'" in error_of(bad_seeds, "quick")
    assert "field 'root': unknown field" in error_of(write(tmp_path / "r4", {**GOOD, "root": "/"}))


# ----- through the CLI --------------------------------------------------------------------------------


@pytest.fixture
def cli_home(tmp_path, monkeypatch) -> Path:
    """An empty working folder with no tracking URI set: where a stray mlflow.db would appear."""
    home = tmp_path / "cwd"
    home.mkdir()
    monkeypatch.chdir(home)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return home


def assert_refused(result, *says: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    for s in says:
        assert s in result.output, result.output


def assert_nothing_written(home: Path) -> None:
    assert sorted(os.listdir(home)) == [], "something was written to the tracking store"


def test_cli_bad_recipe_exits_2_and_writes_nothing(tmp_path, cli_home):
    folder = write(tmp_path / "bad", with_(metric={"name": "loss", "goal": "lowest"}))
    result = CliRunner().invoke(cli, ["evaluate", "--recipe", str(folder)])
    assert_refused(result, "autoresearch: error:", str(folder / "recipe.yaml"), "field 'metric.goal'",
                   "'minimize' or 'maximize'")
    db = tmp_path / "elsewhere.db"
    result = CliRunner().invoke(cli, ["evaluate", "--recipe", str(folder), "--tracking-uri", f"sqlite:///{db}"])
    assert_refused(result, "field 'metric.goal'")
    assert not db.exists()
    assert_nothing_written(cli_home)


def test_cli_bad_arguments_exit_2_and_write_nothing(tmp_path, cli_home):
    good = write(tmp_path / "good", GOOD)
    runner = CliRunner()
    assert_refused(runner.invoke(cli, ["evaluate"]), "--recipe is required")
    assert_refused(runner.invoke(cli, ["evaluate", "--recipe", str(good), "--seeds", "-3"]), "--seeds")
    assert_refused(runner.invoke(cli, ["evaluate", "--recipe", str(good), "--code", str(tmp_path / "nope")]),
                   "does not exist")
    assert_refused(runner.invoke(cli, ["evaluate", "--recipe", str(good), "--profile", "fast"]), "no profile 'fast'")
    assert_refused(runner.invoke(cli, ["evaluate", "--trial", "t0007; rm -rf /"]), "not a trial id")
    assert_refused(runner.invoke(cli, ["evaluate", "--trial", "a" * 32]), "there is no tracking store")
    assert_nothing_written(cli_home)


@pytest.mark.slow  # a fresh interpreter importing the CLI: ~5 s
def test_the_installed_command_exits_2_with_one_message(tmp_path, cli_home):
    folder = write(tmp_path / "bad", with_(limits={"train_seconds": 5, "gpu_hours": 1}))
    exe = Path(sys.executable).with_name("autoresearch")
    r = subprocess.run([str(exe), "evaluate", "--recipe", str(folder)], capture_output=True, text=True,
                       timeout=120, cwd=cli_home)
    assert r.returncode == 2
    assert r.stderr.startswith(f"autoresearch: error: {folder / 'recipe.yaml'}: invalid recipe")
    assert "field 'limits.gpu_hours': unknown field; allowed fields:" in r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert_nothing_written(cli_home)


# ----- fuzzing ------------------------------------------------------------------------------------------

yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
FIELDS = sorted({*GOOD, "seeds", "protected", "preflight", "evaluate", "knobs", "profiles", "specialists",
                 "network", "artifact", "metric_regex", "knowledge", "min_improvement", "acceptance"})
LIMIT_FIELDS = ["train_seconds", "total_seconds", "memory_gb", "processes", "output_bytes", "grace_seconds"]


def load_outcome(folder: Path) -> str | None:
    """None when the recipe loads; else the message, which must be a RecipeError naming the file."""
    try:
        load_recipe(folder)
    except RecipeError as e:
        assert str(e).startswith(str(folder)), str(e)
        assert "Traceback" not in str(e)
        return str(e)
    return None


@FUZZ
@given(text=st.text(max_size=300))
def test_fuzzed_recipe_text_never_raises_anything_but_a_recipe_error(tmp_path, text):
    load_outcome(write(tmp_path / "r", text))


@FUZZ
@given(raw=st.binary(max_size=200))
def test_fuzzed_recipe_bytes_never_raise_anything_but_a_recipe_error(tmp_path, raw):
    load_outcome(write(tmp_path / "r", raw))


@FUZZ
@given(field=st.sampled_from(FIELDS), value=yaml_values)
def test_fuzzed_field_values_are_refused_by_name(tmp_path, field, value):
    spec = with_()
    spec[field] = value
    msg = load_outcome(write(tmp_path / "r", spec))
    if msg is not None:
        assert field in msg, msg


@FUZZ
@given(field=st.sampled_from(LIMIT_FIELDS), value=yaml_values)
def test_fuzzed_limits_are_refused_by_name(tmp_path, field, value):
    spec = with_()
    spec["limits"] = {**spec["limits"], field: value}
    msg = load_outcome(write(tmp_path / "r", spec))
    if msg is not None:
        assert f"limits.{field}" in msg or "'limits'" in msg, msg


options = st.lists(st.tuples(
    st.sampled_from(["--seeds", "--profile", "--experiment", "--gpu", "--trial", "--code", "--tracking-uri"]),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
    | st.integers(-5, 5).map(str),
), max_size=4)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(command=st.sampled_from(["evaluate", "lineage", "run"]), opts=options, text=st.text(max_size=80))
def test_fuzzed_command_lines_exit_2_with_a_message_and_write_nothing(tmp_path, cli_home, command, opts, text):
    folder = write(tmp_path / "fuzz", text)
    if load_outcome(folder) is None:
        return  # a valid recipe by chance (it never is with this text): it would run
    args = [command, "--recipe", str(folder)]
    for name, value in opts:
        if command != "evaluate" and name in ("--seeds", "--gpu", "--trial", "--code"):
            continue
        if name == "--tracking-uri":
            value = f"sqlite:///{tmp_path / 'fuzz.db'}"
        args += [name, value]
    result = CliRunner().invoke(cli, args)
    assert_refused(result)
    assert result.output.strip(), "exit 2 without a message"
    assert_nothing_written(cli_home)
    assert not (tmp_path / "fuzz.db").exists()


# ----- data: what training may read, what only the evaluation may (issue 13) -----

@pytest.mark.parametrize("data, field, words", [
    ({"train": ["m/x.npz"], "eval": ["m/x.npz"]}, "data", "both train and eval"),
    ({"train": ["m"], "eval": ["m/test.npz"]}, "data", "overlap"),
    ({"eval": ["../etc/shadow"]}, "data.eval", "plain relative path"),
    ({"train": ["/abs"]}, "data.train", "plain relative path"),
    ({"local": [".git"]}, "data.local", "hidden folders"),
    ({"eval": ["pkg:../x"]}, "data.eval", "plain relative path"),
    ({"shared": ["x"]}, "data.shared", "allowed fields: eval, local, prepare, train"),
])
def test_bad_data_sections_are_refused_with_the_field(tmp_path, data, field, words):
    folder = write(tmp_path / "r", with_(data=data))
    msg = error_of(folder)
    assert f"field '{field}'" in msg and words in msg, msg


def test_a_missing_local_data_folder_is_refused(tmp_path):
    folder = write(tmp_path / "r", with_(data={"local": ["data"]}))
    assert "field 'data.local': 'data' is not a folder" in error_of(folder)


def test_the_ignore_list_keeps_a_users_files_out_of_the_snapshot(tmp_path):
    folder = write(tmp_path / "r", with_())
    for rel in ("init.log", "mlflow.db", "mlruns/0/meta.yaml", "__pycache__/x.pyc", "wandb/run/x", "outputs/o",
                "checkpoints/c.pt", "runs/r.txt", "keep/me.txt", "notes.md"):
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text("x")
    (folder / ".autoresearchignore").write_text("# ours\nruns/\n!*.log\n")
    files = list(load_recipe(folder).snapshot_files())
    assert "runs/r.txt" not in files and "mlflow.db" not in files and not any(f.startswith("mlruns") for f in files)
    assert "init.log" in files  # `!*.log` took the default back
    assert "keep/me.txt" in files and "notes.md" in files
