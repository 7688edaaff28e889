"""A trial scored against a team server whose artifacts live in S3: every file lands in the bucket."""

from __future__ import annotations

import json

import pytest

from mlflow_autoresearch import schema as S
from mlflow_autoresearch.lineage import MlflowStore
from mlflow_autoresearch.outcome import Outcome
from mlflow_autoresearch.recipe import load_recipe
from mlflow_autoresearch.trial import evaluate_folder
from tests.servers import unique_name


@pytest.mark.slow
def test_evaluated_trial_code_and_logs_are_objects_in_the_bucket(live_mlflow_server, moto_s3, toy_recipe, tmp_path,
                                                                 monkeypatch):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_S3_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)  # the client needs no AWS credentials: the server proxies
    monkeypatch.chdir(tmp_path)
    recipe = load_recipe(toy_recipe)
    store = MlflowStore(unique_name("s3"), live_mlflow_server.url)
    base = evaluate_folder(store, recipe)
    better = tmp_path / "better"
    better.mkdir()
    (better / "train.py").write_text((toy_recipe / "train.py").read_text().replace("SCORE = 0.5", "SCORE = 0.25"))
    kid = evaluate_folder(store, recipe, better)
    assert base.outcome is Outcome.OK and kid.outcome is Outcome.OK and kid.decision == "keep"

    s3 = moto_s3.s3()
    for trial in (base, kid):
        prefix = f"{store.experiment_id}/{trial.run_id}/artifacts/"
        keys = {k[len(prefix):] for k in moto_s3.keys(prefix)}
        assert {"code/train.py", S.PATCH, S.FEEDBACK_JSON, S.DECISION_JSON} <= keys, keys
        assert {"logs/seed0.stdout.txt", "logs/seed0.stderr.txt"} <= keys, keys
        code = s3.get_object(Bucket=moto_s3.bucket, Key=prefix + "code/train.py")["Body"].read()
        assert code == store.code(trial.run_id)["train.py"]
        stdout = s3.get_object(Bucket=moto_s3.bucket, Key=prefix + "logs/seed0.stdout.txt")["Body"].read().decode()
        assert f"loss: {trial.score}" in stdout
        feedback = json.loads(s3.get_object(Bucket=moto_s3.bucket, Key=prefix + S.FEEDBACK_JSON)["Body"].read())
        assert feedback["outcome"] == "ok"  # the measured facts; the decision is written beside them, once
        decision = json.loads(s3.get_object(Bucket=moto_s3.bucket, Key=prefix + S.DECISION_JSON)["Body"].read())
        assert decision["decision"] == trial.decision
    assert b"SCORE = 0.25" in s3.get_object(Bucket=moto_s3.bucket,
                                            Key=f"{store.experiment_id}/{kid.run_id}/artifacts/code/train.py")["Body"].read()
    assert not list(tmp_path.glob("mlruns")), "artifacts must go to the bucket, not a local folder"
