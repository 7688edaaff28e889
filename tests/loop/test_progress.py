"""What `autoresearch run` shows while it runs: trial lines, the status line, quiet evaluations, Ctrl-C."""

from __future__ import annotations

import io
import re
import signal
import subprocess

import pytest
from click.testing import CliRunner

from mlflow_autoresearch.cli import cli
from mlflow_autoresearch.lineage import MlflowStore, TrialRecord
from mlflow_autoresearch.loop._progress import LiveDisplay, PlainDisplay, Status, make_display, trial_line
from mlflow_autoresearch.outcome import Outcome

from ..conftest import ROOT, TOY_SPEC, TOY_TRAIN, write_recipe
from .test_resume import SLOW_TRAIN, _command, _env, _wait_for

STATUS = re.compile(r"^  (\d+)/(\d+) trials \| best (\S+) \((t\d{4})\) \| (\d+s|\d+m\d\ds|\d+h\d\dm), "
                    r"ETA (—|\d+s|\d+m\d\ds|\d+h\d\dm) \| slots \d/1 busy \| \$\d+\.\d\d$")
TRIAL = re.compile(r"^(t\d{4}) (\w+)")
RUN_ID_LINE = re.compile(r"^[0-9a-f]{32}$", re.M)


def _run(args: list[str]) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_progress_counts_finished_trials_and_shows_the_true_best(tmp_path, monkeypatch):
    """Plain lines (not a terminal): each finished trial, then the status line; the best is the latest keep."""
    monkeypatch.chdir(tmp_path)
    recipe = write_recipe(tmp_path / "toy", TOY_SPEC, {"train.py": TOY_TRAIN.replace("SCORE = 0.5", "SCORE = 164.97")})
    code, _, err = _run(["run", "--recipe", str(recipe), "--trials", "4", "--in-process",
                         "--agent", "tests.loop.scripted:ScriptedSpecialist",
                         "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"])
    assert code == 0, err
    assert "\x1b" not in err and "\r" not in err  # no control codes in a pipe or a log file
    lines = err.splitlines()
    statuses = [(i, STATUS.match(ln)) for i, ln in enumerate(lines) if ln.startswith("  ") and "trials |" in ln]
    assert statuses and all(m for _, m in statuses), [lines[i] for i, m in statuses if not m]
    for i, _ in statuses:
        assert TRIAL.match(lines[i - 1]), f"a status line follows each trial line: {lines[i - 1:i + 1]}"
        assert len(lines[i]) <= 80 and len(lines[i - 1]) <= 80, lines[i - 1:i + 1]
    assert lines[statuses[0][0] - 1].startswith("t0000 baseline ok 164.97")  # not rounded to 165
    assert statuses[0][1].group(3) == "164.97"

    # Finished, not created: the count rises by at most one per line, from 0 to the budget.
    counts = [int(m.group(1)) for _, m in statuses]
    assert counts[0] == 0 and counts[-1] == 4 and all(b - a in (0, 1) for a, b in zip(counts, counts[1:], strict=False))
    assert all(int(m.group(2)) == 4 for _, m in statuses)

    # The best shown is the best kept so far, read from every trial reported, never an older snapshot.
    store = MlflowStore("toy", f"sqlite:///{tmp_path / 'mlflow.db'}")
    by_short = {t.short: t for t in store.trials()}
    kept = [t for t in by_short.values() if t.decision == "keep"]
    assert kept, "the scripted specialist's improvements are kept"
    best = by_short["t0000"]
    for i, m in statuses:
        t = by_short[TRIAL.match(lines[i - 1]).group(1)]
        if t.decision == "keep" and t.score < best.score:
            best = t
            assert "(new best)" in lines[i - 1]
        assert m.group(4) == best.short and m.group(3) == f"{best.score:.6g}", (lines[i - 1:i + 1], best.short)
    assert best.short != "t0000"
    assert statuses[-1][1].group(6) == "0s"
    assert any(m.group(6) not in ("—", "0s") for _, m in statuses), "an estimate once a trial has finished"
    assert f"best {best.short} {best.score:.6g}" in lines[-1]


