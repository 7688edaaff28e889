#!/usr/bin/env python
"""Screenshots of the MLflow UI serving a real loop's store, for docs/mlflow-ui.md.

Rerun it to refresh docs/img/ui-*.png (the MLflow UI) and docs/img/report.png (the report):

    python scripts/ui_screenshots.py                   # a short offline loop into a fresh store, then the shots
    python scripts/ui_screenshots.py --tracking-uri sqlite:///mlflow.db --experiment digits-speedrun
    python scripts/ui_screenshots.py --server-url http://127.0.0.1:5000 --experiment digits-speedrun

Without ``--server-url`` it starts ``mlflow server --workers 1`` on 127.0.0.1
against the store and stops it at the end.  The browser is headless Chromium
(``chromium`` on the PATH, or ``--chromium``), driven through the DevTools
protocol over a pipe (standard library only): the UI is a React app, so each
shot waits until the page shows the text it is about, and the UI's own
preferences (the "Model training" view, the runs table's columns, the
assistant panel closed) are set in the page's localStorage before it loads.
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WIDTH, HEIGHT = 1600, 1000
LOOP_ARGS = ["run", "--recipe", str(ROOT / "recipes" / "digits-speedrun"), "--profile", "quick", "--trials", "6",
             "--agent", "offline", "--in-process"]

logger = logging.getLogger("ui_screenshots")

# Find an element by its own visible text (the UI's class names are generated; its words are stable).
PAGE_HELPERS = """
window.__find = (text) => [...document.querySelectorAll('body *')].filter(e => e.innerText
  && e.innerText.trim() === text && ![...e.children].some(c => c.innerText && c.innerText.trim() === text));
window.__click = (text, nth) => { const els = __find(text); const e = els[nth || 0]; if (e) e.click(); return !!e; };
window.__switchAfter = (text) => { const h = __find(text)[0]; if (!h) return false;
  const e = [...document.querySelectorAll('[role=switch]')].find(
    s => h.compareDocumentPosition(s) & Node.DOCUMENT_POSITION_FOLLOWING);
  if (e) e.click(); return !!e; };
window.__scroll = (text, nth) => { const els = __find(text); const e = els[nth || 0];
  if (e) e.scrollIntoView({block: 'start'}); return !!e; };
