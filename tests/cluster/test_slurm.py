"""The ``slurm`` project backend and the loop on it, against a real one-node SLURM on 127.0.0.1.

The cluster (munged, slurmctld, slurmd from Debian's packages) is started in a
temporary folder on free ports by ``mlflow_autoresearch.slurm.local``, the
script ``.ci/run`` uses too, and stopped at the end.  Without the packages (or
without root) the cluster tests are skipped, saying so; the tests of the
config, the batch script and the state mapping run everywhere.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest

from mlflow_autoresearch._errors import UsageError
from mlflow_autoresearch.lineage import MlflowStore
from mlflow_autoresearch.loop._cluster import evaluation_seconds, job_config
from mlflow_autoresearch.outcome import Outcome
from mlflow_autoresearch.recipe import load_recipe
from mlflow_autoresearch.slurm import SlurmBackend, parse_config, run_status
from mlflow_autoresearch.slurm._backend import render_script
from mlflow_autoresearch.slurm.local import INSTALL_HINT, LocalSlurm, missing_binaries
from mlflow_autoresearch.trial import create_trial, evaluate_trial, recipe_files
from tests.conftest import ROOT, TOY_SPEC, TOY_TRAIN, write_recipe
from tests.loop.scripted import budget_trials

SLOW_TRAIN = """\
import time
SCORE = 0.5  # what this toy prints
time.sleep(8)
print(f"loss: {SCORE}")
print("accuracy: 0.9")
"""
OVERTIME_TRAIN = """\
import time
SCORE = 0.5  # what this toy prints
time.sleep(250)
print(f"loss: {SCORE}")
print("accuracy: 0.9")
"""


# ----- no cluster needed --------------------------------------------------------------------------

def test_the_backend_is_registered_with_mlflow():
    from mlflow.projects.backend import loader

    assert isinstance(loader.load_backend("slurm"), SlurmBackend)


def test_config_errors_name_the_key_and_the_file(tmp_path):
    bad = tmp_path / "slurm.json"
    bad.write_text(json.dumps({"partiton": "gpu", "cpus": 0}))
    with pytest.raises(UsageError) as e:
        parse_config(str(bad))
    text = str(e.value)
    assert str(bad) in text and "partiton" in text and "known keys" in text and "cpus" in text
    # the keys MLflow adds to every backend config are not the user's mistake
    assert parse_config({"ENV_MANAGER": "local", "SYNCHRONOUS": False, "partition": "gpu"}).partition == "gpu"


def test_batch_script_carries_resources_environment_and_setup(tmp_path):
    config = parse_config({"partition": "gpu", "account": "lab", "gpus": 2, "mem": "16G", "time": "30",
                           "setup": ["module load cuda/12.4"], "sbatch_args": ["--constraint=a100"]})
    script = render_script(config, command="python -m x --trial abc", work_dir="/proj", name="mlflow-abc",
                           run_env={"MLFLOW_RUN_ID": "abc", "MLFLOW_TRACKING_URI": "http://mlflow:5000"},
                           stdout=tmp_path / "o", stderr=tmp_path / "e")
    for line in ("#SBATCH --partition=gpu", "#SBATCH --account=lab", "#SBATCH --gres=gpu:2", "#SBATCH --mem=16G",
                 "#SBATCH --time=30", "#SBATCH --no-requeue", "#SBATCH --job-name=mlflow-abc",
                 "#SBATCH --constraint=a100", "export MLFLOW_RUN_ID=abc", "module load cuda/12.4"):
        assert line in script.splitlines(), line
    assert script.index("module load") < script.index("python -m x --trial abc")
    assert "exit $status" in script  # the job's exit code is the command's, after the logs are attached
    quiet = render_script(parse_config({"job_attaches_logs": False}), command="python -m x", work_dir="/p",
                          name="n", run_env={}, stdout=tmp_path / "o", stderr=tmp_path / "e")
    assert quiet.splitlines()[-1] == "exec python -m x" and "log_artifact" not in quiet


def test_slurm_states_map_to_mlflow_run_states():
    from mlflow.entities import RunStatus

    expected = {"PENDING": "SCHEDULED", "CONFIGURING": "SCHEDULED", "RUNNING": "RUNNING", "COMPLETING": "RUNNING",
                "COMPLETED": "FINISHED", "CANCELLED": "KILLED", "TIMEOUT": "FAILED", "OUT_OF_MEMORY": "FAILED",
                "NODE_FAIL": "FAILED", "GONE": "FAILED"}
    assert {s: RunStatus.to_string(run_status(s)) for s in expected} == expected


def test_job_time_and_memory_come_from_the_recipe(tmp_path):
    spec = {**TOY_SPEC, "seeds": 2, "limits": {"train_seconds": 600, "eval_seconds": 60, "grace_seconds": 5,
                                               "memory_gb": 8}}
    recipe = load_recipe(write_recipe(tmp_path / "r", spec, {"train.py": TOY_TRAIN}))
    assert evaluation_seconds(recipe) == 2 * (600 + 60 + 10)
    raw = job_config(recipe, {"partition": "gpu"}, "run1")
    assert raw["time"] == str(-(-(1340 + 300) // 60)) and raw["mem"] == "10240M" and raw["run_id"] == "run1"
    assert raw["job_attaches_logs"] is False  # the loop attaches the logs itself when it sees the job end
    assert job_config(recipe, {"time": "2:00:00", "mem": "4G"}, "r")["time"] == "2:00:00"


# ----- a real local cluster --------------------------------------------------------------------

def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "a local SLURM cluster needs root (slurmd starts jobs as their user)"
    missing = missing_binaries()
    if missing:
        return f"SLURM is not installed here (missing {' '.join(missing)}; {INSTALL_HINT})"
    return None


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """The cluster .ci/run started (``$AUTORESEARCH_TEST_SLURM_CONF``), else one of this module's own.

    Never the machine's own ``SLURM_CONF``: these tests must not submit to a real cluster.
    """
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    shared = os.environ.get("AUTORESEARCH_TEST_SLURM_CONF")
    c = LocalSlurm(Path(shared).parent) if shared else LocalSlurm(tmp_path_factory.mktemp("slurm"), cpus=4).start()
    saved = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(c.conf)
    yield c
    if not shared:
        c.stop()
    if saved is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = saved


def _jobs(*fields: str) -> list[list[str]]:
    out = subprocess.run(["squeue", "-h", "--states=all", "-o", "|".join(fields)], capture_output=True, text=True,
                         check=True)
    return [line.split("|") for line in out.stdout.splitlines()]


def _loop(recipe: Path, uri: str, config: Path, trials: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "mlflow_autoresearch.cli", "run", "--recipe", str(recipe), "--trials", str(trials),
            "--agent", "tests.loop.scripted:ScriptedSpecialist", "--tracking-uri", uri, "--backend", "slurm",
            "--backend-config", str(config), "--proposals-ahead", "0", *extra]


def _config(path: Path, **values) -> Path:
    path.write_text(json.dumps({"job_dir": str(path.parent / "jobs"), "poll_seconds": 0.5, **values}))
    return path


def _env() -> dict[str, str]:
    return {**os.environ, "AUTORESEARCH_LEASE_SECONDS": "30"}


@pytest.fixture(scope="module")
def overtime(cluster, tmp_path_factory):
    """A loop whose baseline's job has a 1-minute ``--time`` and trains for 250 s (limits allow 300).

    Started first and collected by the last test, so its minute overlaps the other tests.
    """
    work = tmp_path_factory.mktemp("overtime")
    spec = {**TOY_SPEC, "name": "overtime", "limits": {"train_seconds": 300, "grace_seconds": 1}}
    recipe = write_recipe(work / "overtime", spec, {"train.py": OVERTIME_TRAIN})
    uri = f"sqlite:///{work / 'mlflow.db'}"
    MlflowStore("overtime", uri)
    # The baseline times out on purpose: --allow-failed-baseline lets the loop record it and end with exit 0.
    proc = subprocess.Popen(_loop(recipe, uri, _config(work / "slurm.json", time="1"), 0, "--allow-failed-baseline"),
                            cwd=ROOT, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    yield proc, uri
    proc.kill()


@pytest.mark.slow
def test_mlflow_run_submits_the_evaluate_entry_point_as_a_job(cluster, overtime, tmp_path):
    """`mlflow run . -e evaluate --backend slurm --backend-config slurm.json`: MLflow's own command."""
    recipe = write_recipe(tmp_path / "toy", TOY_SPEC, {"train.py": TOY_TRAIN})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    store = MlflowStore("toy", uri)
    first = create_trial(store, load_recipe(recipe), recipe_files(load_recipe(recipe)), specialist="baseline",
                         hypothesis="baseline")
    trial = evaluate_trial(store, first.run_id).run_id  # a finished trial: `evaluate` re-scores it
    mlflow_cli = Path(sys.executable).parent / "mlflow"
    sub = subprocess.run([str(mlflow_cli), "run", ".", "-e", "evaluate", "--backend", "slurm", "--backend-config",
                          str(_config(tmp_path / "slurm.json")), "-P", f"trial={trial}", "-P", f"recipe={recipe}",
                          "--experiment-name", "toy"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert sub.returncode == 0, sub.stderr[-2000:]
    # MLflow runs a plug-in backend asynchronously: `mlflow run` returns once the job is submitted.
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not any(t.specialist == "rescore" and t.finished for t in store.trials()):
        time.sleep(0.5)
    (again,) = [t for t in store.trials() if t.specialist == "rescore"]
    assert again.outcome is Outcome.OK and again.score == 0.5
    (project_run,) = [r for r in store.client.search_runs([store.experiment_id])
                      if r.data.tags.get("mlflow.project.backend") == "slurm"]
    assert project_run.data.tags["autoresearch.rescored_as"] == again.run_id
    job = project_run.data.tags["slurm.job_id"]
    while time.monotonic() < deadline and [s for j, s in _jobs("%i", "%T") if j == job] != ["COMPLETED"]:
        time.sleep(0.5)  # the job's last step attaches its own stdout/stderr to the run
    assert [s for j, s in _jobs("%i", "%T") if j == job] == ["COMPLETED"]
    logs = {a.path for a in store.client.list_artifacts(project_run.info.run_id, "logs")}
    assert logs == {f"logs/slurm-{job}.out", f"logs/slurm-{job}.err"}


@pytest.mark.slow
@pytest.mark.timeout(900)  # three loops of real jobs, each trial's confirmation seeds jobs too
@pytest.mark.skip(reason="issue 18 reopened: after the issue-14 merges the third loop (resume to the end) "
                         "ran past 540 s on a quiet machine (it passed in 267 s before them); not yet diagnosed")
def test_loop_on_slurm_survives_sigkill_and_sigterm_without_a_trial_twice(cluster, overtime, tmp_path):
    """4 trials, 2 jobs at once; SIGKILL while both run, SIGTERM while jobs run, then to the end."""
    recipe = write_recipe(tmp_path / "slow", TOY_SPEC, {"train.py": SLOW_TRAIN})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cmd = _loop(recipe, uri, _config(tmp_path / "slurm.json"), 4, "--slots", "2")
    store = MlflowStore("toy", uri)

    def running_jobs() -> list[str]:
        names = {f"mlflow-{t.run_id}" for t in store.trials()}
        return [j for j, n, s in _jobs("%i", "%j", "%T") if n in names and s == "RUNNING"]

    log = tmp_path / "loop.log"

    def start_and_wait_for(predicate, what: str) -> subprocess.Popen:
        with log.open("w") as f:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=f, text=True)
        deadline = time.monotonic() + 150
        while not predicate():
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"{what}: not reached ({proc.wait()}): {log.read_text()[-3000:]}")
            time.sleep(0.3)
        return proc

    # 1. Baseline done, two trials' jobs running at once: SIGKILL the loop. The jobs go on.
    proc = start_and_wait_for(lambda: any(t.finished for t in store.trials()) and len(running_jobs()) == 2,
                              "two jobs running")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert running_jobs(), "the jobs outlive the loop that submitted them"

    # 2. The same command waits on those jobs instead of submitting them again; SIGTERM it while a
    #    job runs: the loop stops cleanly and scancels what it was waiting on.
    proc = start_and_wait_for(lambda: "is still SLURM job" in log.read_text(), "adopted")
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=90)
    err2 = log.read_text()
    assert proc.returncode == 0, err2[-3000:]
    assert "stopped by SIGTERM" in err2
    names = {f"mlflow-{t.run_id}" for t in store.trials()}  # (the overtime fixture's job may still run)
    assert not [s for _, n, s in _jobs("%i", "%j", "%T") if n in names and s in ("PENDING", "RUNNING", "COMPLETING")]

    # 3. Once more, to the end: exactly the 4 asked trials, each evaluated by exactly one completed job.
    third = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=540)
    assert third.returncode == 0, third.stderr[-3000:]
    trials = store.trials()
    assert len(budget_trials(trials)) == 4, [(t.short, t.status) for t in trials]
    assert all(t.finished for t in trials) and len({t.number for t in trials}) == len(trials)
    evaluated = [t for t in trials if t.outcome is not Outcome.INVALID_PROPOSAL]
    assert len({t.code_sha256 for t in evaluated}) == len(evaluated)
    jobs = [(n.removeprefix("mlflow-"), s, start, end) for _, n, s, start, end in _jobs("%i", "%j", "%T", "%S", "%e")
            if n.removeprefix("mlflow-") in {t.run_id for t in trials}]
    completed = Counter(r for r, s, *_ in jobs if s == "COMPLETED")
    assert all(completed[t.run_id] == 1 for t in evaluated), (completed, [(t.short, t.outcome) for t in trials])
    assert not [j for j in jobs if j[1] in ("PENDING", "RUNNING", "COMPLETING")]
    assert _max_overlap([(s, e) for _, st, s, e in jobs if st != "CANCELLED"]) <= 2
    for t in evaluated:  # each job's stdout and stderr are on its trial's run
        names = {a.path for a in store.client.list_artifacts(t.run_id, "logs")}
        assert any(n.endswith(".out") and "slurm-" in n for n in names), (t.short, names)
    assert all("sandbox=user" in store.read_artifact(t.run_id, "feedback.json") for t in evaluated
               if t.outcome is Outcome.OK) or os.geteuid() != 0