def _record(**kw) -> TrialRecord:
    base = dict(run_id="a" * 32, number=12345, name="t12345-x", specialist="optimization",
                hypothesis="lower the warmup fraction " * 8, parent_id=None, status="FINISHED", start_time=0,
                outcome=Outcome.OK, decision="keep", score=0.000123456789)
    return TrialRecord(**{**base, **kw})


def test_status_and_trial_lines_fit_80_columns_at_large_numbers():
    t = _record()
    status = Status(finished=12345, total=100_000, best=t, elapsed=123_456.0, eta=9_876_543.0, busy=64,
                    slots=64, dollars=123_456.78)
    line = status.line()
    assert len(line) <= 80 and "12345/100000" in line and "0.000123457" in line and "ETA" in line, line
    assert len(trial_line(t, new_best=True)) <= 80
    assert Status(finished=3, total=20, best=_record(number=7, score=164.97), elapsed=72.0, eta=362.0, busy=1,
                  slots=1, dollars=0.0).line() == "3/20 trials | best 164.97 (t0007) | 1m12s, ETA 6m02s | slots 1/1 busy | $0.00"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_live_status_line_and_a_pipe_plain_lines(monkeypatch):
    monkeypatch.setenv("TERM", "xterm")
    assert isinstance(make_display(print, io.StringIO()), PlainDisplay)
    term = _Terminal()
    display = make_display(print, term)
    assert isinstance(display, LiveDisplay) and display.width <= 80
    display.start(lambda: "1/2 trials | best 0.5 (t0000)")
    display.trial("t0001 discard ok 0.75 · systems: raise SCORE", lambda: "2/2 trials | best 0.5 (t0000)")
    display.message("t0001: discard after 2 confirmation pair(s): " + "not confirmed " * 10)
    display.close()
    out = term.getvalue()
    assert "\r" in out and "t0001 discard ok 0.75" in out and "2/2 trials | best 0.5 (t0000)" in out
    assert "t0001: discard after 2 confirmation pair(s): not confirmed" in out
    assert all(len(ln) <= 80 for chunk in out.split("\r") for ln in chunk.splitlines()), out  # long messages wrap
    monkeypatch.setenv("TERM", "dumb")
    assert isinstance(make_display(print, _Terminal()), PlainDisplay)


@pytest.mark.slow
@pytest.mark.parametrize("verbose", [False, True])
def test_mlflow_info_lines_only_with_verbose(tmp_path, verbose):
    """Trials through `mlflow run` (the default): MLflow's INFO lines, the evaluate child's lines and
    its run id are left out unless -v."""
    recipe = write_recipe(tmp_path / "toy", TOY_SPEC, {"train.py": TOY_TRAIN})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowStore("toy", uri)  # the database exists before the loop starts
    cmd = _command(recipe, uri, 0)  # the baseline only: one evaluation through `mlflow run`
    if verbose:
        cmd.insert(3, "-v")
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    both = proc.stdout + proc.stderr
    assert "t0000 baseline ok 0.5" in proc.stderr
    loud = ["INFO mlflow.projects", "=== Running command", "seed 1/1: training", "decision None (run "]
    if verbose:
        assert all(s in both for s in loud), both[-3000:]
        assert RUN_ID_LINE.search(proc.stdout)
    else:
        assert not [s for s in loud if s in both], both[-3000:]
        assert not RUN_ID_LINE.search(proc.stdout), proc.stdout


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_exits_130_and_says_how_to_resume(tmp_path):
    recipe = write_recipe(tmp_path / "slow", TOY_SPEC, {"train.py": SLOW_TRAIN})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cmd = _command(recipe, uri, 3, "--in-process")
    store = MlflowStore("toy", uri)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    # The baseline finished and the first trial in the middle of its evaluation.
    _wait_for(store, lambda ts: any(t.finished for t in ts) and any(t.status == "RUNNING" for t in ts), proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "stopped by SIGINT" in err
    resume = [ln for ln in err.splitlines() if "to resume, run the same command again" in ln]
    assert resume and "--trials 3" in resume[0] and str(recipe) in resume[0], err[-2000:]