true
"""


# ----- a headless Chromium on the DevTools protocol, over --remote-debugging-pipe ----------------------

def find_chromium(explicit: str | None = None) -> str:
    for name in ([explicit] if explicit else []) + ["chromium", "chromium-browser", "google-chrome", "chrome"]:
        path = shutil.which(name) if name else None
        if path:
            return path
    raise SystemExit("no Chromium found: install it (Debian/Ubuntu: apt-get install -y chromium) or pass --chromium")


class Browser:
    """One headless Chromium with one tab.  Messages are NUL-terminated JSON on fds 3 (in) and 4 (out)."""

    def __init__(self, chromium: str | None = None, width: int = WIDTH, height: int = HEIGHT) -> None:
        self.width, self.height = width, height
        self.profile = tempfile.mkdtemp(prefix="ui-shots-chromium-")
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()

        def wire_fds() -> None:  # runs in the child before exec
            r = fcntl.fcntl(to_child_r, fcntl.F_DUPFD, 10)
            w = fcntl.fcntl(from_child_w, fcntl.F_DUPFD, 10)
            os.dup2(r, 3)
            os.dup2(w, 4)

        args = [find_chromium(chromium), "--headless", "--no-sandbox", "--disable-gpu",
                "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
                "--hide-scrollbars", "--mute-audio", f"--user-data-dir={self.profile}", "--remote-debugging-pipe",
                f"--window-size={width},{height}", "about:blank"]
        self.proc = subprocess.Popen(args, preexec_fn=wire_fds, close_fds=False, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_child_r)
        os.close(from_child_w)
        self._out = os.fdopen(to_child_w, "wb")
        self._in = from_child_r
        self._buf = b""
        self._id = 0
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.call("Page.enable")
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})

    def _message(self, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        while b"\0" not in self._buf:
            if time.monotonic() > deadline:
                raise TimeoutError("Chromium did not answer")
            chunk = os.read(self._in, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium exited")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self._id += 1
        msg: dict = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self._out.write(json.dumps(msg).encode() + b"\0")
        self._out.flush()
        while True:
            reply = self._message()
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def call(self, method: str, params: dict | None = None) -> dict:
        return self.send(method, params, self.session)

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True})
        return result.get("result", {}).get("value")

    def before_each_page(self, script: str) -> None:
        self.call("Page.addScriptToEvaluateOnNewDocument", {"source": script})

    def open(self, url: str, wait_for: list[str], timeout: float = 60.0, settle: float = 2.0,
             actions: tuple[str, ...] = ()) -> str:
        """Load ``url``, wait until the page's text holds every string of ``wait_for``, then run ``actions``.

        ``actions`` are JavaScript expressions that may use ``__click(text, nth)`` and
        ``__scroll(text, nth)`` (the nth element whose own text is ``text``).  Returns the page's text.
        """
        self.call("Page.navigate", {"url": "about:blank"})
        self.call("Page.navigate", {"url": url})
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = self.evaluate("document.body ? document.body.innerText : ''") or ""
            if all(w in text for w in wait_for):
                time.sleep(settle)  # charts and fonts finish drawing
                self.evaluate(PAGE_HELPERS)
                for js in actions:
                    if not self.evaluate(js):
                        logger.warning("%s: action %s found nothing to act on", url, js)
                    time.sleep(1.0)
                return self.evaluate("document.body.innerText") or text
            time.sleep(0.5)
        missing = [w for w in wait_for if w not in text]
        raise TimeoutError(f"{url}: the page never showed {missing!r}; it showed:\n{text[:1500]}")

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (RuntimeError, OSError, TimeoutError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._out.close()
        os.close(self._in)
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ----- the store and the server ------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``mlflow server --workers 1`` on 127.0.0.1 against a tracking store; stopped by :meth:`stop`."""

    def __init__(self, backend_uri: str, workdir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "mlflow-server.log"
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true",
               "DO_NOT_TRACK": "true"}
        mlflow = str(Path(sys.executable).parent / "mlflow")
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [mlflow, "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
                 "--backend-store-uri", backend_uri, "--artifacts-destination", str(workdir / "mlartifacts")],
                cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"mlflow server not healthy in 120 s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()


def run_offline_loop(workdir: Path) -> str:
    """A short offline loop on the digits recipe into a fresh SQLite store; returns its URI."""
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    cmd = [str(Path(sys.executable).parent / "autoresearch"), *LOOP_ARGS, "--tracking-uri", uri]
    logger.info("running: %s", " ".join(cmd))
    subprocess.run(cmd, cwd=workdir, check=True)
    return uri


# ----- what to show ------------------------------------------------------------------------------------

