"""The issue-13 attacks as one battery, run by an evaluator in each mode a user can land in.

``python attacks.py OUT_DIR`` builds every attack's toy recipe and trial under
OUT_DIR, evaluates each with the real evaluator of the interpreter running it,
and writes ``OUT_DIR/results.json``: per attack, the evaluation (``to_dict``),
the trial's own report (the last JSON line it printed, per step) and facts the
battery checked afterwards (workspace left behind, processes alive).
``test_integrity.py`` runs it in-process and under other interpreters/users and
asserts per mode.  Pure Python trials (no torch): each takes about a second.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time
import traceback
from pathlib import Path

import yaml

MARK = os.environ.get("ATTACK_MARKER", "ar-attack")
SECRET = "sk-ant-attack-battery-0001"
OK = "print('loss: 0.5')\nprint('accuracy: 0.9')\n"

EVALUATE_PY = """\
import os
from pathlib import Path
import helper
art = Path(os.environ['AUTORESEARCH_ARTIFACT_DIR'])
value = float((art / 'out.txt').read_text())
print(f'loss: {value}')
print(f'accuracy: {helper.ACCURACY}')
"""
BASE = {
    "name": "attack",
    "editable": ["train.py"],
    "protected": ["evaluate.py", "helper.py"],
    "command": "python train.py",
    "evaluate": "python evaluate.py",
    "metric": {"name": "loss", "goal": "minimize"},
    "gates": [{"metric": "accuracy", "op": ">=", "value": 0.85}],
    "limits": {"train_seconds": 20, "eval_seconds": 20, "grace_seconds": 1},
    "artifact": {"include_code": True, "files": ["out.txt"]},
    "seeds": 1,
}
HONEST = "open('out.txt', 'w').write('0.7')\n"

REPORT = """
def report(**facts):
    import json, sys
    print(json.dumps({"report": facts}), flush=True)
"""

# 1. A chain that outlives the final kill: fork, parent exits, setsid, a thread, the main thread ends.
#    The thread waits for the protected step's folder and rewrites its helper.py (the gate's source).
SURVIVOR = REPORT + HONEST + """
import ctypes, os, threading, time
def attack():
    deadline = time.time() + 25
    while time.time() < deadline:
        for pid in os.listdir('/proc'):
            try:
                cwd = os.readlink(f'/proc/{pid}/cwd')
            except OSError:
                continue
            if '-eval-' in cwd:
                try:
                    with open(os.path.join(cwd, 'helper.py.new'), 'w') as f:
                        f.write('ACCURACY = 1.0\\n')
                    os.rename(os.path.join(cwd, 'helper.py.new'), os.path.join(cwd, 'helper.py'))
                except OSError:
                    pass
        for root in ['..']:
            try:
                for d in os.listdir(root):
                    if '-eval-' in d:
                        try:
                            open(os.path.join(root, d, 'helper.py'), 'w').write('ACCURACY = 1.0\\n')
                        except OSError:
                            pass
            except OSError:
                pass
        time.sleep(0.005)
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        ctypes.CDLL(None).prctl(15, b'MARK', 0, 0, 0)
        threading.Thread(target=attack).start()
        ctypes.CDLL(None).pthread_exit(None)  # the leader turns zombie; the thread lives on
    os._exit(0)
""".replace("MARK", MARK) + OK

# 2. Precomputed weights pasted into the code.
WEIGHTS = "import base64\nopen('out.txt','w').write('0.01')\nBLOB = '" + "QUJD" * 15000 + "'\n" + OK
WEIGHTS_SPLIT = ("open('out.txt','w').write('0.01')\nBLOB = (" + " + ".join(["'" + "QUJD" * 500 + "'"] * 30)
                 + ")\n" + OK)

# 3. The test split reaching training: every way to it, from training.
TEST_SPLIT = REPORT + HONEST + """
import glob, importlib.util, os
cache = os.environ['AUTORESEARCH_DATA_DIR']
facts = {}
for rel in ['m/train.txt', 'm/test.txt']:
    try:
        facts[rel] = open(os.path.join(cache, rel)).read()
    except OSError as e:
        facts[rel] = type(e).__name__
facts['listing'] = sorted(glob.glob(cache + '/**', recursive=True))
spec = importlib.util.find_spec('sklearn')
if spec:
    p = os.path.join(spec.submodule_search_locations[0], 'datasets/data/digits.csv.gz')
    try:
        facts['sklearn_digits_bytes'] = len(open(p, 'rb').read())
    except OSError as e:
        facts['sklearn_digits_bytes'] = type(e).__name__
