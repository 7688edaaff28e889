"""The Kubernetes backend files under docs/cluster/, checked with MLflow's and Kubernetes' own code.

No cluster and no Docker daemon here: the config is parsed by MLflow's
``_parse_kubernetes_config``, the project by MLflow's project loader, the Job
rendered by ``mlflow.projects.kubernetes`` exactly as ``mlflow.projects.run(...,
backend="kubernetes")`` renders it, and validated by the Kubernetes client's
``V1Job`` model.  Then the Job's container command runs here, with the Job's
environment, against a real tracking server with S3 artifacts: it pulls the
trial's code from the artifact store and records the result.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from kubernetes.client import ApiClient
from mlflow.projects import _parse_kubernetes_config
from mlflow.projects import kubernetes as kb
from mlflow.projects._project_spec import load_project
from mlflow.projects.docker import validate_docker_env
from mlflow.projects.utils import get_entry_point_command, get_run_env_vars

from mlflow_autoresearch.lineage import MlflowStore
from mlflow_autoresearch.outcome import Outcome
from mlflow_autoresearch.recipe import load_recipe
from mlflow_autoresearch.trial import create_trial, recipe_files
from tests.conftest import ROOT
from tests.servers import unique_name

CLUSTER = ROOT / "docs" / "cluster"
IMAGE = "registry.example.com/ml/autoresearch-evaluator:5f0c2a1"
DIGEST = "sha256:" + "ab" * 32


def as_v1job(job: dict):
    """Deserialize with the Kubernetes client's models (raises on a malformed Job)."""
    return ApiClient()._ApiClient__deserialize(copy.deepcopy(job), "V1Job")


@pytest.fixture
def kube_config(monkeypatch) -> dict:
    monkeypatch.chdir(ROOT)  # the config names the template relative to the repository
    return _parse_kubernetes_config(json.loads((CLUSTER / "kubernetes_config.json").read_text()))


def test_backend_config_and_job_template_are_valid(kube_config):
    assert kube_config["repository-uri"] and kube_config["kube-context"]
    template = kube_config["kube-job-template"]
    job = as_v1job(template)
    assert job.kind == "Job" and job.api_version == "batch/v1" and job.metadata.namespace
    assert job.spec.backoff_limit == 0, "a retried pod would evaluate a finished trial again"
    pod = job.spec.template.spec
    assert pod.restart_policy == "Never"
    (container,) = pod.containers
    assert container.resources.limits["nvidia.com/gpu"] == "1"  # one GPU per Job
    assert {e.name for e in container.env} >= {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"}
    assert all(e.value_from.secret_key_ref for e in container.env if e.name.startswith("MLFLOW_TRACKING_"))


def test_project_is_a_docker_project_with_the_evaluate_entry_point():
    project = load_project(str(CLUSTER))
    validate_docker_env(project)  # the kubernetes backend refuses a project without docker_env
    assert project.docker_env["image"] == "autoresearch-evaluator:latest"
    entry = project.get_entry_point("evaluate")
    assert set(entry.parameters) == {"trial", "recipe"}


def test_dockerfile_builds_what_the_job_needs():
    text = (CLUSTER / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11", text, re.MULTILINE)
    for line in re.findall(r"^COPY (.+)$", text, re.MULTILINE):
        for src in line.split()[:-1]:
            assert (ROOT / src).exists(), f"Dockerfile copies {src}, which the repository lacks"
    torch = re.search(r'TORCH_SPEC="torch==([\d.]+)"', text).group(1)
    assert "torch>=2.13,<3" in (ROOT / "setup.cfg").read_text() and torch.startswith("2.")
    assert "pip install ." in text and "RECIPES_DIR" in text


@pytest.mark.slow
def test_job_for_a_trial_runs_the_evaluator_on_the_trials_code(kube_config, live_mlflow_server, toy_recipe,
                                                               tmp_path, monkeypatch):
    url = live_mlflow_server.url
    recipe = load_recipe(toy_recipe)
    store = MlflowStore(unique_name("k8s"), url)
    files = recipe_files(recipe)
    files["train.py"] = files["train.py"].replace(b"SCORE = 0.5", b"SCORE = 0.125")
    trial = create_trial(store, recipe, files, specialist="systems", hypothesis="run me on the cluster")

    # What mlflow.projects.run(backend="kubernetes", run_id=trial) hands the cluster.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://loop-machine.invalid:5000")
    monkeypatch.setenv("KUBE_MLFLOW_TRACKING_URI", url)  # the address the pods reach the server at
    project = load_project(str(CLUSTER))
    command = get_entry_point_command(project, "evaluate", {"trial": trial.run_id, "recipe": str(toy_recipe)}, None)
    env = get_run_env_vars(run_id=trial.run_id, experiment_id=store.experiment_id)
    job = kb._get_kubernetes_job_definition(project.name, IMAGE, DIGEST, kb._get_run_command(command), env,
                                            copy.deepcopy(kube_config["kube-job-template"]))
    v1 = as_v1job(job)
    (container,) = v1.spec.template.spec.containers
    assert container.image == f"{IMAGE}@{DIGEST}"
    assert container.command == ["python", "-m", "mlflow_autoresearch.cli", "evaluate",
                                 "--trial", trial.run_id, "--recipe", str(toy_recipe), "--facts-only"]
    job_env = {e.name: e.value for e in container.env if e.value is not None}
    assert job_env["MLFLOW_RUN_ID"] == trial.run_id and job_env["MLFLOW_TRACKING_URI"] == url
    assert job_env["MLFLOW_EXPERIMENT_ID"] == store.experiment_id
    print(yaml.safe_dump(job, sort_keys=False))  # the rendered Job, for whoever reads the log

    # The pod, minus the image: the container's command with the Job's environment, in an empty folder.
    pod_env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "KUBE_", "AWS_"))}
    pod_env.update(job_env)
    workdir = tmp_path / "pod"
    workdir.mkdir()
    done = subprocess.run([sys.executable, *container.command[1:]], cwd=workdir, env=pod_env,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == trial.run_id
    rec = store.get(trial.run_id)
    assert rec.outcome is Outcome.OK and rec.measured and rec.decision is None  # facts only: the loop decides
    assert rec.score == 0.125  # the trial's own code, pulled from the artifact store, not the recipe's
    assert "loss: 0.125" in store.read_artifact(trial.run_id, "logs/seed0.stdout.txt")
    assert not list(Path(workdir).iterdir())