def plan(server_url: str, experiment: str | None) -> dict:
    """The experiment, its trials, and the two to compare: the best kept trial and its parent."""
    from mlflow.tracking import MlflowClient

    from mlflow_autoresearch import schema as S
    from mlflow_autoresearch.lineage import Lineage, MlflowStore
    from mlflow_autoresearch.report._facts import infer_goal

    if experiment is None:
        client = MlflowClient(server_url)
        names = [e.name for e in client.search_experiments() if e.tags.get(S.LEDGER_TAG)]
        if len(names) != 1:
            raise SystemExit(f"pass --experiment: the store holds {len(names)} autoresearch experiments {names}")
        experiment = names[0]
    store = MlflowStore(experiment, server_url, create=False)
    trials = [t for t in store.trials() if t.finished]
    if len(trials) < 2:
        raise SystemExit(f"experiment {experiment!r} has {len(trials)} finished trials; at least 2 are needed")
    lineage = Lineage(trials, infer_goal(trials) or "minimize")

    def scored_parent(t):
        p = lineage.by_id.get(t.parent_id) if t.parent_id else None
        return p if p is not None and p.score is not None else None

    # The best kept trial whose parent has a score: its diff and its metrics answer "what changed, did it help".
    kept = [t for t in lineage.kept if t.decision == "keep"]
    focus = next((t for t in kept if scored_parent(t)), kept[0] if kept else trials[-1])
    other = scored_parent(focus) or lineage.by_id.get(focus.parent_id or "") or next(
        t for t in trials if t.run_id != focus.run_id)
    score = focus.tags.get(S.SCORE_NAME) or "score"
    gates = sorted({k for t in trials for k in t.metrics
                    if k not in (score, "seeds", "artifact_bytes", "train_seconds") and "." not in k
                    and not k.endswith("_std") and not k.startswith(("llm_", "train/"))})
    return {"experiment": experiment, "experiment_id": store.experiment_id, "focus": focus, "other": other,
            "score": score, "gates": gates[:3], "trials": trials}


def ui_state(score: str, gates: list[str]) -> dict:
    """The runs page's persisted state: trials only, newest first, our columns, the score's charts."""
    cols = [f"tags.`autoresearch.{k}`" for k in ("specialist", "outcome", "decision")]
    cols += [f"metrics.`{m}`" for m in [score, *gates] if m]
    cols += ["metrics.`llm_cost_usd`", "tags.`autoresearch.hypothesis`"]
    widths = {c: 135 if c.startswith("tags.") else 110 for c in cols}
    widths["tags.`autoresearch.hypothesis`"] = 340
    return {"searchFilter": "tags.`autoresearch.kind` = 'trial'", "orderByKey": "attributes.start_time",
            "columnWidths": widths, "columnOrder": cols,
            "orderByAsc": False, "startTime": "ALL", "lifecycleFilter": "Active", "datasetsFilter": [],
            "modelVersionFilter": "All Runs", "selectedColumns": cols, "runsPinned": [], "runsHidden": [],
            "runsHiddenMode": "FIRST_10_RUNS", "hideEmptyCharts": True,
            # the chart view keeps the score and the gates (a regular expression over chart names)
            "chartsSearchFilter": "^(" + "|".join(re.escape(m) for m in [score, *gates] if m) + ")$"}


def prefs_script(experiment_id: str, state: dict) -> str:
    """localStorage the UI reads at start: the model-training view, no assistant, no tours, our columns."""
    items = {
        "mlflow.workflowType_v1": json.dumps("machine_learning"),
        "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": "true",
        "mlflow.assistant.panelOpen_v1": "false",
        "mlflow.detectIssues.guidanceShown_v1": "true",
        "mlflow.flagForReview.guidanceShown_v1": "true",
        "_mlflow_model_registry_promo_modal_dismissed_v1": "true",
        f'MLflowLocalStorage-1.1-ExperimentPage-["{experiment_id}"]-ReactComponentState': json.dumps(state),
    }
    sets = "".join(f"localStorage.setItem({json.dumps(k)}, {json.dumps(v)});" for k, v in items.items())
    return f"try {{ if (!sessionStorage.getItem('ui-shots')) {{ {sets} sessionStorage.setItem('ui-shots', '1'); }} }}" \
           " catch (e) {}"


def urls(server_url: str, p: dict) -> dict[str, str]:
    exp = p["experiment_id"]
    runs = urllib.parse.quote(json.dumps([p["other"].run_id, p["focus"].run_id]))
    exps = urllib.parse.quote(json.dumps([exp]))
    q = "workflowType=machine_learning"
    return {
        "runs": f"{server_url}/#/experiments/{exp}/runs?{q}",
        "run": f"{server_url}/#/experiments/{exp}/runs/{p['focus'].run_id}?{q}",
        "compare": f"{server_url}/#/compare-runs?runs={runs}&experiments={exps}",
        "chart": f"{server_url}/#/experiments/{exp}/runs?{q}&compareRunsMode=CHART",
    }