def _max_overlap(spans: list[tuple[str, str]]) -> int:
    events = []
    for start, end in spans:
        events += [(datetime.fromisoformat(start), 1), (datetime.fromisoformat(end), -1)]
    level = peak = 0
    for _, step in sorted(events, key=lambda e: (e[0], e[1])):  # an end before a start at the same second
        level += step
        peak = max(peak, level)
    return peak


@pytest.mark.slow
def test_a_job_past_its_time_limit_is_timed_out_not_a_harness_error(cluster, overtime):
    proc, uri = overtime
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-3000:]
    (base,) = MlflowStore("overtime", uri, create=False).trials()
    assert base.outcome is Outcome.TIMED_OUT, (base.outcome, base.reason)
    assert base.finished and "time limit" in base.reason
    job = base.tags["slurm.job_id"]
    assert [s for j, s in _jobs("%i", "%T") if j == job] == ["TIMEOUT"]


def test_cluster_slots_are_jobs_at_once_not_local_gpus(tmp_path, monkeypatch):
    from mlflow_autoresearch.loop import Loop
    from mlflow_autoresearch.loop._slots import detect_slots, job_slots
    from mlflow_autoresearch.settings import make_settings

    monkeypatch.setenv("AUTORESEARCH_FAKE_GPUS", "0,1")
    recipe = load_recipe(write_recipe(tmp_path / "toy", TOY_SPEC, {"train.py": TOY_TRAIN}))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    loop = Loop(recipe, make_settings(tracking_uri=uri, agent="offline", backend="slurm", slots=3))
    assert loop.slots == [None, None, None]  # no CUDA_VISIBLE_DEVICES pinned: SLURM gives each job its GPUs
    assert job_slots(None) == [None] and detect_slots(3) == ["0", "1", "0"]  # the local backend: GPUs
