"""A test per broken trial: each one classified right, with a reason that names the cause.

Issue 2, "What it must show".  Every trial here is a few lines of pure
Python run through the real evaluator and sandbox; the feedback text the
next agent reads is checked too, since that is what a model acts on.
"""

from __future__ import annotations

import os
import re

import pytest
from trialkit import OK_LINES, make_recipe, processes_with

from mlflow_autoresearch import schema as S
from mlflow_autoresearch.outcome import Outcome
from mlflow_autoresearch.recipe import load_recipe
from mlflow_autoresearch.trial import evaluate_folder, facts_text


def feedback(ran) -> str:
    return facts_text(ran.evaluation, ran.recipe, None, None)


def test_a_healthy_trial_is_ok_so_the_failures_below_mean_something(run_trial):
    ran = run_trial("print('loss: 0.25')\nprint('accuracy: 0.95')\n")
    ev = ran.evaluation
    assert ev.outcome is Outcome.OK, ev.reason
    assert ev.score == 0.25 and ev.metrics["accuracy"] == 0.95
    assert 0 < ev.train_seconds < 10


def test_syntax_error_is_an_invalid_proposal_and_never_runs(run_trial):
    ran = run_trial("import os\nx = (1,\nprint('loss: 0.1')\n")
    ev = ran.evaluation
    assert ev.outcome is Outcome.INVALID_PROPOSAL
    assert "SyntaxError in train.py line 2" in ev.reason
    assert ev.train_seconds is None and not ran.logs.exists()  # nothing ran, no logs
    assert "invalid_proposal" in feedback(ran) and "SyntaxError" in feedback(ran)


def test_exception_mid_run_is_crashed_naming_the_exception(run_trial):
    ran = run_trial("""\
        print('step 1: loss 2.0')
        def train(steps):
            return 1 / (steps - steps)
        train(3)
        """)
    ev = ran.evaluation
    assert ev.outcome is Outcome.CRASHED
    assert ev.error_type == "ZeroDivisionError"
    assert "ZeroDivisionError" in ev.reason
    assert "division by zero" in ev.error_tail and "line 3, in train" in ev.error_tail
    assert "step 1" in ran.stdout  # what it printed before dying is kept
    fb = feedback(ran)
    assert "crashed" in fb and "ZeroDivisionError" in fb and "division by zero" in fb


def test_infinite_loop_is_timed_out_and_killed_within_budget_plus_grace(run_trial):
    budget, grace = 1.5, 1.0
    ran = run_trial("import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True:\n    pass\n",
                    limits={"train_seconds": budget, "grace_seconds": grace})
    ev = ran.evaluation
    assert ev.outcome is Outcome.TIMED_OUT
    assert "ran past its 1.5 s limit and was killed" in ev.reason
    # It ignores SIGTERM, so only the SIGKILL after the grace ends it; the 50 ms polling and a
    # busy shared CPU get a generous margin, but nothing like a second budget.
    assert budget <= ran.seconds < budget + grace + 3.0, ran.seconds
    assert "timed_out" in feedback(ran)


def test_memory_blow_up_is_killed_by_the_memory_limit_and_the_test_survives(run_trial):
    ran = run_trial("""\
        hoard = []
        while True:
            hoard.append(bytearray(20 * 1024 * 1024))
        """, limits={"memory_gb": 0.25})
    ev = ran.evaluation
    assert ev.outcome is Outcome.CRASHED
    assert "killed by the memory limit of 0.25 GB" in ev.reason
    peak = float(re.search(r"peak resident ([\d.]+) GB", ev.reason).group(1))
    assert 0.2 <= peak < 1.0  # stopped near the limit, not after eating the machine
    assert ran.seconds < 10
    assert "memory limit" in feedback(ran)


FLOOD = """\
import sys
line = b'noise ' * 20 + b'\\n'
for _ in range(200_000):  # about 24 MB on each stream
    sys.stdout.buffer.write(line)
    sys.stderr.buffer.write(line)
sys.stdout.flush()
print('loss: 0.5')
print('accuracy: 0.9')
"""


def test_flood_of_output_is_capped_and_the_trial_still_scored(run_trial):
    ran = run_trial(FLOOD, limits={"output_bytes": 64 * 1024})
    ev = ran.evaluation
    assert ev.outcome is Outcome.OK, ev.reason
    assert ev.score == 0.5  # the metric lines at the end survive in the kept tail
    for name in ("seed0.stdout.txt", "seed0.stderr.txt"):
        kept = (ran.logs / name).stat().st_size
        assert kept <= 64 * 1024 + 200, (name, kept)
        assert "bytes of output dropped by the evaluator" in ran.log(name)


