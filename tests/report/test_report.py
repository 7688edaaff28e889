"""The report of a real lineage: PNGs with content, numbers that match the trials, a page a browser loads."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
from PIL import Image

from mlflow_autoresearch import schema as S
from mlflow_autoresearch.lineage import InMemoryStore, TrialDraft
from mlflow_autoresearch.report import build_report, log_report
from mlflow_autoresearch.report._facts import compute, infer_goal
from mlflow_autoresearch.report._html import Links, render

from .browser import dump_dom, screenshot

pytestmark = pytest.mark.slow  # the module's lineage runs six real evaluations


def _pixels(path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB"), dtype=np.int16)


def _has_colour(px: np.ndarray, hex_colour: str, tol: int = 30, at_least: int = 20) -> bool:
    rgb = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(px - rgb).max(axis=2) <= tol).sum()) >= at_least


def test_every_plot_is_a_png_with_content(toy_report):
    assert set(toy_report.images) == {"best_by_trial", "best_by_time", "tree", "specialists", "cost"}
    for name, path in toy_report.images.items():
        px = _pixels(path)
        h, w, _ = px.shape
        assert w >= 500 and h >= 250, f"{name} is only {w}x{h}"
        assert px.std() > 20, f"{name} looks blank"
        not_white = (px < 240).any(axis=2).mean()
        assert not_white > 0.03, f"{name}: only {not_white:.1%} of its pixels are drawn"


def test_tree_marks_the_best_path_and_colours_outcomes(toy_report):
    px = _pixels(toy_report.images["tree"])
    assert _has_colour(px, "#e6a800", at_least=200), "no gold path to the best"
    assert _has_colour(px, "#1a7f37"), "no kept (dark green) node"
    assert _has_colour(px, "#d62728"), "no crashed (red) node"
    assert _has_colour(px, "#f0a030"), "no gate_failed (orange) node"


def test_summary_numbers_match_the_trials(toy_lineage, toy_report):
    s = json.loads(toy_report.summary.read_text())
    t = toy_lineage.trials
    assert s["trials"] == 6 and s["metric"] == "loss" and s["goal"] == "minimize"
    assert s["kept_improvements"] == 2
    assert s["best"]["run_id"] == t["repair"].run_id and s["best"]["score"] == pytest.approx(0.3)
    assert s["baseline"]["score"] == pytest.approx(0.5)
    assert s["relative_gain"] == pytest.approx(0.4)  # 0.5 -> 0.3, minimised
    assert s["outcomes"] == {"ok": 4, "crashed": 1, "gate_failed": 1}
    assert s["repairs"] == [{"failure": "t0003", "repair": "t0004"}]
    assert s["llm_cost_usd"] == pytest.approx(5 * 0.02)
    assert s["llm_tokens_in"] == 5000 and s["llm_tokens_out"] == 1000
    # Training of every seed, plus the confirmation runs the keep decisions paid for.
    stored = [toy_lineage.store.get(r.run_id) for r in t.values()]
    confirm = sum(r.metrics.get("confirm_seconds", 0) for r in stored)
    expected_gpu = sum(r.metrics.get("train_seconds", 0) * r.metrics.get("seeds", 1) for r in stored) + confirm
    assert confirm > 0 and s["confirm_seconds"] == pytest.approx(confirm)
    assert s["gpu_seconds"] == pytest.approx(expected_gpu) and s["gpu_seconds"] > 0
    assert s["usd_per_improvement"] == pytest.approx(0.05)
    arch = next(x for x in s["specialists"] if x["name"] == "architecture")
    assert arch == {"name": "architecture", "trials": 2, "kept": 1, "outcomes": {"crashed": 1, "ok": 1}}


def test_cost_of_each_improvement_counts_the_trials_since_the_previous_one(toy_lineage):
    facts = compute(toy_lineage.store.trials(), "minimize", "report-toy")
    first, second = facts.improvements
    assert first.trial.short == "t0001" and first.trials_spent == 1 and first.dollars == pytest.approx(0.02)
    # t0002 (regression), t0003 (crash) and t0004 (the repair) paid for the second improvement
    assert second.trial.short == "t0004" and second.trials_spent == 3 and second.dollars == pytest.approx(0.06)
    assert second.gain == pytest.approx(0.1) and second.previous.short == "t0001"


def test_page_loads_in_chromium_with_leaderboard_tree_and_repairs(toy_lineage, toy_report, tmp_path):
    html = toy_report.html.read_text()
    external = re.findall(r'(?:src|href)="(?!data:|#)([^"]*)"', html)
    assert external == [], f"the page is not self-contained: {external}"
    # The page as Chromium builds it, with every image's decoded width recorded after load.
    probe = tmp_path / "probe.html"
    probe.write_text(html.replace("</body>", "<script>window.addEventListener('load', () => "
                                  "{document.body.dataset.widths = [...document.images].map(i => i.naturalWidth)"
                                  ".join(',');});</script></body>"))
    dom = dump_dom(probe, tmp_path / "profile")
    widths = [int(w) for w in re.search(r'data-widths="([^"]*)"', dom).group(1).split(",")]
    assert len(widths) == 5 and min(widths) > 400, f"images did not decode: {widths}"
    assert 'id="tree-img"' in dom

    board = re.search(r'<section id="leaderboard">(.*?)</section>', dom, re.S).group(1)
    ranked = re.findall(r'<tr><td class="num">\d+</td><td>(t\d{4})', board)
    assert ranked == ["t0004", "t0001", "t0000"]  # kept trials, best loss first
    assert "wider hidden layer, crash fixed" in board and "halve the warmup" in board
    assert toy_lineage.trials["repair"].run_id in board  # no UI address known: the run id is shown

    repairs = re.search(r'<section id="repairs">(.*?)</section>', dom, re.S).group(1)
    assert "t0003" in repairs and "t0004" in repairs and "RuntimeError" in repairs
    assert "-raise RuntimeError(&#x27;scripted crash&#x27;)" in repairs or "-raise RuntimeError" in repairs

    shot = screenshot(toy_report.html, tmp_path / "page.png", tmp_path / "profile")
    px = _pixels(shot)
    assert px.shape[1] == 1400 and px.std() > 20
    assert _has_colour(px, "#0b3d2e", at_least=5000), "the page header did not render"


def test_links_open_the_trial_in_the_mlflow_ui(toy_lineage, toy_report):
    store = toy_lineage.store
    facts = compute(store.trials(), "minimize", store.experiment_name)
    best = toy_lineage.trials["repair"]
    links = Links.for_tracking_uri("http://mlflow.example:5000/", store.experiment_id)
    page = render(facts, toy_report.images, links, title="t", tracking_uri="http://mlflow.example:5000/")
    assert f'href="http://mlflow.example:5000/#/experiments/{store.experiment_id}/runs/{best.run_id}"' in page
    local = Links.for_tracking_uri(toy_lineage.uri, store.experiment_id)
    assert local.url(best.run_id) is None and best.run_id in local.trial(best)
    forced = Links.for_tracking_uri(toy_lineage.uri, store.experiment_id, ui_url="http://127.0.0.1:5000")
    assert forced.url(best.run_id) == f"http://127.0.0.1:5000/#/experiments/{store.experiment_id}/runs/{best.run_id}"


def test_goal_comes_from_the_recipe_or_from_the_kept_scores(toy_lineage):
    assert infer_goal(toy_lineage.store.trials()) == "minimize"  # the recipe named on the runs
    store = InMemoryStore("up")
    parent = None
    for score in (1.0, 2.0, 3.0):  # each kept trial beat the one before by going up: maximize
        t = store.create_trial(TrialDraft(files={"a": b""}, specialist="x", hypothesis="h",
                                          parent_id=parent.run_id if parent else None))
        store.record_result(t.run_id, tags={S.OUTCOME: "ok", S.DECISION: "keep", S.SCORE_NAME: "acc"},
                            metrics={"acc": score}, artifacts={})
        parent = t
    assert infer_goal(store.trials()) == "maximize"
    assert infer_goal([]) is None


def test_log_report_needs_an_mlflow_experiment():
    assert log_report(InMemoryStore("nothing-to-log-to")) is None


def test_report_of_an_empty_experiment_says_so(tmp_path):
    paths = build_report([], tmp_path, goal="minimize")
    page = paths.html.read_text()
    assert "no kept trials yet" in page and "no failure has been repaired" in page
    for path in paths.images.values():
        assert _pixels(path).std() > 5  # a titled, empty plot, still a valid image
    assert json.loads(paths.summary.read_text())["trials"] == 0
    assert not math.isnan(json.loads(paths.summary.read_text())["gpu_seconds"])


# ----- legends and the cost plot say only what happened (issue 14) --------------------------------------------

def _legend_labels(fig) -> list[str]:
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None] + list(fig.legends)
    return [t.get_text() for leg in legends for t in leg.get_texts()]


def test_legends_sit_beside_the_data_and_name_only_outcomes_that_occurred(toy_lineage, tmp_path):
    import matplotlib.pyplot as plt

    from mlflow_autoresearch.report._plots import FIGURES, PLOTS

    all_trials = list(toy_lineage.store.trials())
    without_gate_miss = [t for t in all_trials if t.run_id != toy_lineage.trials["near_miss"].run_id]
    for trials, gate_failed in ((all_trials, True), (without_gate_miss, False)):
        facts = compute(trials, "minimize", "toy")
        for name, build in FIGURES.items():
            fig = build(facts)
            fig.canvas.draw()
            renderer = fig.canvas.get_renderer()
            legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None] + list(fig.legends)
            assert legends or name == "cost", f"{name} has no legend"
            for leg in legends:
                box = leg.get_window_extent(renderer)
                for ax in fig.axes:
                    assert not box.overlaps(ax.get_window_extent(renderer)), f"{name}: the legend covers the data"
            labels = " ".join(_legend_labels(fig))
            assert "timed" not in labels and "preflight" not in labels and "harness" not in labels, (name, labels)
            if name in ("best_by_trial", "tree", "specialists"):
                assert ("gate" in labels) is gate_failed, (name, labels)
            plt.close(fig)
        png = PLOTS["best_by_trial"](facts, tmp_path / f"best-{gate_failed}.png")
        # the orange of a gate failure is drawn (point and legend) only where one happened
        assert _has_colour(_pixels(png), "#f0a030", tol=20) is gate_failed
        assert _has_colour(_pixels(png), "#d62728", tol=20)  # the crash: in the rug and in the legend


def test_cost_plot_draws_dollars_only_when_spent_and_names_what_the_trials_ran_on(toy_lineage, tmp_path):
    import dataclasses

    import matplotlib.pyplot as plt

    from mlflow_autoresearch.evaluator._core import trial_device
    from mlflow_autoresearch.report._plots import PLOTS, cost_figure

    trials = list(toy_lineage.store.trials())
    assert {t.tags.get(S.DEVICE) for t in trials if t.finished} == {trial_device()}  # the evaluator's fact

    def on(device: str, spend: bool):
        out = []
        for t in trials:
            metrics = {k: v for k, v in t.metrics.items() if spend or k != "llm_cost_usd"}
            out.append(dataclasses.replace(t, metrics=metrics, tags={**t.tags, S.DEVICE: device}))
        return compute(out, "minimize", "toy")

    offline_cpu = on("cpu", spend=False)
    fig = cost_figure(offline_cpu)
    ylabels = [ax.get_ylabel() for ax in fig.axes]
    assert len(fig.axes) == 2 and not any("dollar" in y for y in ylabels), ylabels
    assert ylabels == ["CPU-seconds since the previous improvement", "CPU-seconds, cumulative"]
    assert "no LLM dollars recorded" in fig.axes[1].get_title()
    plt.close(fig)
    px = _pixels(PLOTS["cost"](offline_cpu, tmp_path / "offline.png"))
    assert not _has_colour(px, "#c44e52", tol=20), "a dollars line or axis label is drawn with no spend"

    paid_gpu = on("gpu:0", spend=True)
    fig = cost_figure(paid_gpu)
    ylabels = [ax.get_ylabel() for ax in fig.axes]
    assert len(fig.axes) == 4 and sum("LLM dollars" in y for y in ylabels) == 2
    assert "GPU-seconds, cumulative" in ylabels and not any("CPU" in y for y in ylabels)
    assert _legend_labels(fig) == ["GPU-seconds (train_seconds × seeds)", "LLM dollars"]
    plt.close(fig)
    assert _has_colour(_pixels(PLOTS["cost"](paid_gpu, tmp_path / "paid.png")), "#c44e52", tol=20)
    assert build_report(toy_lineage.store, tmp_path / "r").summary.exists()
    assert on("cpu", spend=True).device_seconds == "CPU-seconds"
    assert compute([dataclasses.replace(t, tags={k: v for k, v in t.tags.items() if k != S.DEVICE})
                    for t in trials], "minimize").device == "compute"