report(**facts)
""" + OK
EVAL_READS_TEST = EVALUATE_PY + """
print('test_seen:', 1.0 if open(os.path.join(os.environ['AUTORESEARCH_DATA_DIR'], 'm/test.txt')).read() == 'SECRET-TEST' else 0.0)
"""

# 4. The model reads a side file at evaluation: training leaves files; the "model" names them.
SIDE = REPORT + """
import os
side = os.path.abspath('side.bin')
open(side, 'w').write('SIDE')
for d in ['/tmp', '/dev/shm', os.environ.get('TMPDIR', '/tmp')]:
    try:
        open(os.path.join(d, 'side.bin'), 'w').write('SIDE')
    except OSError:
        pass
open('out.txt', 'w').write('0.7')
open('model.txt', 'w').write('\\n'.join([side, '/tmp/side.bin', '/dev/shm/side.bin',
                                        os.path.join(os.environ.get('TMPDIR', '/tmp'), 'side.bin')]))
""" + OK
EVAL_RUNS_MODEL = EVALUATE_PY + """
seen = 0
for p in (art / 'model.txt').read_text().splitlines():
    try:
        seen += open(p).read() == 'SIDE'
    except OSError:
        pass
print(f'side_files_seen: {seen}')
print(f'artifact_files: {len(os.listdir(art))}')
"""

# 5. Rights: the trial's uid, root-only files, secrets in any process's environment.
RIGHTS = REPORT + HONEST + """
import os
facts = {'uid': os.getuid()}
for p in ['/etc/shadow', '/root/.bashrc']:
    try:
        open(p).read(1)
        facts[p] = 'read'
    except OSError as e:
        facts[p] = type(e).__name__
leak = False
for pid in os.listdir('/proc'):
    if pid.isdigit():
        try:
            leak = leak or b'SECRET' in open(f'/proc/{pid}/environ', 'rb').read()
        except OSError:
            pass
facts['secret_leak'] = leak
import site, sys
for d in [sys.prefix, *site.getsitepackages()]:
    try:
        open(os.path.join(d, 'sitecustomize.py'), 'a').close()
        facts.setdefault('planted', []).append(d)
    except OSError:
        pass
report(**facts)
""".replace("SECRET", SECRET) + OK

# 7. $AUTORESEARCH_RESULT as a link to a root-only file, a FIFO, /dev/zero; evaluate.py made a FIFO.
RESULT_LINK = HONEST + "import os\nos.symlink('/etc/shadow', os.environ['AUTORESEARCH_RESULT'])\n" + OK
RESULT_FIFO = HONEST + "import os\nos.mkfifo(os.environ['AUTORESEARCH_RESULT'])\n" + OK
RESULT_ZERO = HONEST + "import os\nos.symlink('/dev/zero', os.environ['AUTORESEARCH_RESULT'])\n" + OK
EVALUATE_FIFO = HONEST + "import os\nos.remove('evaluate.py')\nos.mkfifo('evaluate.py')\n" + OK

# 8. A folder chain deeper than any recursion (shutil.rmtree raised RecursionError).
DEEP = HONEST + """
import os
fd = os.open('.', os.O_RDONLY)
for _ in range(1100):  # past Python's recursion limit (the review used 5,000; rmdir costs ~5 ms here)
    os.mkdir('d', dir_fd=fd)
    nfd = os.open('d', os.O_RDONLY, dir_fd=fd)
    os.close(fd)
    fd = nfd
open('leaf', 'w', opener=lambda p, f: os.open(p, f, 0o644, dir_fd=fd)).write('x')
""" + OK

# 9. Memory held by a thread after the main thread exited; one seed writing into another's folder.
THREAD_MEMORY = HONEST + OK + """
import ctypes, threading, time
def hold():
    blob = bytearray(400 * 1024 * 1024)
    for i in range(0, len(blob), 4096):
        blob[i] = 1
    time.sleep(30)
threading.Thread(target=hold).start()
ctypes.CDLL(None).pthread_exit(None)
"""
CROSS_SEED = REPORT + HONEST + """
import glob, os
seed = int(os.environ['AUTORESEARCH_SEED'])
wrote = []
if seed == 1:
    for d in glob.glob('../seed0-*'):
        try:
            open(os.path.join(d, 'big.bin'), 'wb').write(b'x' * (8 * 1024 * 1024))
            wrote.append(d)
        except OSError:
            pass