@dataclass(frozen=True)
class Shot:
    """One screenshot: the PNG, the page's address and the text it showed."""

    path: Path
    url: str
    text: str


def take(server_url: str, out_dir: Path, experiment: str | None = None, chromium: str | None = None,
         prefix: str = "ui-") -> dict[str, Shot]:
    """The four screenshots, by name.  Raises TimeoutError when a page never shows its content."""
    p = plan(server_url, experiment)
    focus, other = p["focus"], p["other"]
    u = urls(server_url, p)
    shots: dict[str, Shot] = {}
    with Browser(chromium) as b:
        b.before_each_page(prefs_script(p["experiment_id"], ui_state(p["score"], p["gates"])))

        def shot(name: str, file: str, wait_for: list[str], **kw) -> None:
            text = b.open(u[name], wait_for, **kw)
            shots[name] = Shot(b.screenshot(out_dir / f"{prefix}{file}.png"), u[name], text)

        shot("runs", "runs-table", [focus.name, "autoresearch.outcome", p["score"]])
        shot("run", "trial-note", [focus.name, "Hypothesis", "Outcome"], actions=("__click('Show more')",))
        # MLflow previews no .diff file, so the comparison shows metrics (did it help) and the tags that
        # differ (hypothesis, outcome, decision and its reason: what changed and why it was kept).
        shot("compare", "compare", [focus.name, other.name, p["score"], "Show diff only"],
             actions=("__click('Visualizations')", "__click('Artifacts')", "__click('Parameters')",
                      "__switchAfter('Metrics')", "__switchAfter('Tags')", "__scroll('Metrics')"))
        shot("chart", "charts", [focus.name, "Model metrics", p["score"]], settle=4.0)
    return shots


def report_shot(server_url: str, experiment: str, out_dir: Path, chromium: str | None = None,
                prefix: str = "") -> Shot:
    """The report of the same experiment (``autoresearch report``), its first screen."""
    from mlflow_autoresearch.lineage import MlflowStore
    from mlflow_autoresearch.report import build_report

    with tempfile.TemporaryDirectory(prefix="ui-shots-report-") as tmp:
        paths = build_report(MlflowStore(experiment, server_url, create=False), tmp)
        url = paths.html.resolve().as_uri()
        with Browser(chromium) as b:
            text = b.open(url, ["Leaderboard", "Lineage tree"], settle=1.0)
            return Shot(b.screenshot(out_dir / f"{prefix}report.png"), url, text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tracking-uri", help="an existing store (e.g. sqlite:///mlflow.db) [default: run a loop]")
    ap.add_argument("--server-url", help="an MLflow server already serving the store (nothing is started)")
    ap.add_argument("--experiment", help="experiment name [default: the store's only autoresearch experiment]")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "img", help="folder for the PNGs [docs/img]")
    ap.add_argument("--chromium", help="Chromium executable [default: chromium on the PATH]")
    ap.add_argument("--keep", action="store_true", help="keep the temporary store of the loop")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    find_chromium(args.chromium)

    work = Path(tempfile.mkdtemp(prefix="ui-shots-"))
    server = None
    try:
        url = args.server_url
        if url is None:
            uri = args.tracking_uri or run_offline_loop(work)
            server = Server(uri, work)
            url = server.url
            logger.info("mlflow server on %s (store %s)", url, uri)
        shots = take(url.rstrip("/"), args.out, args.experiment, args.chromium)
        shots["report"] = report_shot(url.rstrip("/"), plan(url.rstrip("/"), args.experiment)["experiment"],
                                      args.out, args.chromium)
        for name, s in shots.items():
            logger.info("%s: %s", name, s.path)
    finally:
        if server is not None:
            server.stop()
        if args.keep:
            logger.info("store and server log kept in %s", work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
