"""Issue 13: every attack of the red-team review, contained and classified, in every mode a user lands in.

The attacks live in ``attacks.py`` as one battery; each mode runs the whole
battery once in a fresh evaluator process (about 20-40 s on a busy 2-core
machine) and the tests below assert per attack and per mode:

* ``root-pyenv``: root, the worktree's venv on a pyenv Python under /root (711);
* ``root-home-700``: the same with /root at mode 700 (simulated in a private
  mount namespace: a 700 tmpfs on /root holding only .pyenv), where the old
  evaluator fell back to running trials as root;
* ``root-system-python``: root, a venv on /usr/bin/python3;
* ``root-venv-in-tmp``: root, that venv under /tmp (hidden by the trial's private /tmp);
* ``not-root``: an unprivileged user (``setpriv`` to nobody).

Modes this machine cannot show are skipped with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import uuid
from pathlib import Path

import pytest

HERE = Path(__file__).parent
REPO = HERE.parents[1]
SECRET = "sk-ant-attack-battery-0001"
MODES = ["root-pyenv", "root-home-700", "root-system-python", "root-venv-in-tmp", "not-root"]
ROOT = os.geteuid() == 0
NOBODY = 65534


def _linked_venv(base: Path, python: str) -> Path:
    """A venv on ``python`` that imports this tree and its dependencies through a .pth (no install)."""
    venv = base / "venv"
    subprocess.run([python, "-m", "venv", "--without-pip", str(venv)], check=True, capture_output=True, timeout=120)
    site = next(venv.glob("lib/python3*/site-packages"))
    (site / "ours.pth").write_text(f"{REPO}\n{sysconfig.get_paths()['purelib']}\n")
    for p in [base, *[q for q in venv.rglob("*") if q.is_dir()]]:
        p.chmod(0o755)
    return venv / "bin" / "python"


def _system_python() -> str | None:
    for p in ("/usr/bin/python3",):
        if os.path.exists(p):
            want = tuple(sys.version_info[:2])
            r = subprocess.run([p, "-c", f"import sys; print(tuple(sys.version_info[:2]) == {want})"],
                               capture_output=True, text=True)
            if r.stdout.strip() == "True":
                return p
    return None


def _run_battery(mode: str, out: Path) -> dict:
    marker = f"ar{uuid.uuid4().hex[:8]}"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "ANTHROPIC_API_KEY": SECRET,
           "ATTACK_MARKER": marker, "HOME": str(out)}
    out.mkdir(parents=True)
    out.chmod(0o777)
    battery = [str(HERE / "attacks.py"), str(out / "b")]
    (out / "b").mkdir()
    (out / "b").chmod(0o777)
    facts: dict = {}
    if mode == "root-pyenv":
        if not ROOT:
            pytest.skip("needs root")
        cmd = [sys.executable, *battery]
    elif mode == "root-home-700":
        base = Path(sys.base_prefix)
        if not ROOT or not str(base).startswith("/root/") or not shutil.which("unshare"):
            pytest.skip("needs root, unshare and a Python under /root")
        top = "/root/" + base.relative_to("/root").parts[0]
        hold = out / "hold"
        hold.mkdir()
        # (Outside the sandbox the loader misses pyenv's libpython and may run the system's instead.)
        same = f"import sys; sys.exit(sys.version != {sys.version!r})"
        probe = f"setpriv --reuid {NOBODY} --regid {NOBODY} --clear-groups {sys.executable} -c \"{same}\""
        script = (f"set -e; mount --bind {top} {hold}; mount -t tmpfs -o mode=700 tmpfs /root; mkdir {top}; "
                  f"mount --move {hold} {top}; stat -c %a /root > {out}/root_mode; "
                  f"if {probe} 2>/dev/null; then echo yes; else echo no; fi > {out}/nobody_runs_python_outside; "
                  f"exec {sys.executable} {' '.join(battery)}")
        cmd = ["unshare", "-m", "--propagation", "private", "sh", "-c", script]
    elif mode in ("root-system-python", "root-venv-in-tmp"):
        system = _system_python()
        if not ROOT or system is None:
            pytest.skip("needs root and a system Python of this version")
        base = (Path(sys.prefix) / "modes" / "system") if mode == "root-system-python" else out / "tmpvenv"
        python = base / "venv" / "bin" / "python"
        if not python.exists():
            shutil.rmtree(base, ignore_errors=True)
            base.mkdir(parents=True)
            python = _linked_venv(base, system)
        cmd = [str(python), *battery]
    else:
        if not ROOT:
            cmd = [sys.executable, *battery]  # already not root: this is the mode
        elif not shutil.which("setpriv"):
            pytest.skip("needs setpriv")
        else:
            # The user's own venv, which they (and so a same-user trial) could write to.
            python = _linked_venv(out / "uservenv", sys.executable)
            for p in [out / "uservenv", *(out / "uservenv").rglob("*")]:
                os.chown(p, NOBODY, NOBODY, follow_symlinks=False)
            cmd = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", str(python), *battery]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=out)
    assert r.returncode == 0, f"the battery failed in mode {mode}:\n{r.stderr[-4000:]}"
    results = json.loads((out / "b" / "results.json").read_text())
    for f in ("root_mode", "nobody_runs_python_outside"):
        if (out / f).exists():
            facts[f] = (out / f).read_text().strip()
    return {"results": results, "facts": facts, "marker": marker}


@pytest.fixture(scope="module")
def battery():
    # Not under pytest's basetemp (mode 700): the not-root mode's user must reach these folders.
    top = Path(tempfile.mkdtemp(prefix="ar-modes-"))
    top.chmod(0o755)
    cache: dict[str, dict] = {}

    def get(mode: str) -> dict:
        if mode not in cache:
            cache[mode] = _run_battery(mode, top / mode)
        return cache[mode]

    yield get
    shutil.rmtree(top, ignore_errors=True)


def _ev(b: dict, attack: str) -> dict:
    ev = b["results"][attack]["evaluation"]
    assert "raised" not in ev, f"{attack}: the evaluator raised {ev.get('raised')}: {ev.get('traceback')}"
    return ev


pytestmark = pytest.mark.slow


@pytest.mark.parametrize("mode", MODES)
def test_every_attack_is_contained_and_classified(battery, mode):
    b = battery(mode)
    res = b["results"]
    user = mode != "not-root"

    if mode == "root-home-700":
        # The simulation is real: /root is 700 and nobody cannot start this Python outside the sandbox,
        # where the old evaluator warned and ran trials as root. Now they run, as their leased uid.
        assert b["facts"] == {"root_mode": "700", "nobody_runs_python_outside": "no"}, b["facts"]

    # Every trial: nothing of it alive afterwards, no workspace left behind.
    for name, r in res.items():
        assert r["alive"] == [], f"{name}: processes of the trial outlived the evaluation"
        assert r["workspace_left"] == [], f"{name}: workspace left behind: {r['workspace_left']}"

    # 1. A chain outliving the final kill cannot rewrite the protected step: the score is the honest one.
    ev = _ev(b, "survivor_rewrites_protected_step")
    assert ev["outcome"] == "ok" and ev["metrics"]["accuracy"] == 0.9 and ev["score"] == 0.7, ev["reason"]
    assert any("left running" in n for n in ev["notes"]), ev["notes"]

    # 2. Precomputed weights pasted into the code are refused before anything runs.
    for name in ("embedded_weights", "embedded_weights_split"):
        ev = _ev(b, name)
        assert ev["outcome"] == "invalid_proposal" and "literal_bytes" in ev["reason"], ev["reason"]
        assert ev["train_seconds"] is None

    # 3. The test split never reaches training; the protected step reads it.
    r = res["test_split_reaches_training"]
    ev = _ev(b, "test_split_reaches_training")
    assert ev["outcome"] == "ok", ev["reason"]
    facts = r["reports"]["seed0"]
    assert facts["m/train.txt"] == "TRAIN"
    assert facts["m/test.txt"] != "SECRET-TEST" and not any(p.endswith("test.txt") for p in facts["listing"]), facts
    assert facts.get("sklearn_digits_bytes", 0) in (0, "FileNotFoundError", "PermissionError"), facts
    assert ev["metrics"]["test_seen"] == 1.0

    # 4. The model cannot read side files at evaluation; it sees exactly the counted artifacts.
    ev = _ev(b, "side_file_at_evaluation")
    assert ev["outcome"] == "ok" and ev["metrics"]["side_files_seen"] == 0.0, ev
    assert ev["metrics"]["artifact_files"] == 2.0  # out.txt and model.txt, both in artifact_bytes

    # 5. Never more rights than the trial uid: not root, no root-only file, no secret from any process.
    facts = res["rights"]["reports"]["seed0"]
    assert facts["uid"] != 0 and facts["/etc/shadow"] == "PermissionError", facts
    assert facts["secret_leak"] is False, facts
    assert "planted" not in facts, facts  # the interpreter's folders are read-only for every trial
    if user:
        assert 1_900_000_000 <= facts["uid"] < 1_900_004_096 and "sandbox=user" in _ev(b, "rights")["notes"]
    else:
        assert facts["uid"] == NOBODY

    # 7. Trial-controlled paths are read safely: never a link's target, never blocking.
    for name in ("result_link_to_root_only_file", "result_fifo", "result_dev_zero"):
        ev = _ev(b, name)
        assert ev["outcome"] == "ok" and ev["score"] == 0.5, (name, ev["reason"])
        assert res[name]["seconds"] < 60, name
    ev = _ev(b, "evaluate_py_made_a_fifo")
    assert ev["outcome"] == "protected_violation" and "evaluate.py" in ev["reason"]

    # 8. A folder chain deeper than any recursion is removed after a passing trial.
    assert _ev(b, "deep_folder_chain")["outcome"] == "ok"

    # 9. Memory a thread holds after its main thread exited counts; one seed cannot write another's folder.
    ev = _ev(b, "thread_memory_after_main_exit")
    assert ev["outcome"] == "crashed" and "memory limit" in ev["reason"], ev["reason"]
    r = res["seed_writes_into_another_seeds_folder"]
    assert _ev(b, "seed_writes_into_another_seeds_folder")["outcome"] == "ok"
    assert r["reports"]["seed1"]["wrote"] == [], r["reports"]