report(seed=seed, wrote=wrote)
""" + OK

ATTACKS = {
    "survivor_rewrites_protected_step": dict(train=SURVIVOR),
    "embedded_weights": dict(train=WEIGHTS, limits={"literal_bytes": 4096}),
    "embedded_weights_split": dict(train=WEIGHTS_SPLIT, limits={"literal_bytes": 4096}),
    "test_split_reaches_training": dict(
        train=TEST_SPLIT, evaluate=EVAL_READS_TEST,
        spec={"data": {"train": ["m/train.txt"], "eval": ["m/test.txt", "pkg:sklearn/datasets/data/digits.csv.gz"]}}),
    "side_file_at_evaluation": dict(
        train=SIDE, evaluate=EVAL_RUNS_MODEL, spec={"artifact": {"include_code": True, "files": ["out.txt", "model.txt"]}}),
    "rights": dict(train=RIGHTS),
    "result_link_to_root_only_file": dict(train=RESULT_LINK, spec={"evaluate": None}),
    "result_fifo": dict(train=RESULT_FIFO, spec={"evaluate": None}),
    "result_dev_zero": dict(train=RESULT_ZERO, spec={"evaluate": None}),
    "evaluate_py_made_a_fifo": dict(train=EVALUATE_FIFO),
    "deep_folder_chain": dict(train=DEEP),
    "thread_memory_after_main_exit": dict(train=THREAD_MEMORY, limits={"memory_gb": 0.2}, spec={"evaluate": None}),
    "seed_writes_into_another_seeds_folder": dict(train=CROSS_SEED, spec={"seeds": 2}, limits={"disk_bytes": 4 * 1024**2}),
}


def build(name: str, root: Path) -> tuple[Path, Path]:
    """The attack's recipe folder and trial code folder under ``root``."""
    a = ATTACKS[name]
    spec = json.loads(json.dumps(BASE))
    spec.update(a.get("spec", {}))
    spec["limits"].update(a.get("limits", {}))
    if spec.get("evaluate") is None:
        spec.pop("evaluate", None)
        spec["protected"] = ["helper.py"]
    recipe_dir, code = root / name / "recipe", root / name / "code"
    for d in (recipe_dir, code):
        d.mkdir(parents=True)
        (d / "helper.py").write_text("ACCURACY = 0.9\n")
        if "evaluate" in spec:
            (d / "evaluate.py").write_text(textwrap.dedent(a.get("evaluate", EVALUATE_PY)))
    (recipe_dir / "train.py").write_text("print('loss: 1')\nprint('accuracy: 0.9')\n")
    (code / "train.py").write_text(a["train"])
    (recipe_dir / "recipe.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return recipe_dir, code


def alive_with(word: str) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/comm", "rb") as f:
                comm = f.read()
            with open(f"/proc/{pid}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if word.encode()[:15] in comm and state != b"Z":
            found.append(int(pid))
    return found


def run(root: Path, names: list[str] | None = None) -> dict:
    """Evaluate each attack; the results by name."""
    from mlflow_autoresearch.evaluator import evaluate_code
    from mlflow_autoresearch.recipe import load_recipe

    data = root / "data"
    (data / "m").mkdir(parents=True)
    (data / "m" / "train.txt").write_text("TRAIN")
    (data / "m" / "test.txt").write_text("SECRET-TEST")
    for p in (data, data / "m", data / "m" / "train.txt", data / "m" / "test.txt"):
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    os.environ["AUTORESEARCH_DATA_DIR"] = str(data)
    results = {}
    for name in names or list(ATTACKS):
        recipe_dir, code = build(name, root)
        logs, ws = root / name / "logs", root / name / "ws"
        ws.mkdir()
        t0 = time.monotonic()
        try:
            ev = evaluate_code(load_recipe(recipe_dir), code, keep_logs_in=logs, workspace_base=str(ws)).to_dict()
        except Exception as e:  # recorded: the test says whether this mode may raise
            ev = {"raised": type(e).__name__, "message": str(e), "traceback": traceback.format_exc()[-3000:]}
        reports = {}
        for log in sorted(logs.glob("*.stdout.txt")) if logs.exists() else []:
            for line in reversed(log.read_text(errors="replace").splitlines()):
                if line.startswith('{"report"'):
                    reports[log.name.split(".")[0]] = json.loads(line)["report"]
                    break
        time.sleep(0.2)
        results[name] = {"evaluation": ev, "reports": reports, "seconds": time.monotonic() - t0,
                         "workspace_left": sorted(p.name for p in ws.iterdir()),
                         "alive": alive_with(MARK),
                         "eval_stdout": (logs / "seed0-eval.stdout.txt").read_text(errors="replace")
                         if (logs / "seed0-eval.stdout.txt").exists() else ""}
    return results


if __name__ == "__main__":
    out = Path(sys.argv[1])
    names = sys.argv[2].split(",") if len(sys.argv) > 2 and sys.argv[2] else None
    res = run(out, names)
    (out / "results.json").write_text(json.dumps(res, indent=1))