@pytest.mark.slow  # opens a SQLite tracking store (MLflow's import and migrations: ~8 s)
def test_flood_of_output_recorded_as_a_run_with_capped_log_artifacts(tmp_path, mlflow_store):
    root = tmp_path / "flood-recipe"
    recipe = make_recipe(root, limits={"output_bytes": 32 * 1024})
    code = tmp_path / "flood-code"
    code.mkdir()
    (code / "train.py").write_text(FLOOD)
    rec = evaluate_folder(mlflow_store, load_recipe(root), code)
    assert rec.outcome is Outcome.OK and rec.score == 0.5
    out = mlflow_store.read_artifact(rec.run_id, f"{S.LOGS_DIR}/seed0.stdout.txt")
    err = mlflow_store.read_artifact(rec.run_id, f"{S.LOGS_DIR}/seed0.stderr.txt")
    assert out is not None and err is not None
    assert len(out.encode()) <= 32 * 1024 + 200 and len(err.encode()) <= 32 * 1024 + 200
    assert "dropped by the evaluator" in out and out.rstrip().endswith("accuracy: 0.9")
    assert recipe.name == "toy" and mlflow_store.code(rec.run_id)["train.py"].decode() == FLOOD


def test_artifact_over_the_size_limit_is_size_exceeded_with_the_bytes_over(run_trial):
    train = "open('model.bin', 'wb').write(b'w' * 5000)\n" + OK_LINES
    ran = run_trial(train, spec={"artifact": {"include_code": True, "files": ["model.bin"]}},
                    limits={"artifact_bytes": 4000})
    ev = ran.evaluation
    size = 5000 + len(train.encode())
    assert ev.outcome is Outcome.SIZE_EXCEEDED
    assert ev.artifact_bytes == size
    assert f"artifact is {size:,} bytes, {size - 4000:,} bytes over the 4,000-byte limit" in ev.reason
    assert f"size: {size:,} of 4,000 bytes" in feedback(ran)


def test_gate_missed_by_a_hair_is_a_near_miss_with_its_margin(run_trial):
    ran = run_trial("print('loss: 0.3')\nprint('accuracy: 0.845')\n")  # gate: accuracy >= 0.85, band 0.01
    ev = ran.evaluation
    assert ev.outcome is Outcome.GATE_FAILED and ev.near_miss
    assert ev.score == 0.3  # scored, but not competing
    assert "short by 0.005" in ev.reason and "(near miss)" in ev.reason
    (gate,) = ev.gates
    assert gate.margin == pytest.approx(-0.005) and gate.near_miss and not gate.passed
    fb = feedback(ran)
    assert "(near miss)" in fb and "margin -0.005" in fb


def test_gate_missed_by_a_mile_is_not_a_near_miss(run_trial):
    ev = run_trial("print('loss: 0.3')\nprint('accuracy: 0.5')\n").evaluation
    assert ev.outcome is Outcome.GATE_FAILED and not ev.near_miss
    assert "short by 0.35" in ev.reason and "near miss" not in ev.reason


def test_no_metric_printed_is_crashed_with_no_metric_stated(run_trial):
    ran = run_trial("print('training finished, all good')\n")
    ev = ran.evaluation
    assert ev.outcome is Outcome.CRASHED
    assert ev.reason.startswith("no metric") and "'loss: <number>'" in ev.reason
    assert "no metric" in feedback(ran)


def test_protected_file_changed_is_a_violation_and_nothing_runs(run_trial, tmp_path):
    files = {"helper.py": "SPLIT = 0.25\n"}
    spec = {"protected": ["helper.py"]}
    sentinel = "open('ran.txt', 'w').write('x')\n" + OK_LINES
    ran = run_trial(sentinel, spec=spec, files=files, trial_files={"helper.py": "SPLIT = 0.0\n"})
    ev = ran.evaluation
    assert ev.outcome is Outcome.PROTECTED_VIOLATION
    assert "protected file helper.py differs from the recipe's copy" in ev.reason
    assert ev.train_seconds is None and not ran.logs.exists()  # refused before anything ran
    assert "protected_violation" in feedback(ran)


def test_extra_file_in_the_trials_code_is_refused(run_trial):
    ev = run_trial(OK_LINES, trial_files={"sitecustomize.py": "print('hi')\n"}).evaluation
    assert ev.outcome is Outcome.PROTECTED_VIOLATION
    assert "outside the recipe's editable list: sitecustomize.py" in ev.reason


def test_child_left_running_after_the_script_exits_is_killed_and_noted(run_trial, marker):
    ran = run_trial("import subprocess, sys\n"
                    f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)', '{marker}'])\n"
                    + OK_LINES)
    ev = ran.evaluation
    assert ev.outcome is Outcome.OK, ev.reason
    assert "seed0: killed 1 process(es) left running after the command exited" in ev.notes
    assert processes_with(marker) == []
    assert ran.seconds < 10  # the evaluator did not wait for the sleeper


def test_evaluator_is_not_confused_by_a_crash_in_every_seed_of_several(run_trial):
    ran = run_trial("import os\nraise SystemExit(3 + int(os.environ['AUTORESEARCH_SEED']))\n", spec={"seeds": 3})
    ev = ran.evaluation
    assert ev.outcome is Outcome.CRASHED and "exit code 3" in ev.reason
    assert "seed 0" in ev.reason and not os.path.exists(ran.logs / "seed1.stdout.txt")  # stopped at the first
