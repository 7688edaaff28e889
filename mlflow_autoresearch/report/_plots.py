"""The report's PNG plots, drawn with matplotlib's Agg backend (no display needed).

Each function takes :class:`~mlflow_autoresearch.report._facts.Facts` and a
path, writes one PNG and returns the path.  Figures are closed after saving,
so drawing many reports in one process does not leak memory.  The figures
themselves come from :data:`FIGURES` (``name -> Facts -> Figure``), for tests
that read what was drawn.

Legends name only what the plot shows (outcomes that occurred, specialists
that ran) and sit beside or below the axes, never over the data.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from mlflow_autoresearch.report._facts import Facts, dollars, gpu_seconds, outcome_word  # noqa: E402
from mlflow_autoresearch.report._tree import layout  # noqa: E402

DPI = 110
OUTCOME_COLORS = {
    "kept": "#1a7f37",  # ok and kept (or the baseline)
    "ok": "#9fd8a8",  # ok, not better than the best
    "gate_failed": "#f0a030",
    "crashed": "#d62728",
    "preflight_failed": "#e377c2",
    "timed_out": "#9467bd",
    "size_exceeded": "#8c564b",
    "invalid_proposal": "#9a9a9a",
    "protected_violation": "#222222",
    "harness_error": "#bcbd22",
    "running": "#d9d9d9",
}
MARKERS = ["o", "s", "^", "D", "v", "P", "h", "<", ">", "p", "8"]
BEST_PATH = "#e6a800"


def _color(word: str) -> str:
    return OUTCOME_COLORS.get(word, OUTCOME_COLORS["running"])


def _trial_color(t) -> str:
    return _color("kept" if t.kept else outcome_word(t))


def specialist_markers(facts: Facts) -> dict[str, str]:
    names = sorted({t.specialist for t in facts.trials if t.specialist and t.specialist != "baseline"})
    markers = {name: MARKERS[i % len(MARKERS)] for i, name in enumerate(names)}
    markers["baseline"] = "*"
    return markers


LEGEND_BESIDE = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "fontsize": 8, "frameon": False}


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=DPI, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    return path


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=12, color="#555")
    ax.set_xticks([])
    ax.set_yticks([])


def _log_scale(values: list[float]) -> bool:
    pos = [v for v in values if v is not None and v > 0 and math.isfinite(v)]
    return len(pos) == len(values) and len(pos) > 1 and max(pos) / min(pos) > 30


def _progress(facts: Facts, *, by_time: bool):
    points = facts.by_time if by_time else facts.by_number
    markers = specialist_markers(facts)
    fig, ax = plt.subplots(figsize=(9, 4.6))
    scale = 60.0 if by_time and points and points[-1].seconds > 600 else 1.0
    unit = "minutes" if scale == 60 else "seconds"

    def x_of(p) -> float:
        return p.seconds / scale if by_time else p.trial.number

    scored = [p for p in points if p.trial.score is not None and p.trial.outcome is not None
              and p.trial.outcome.value in ("ok", "gate_failed")]
    if not scored:
        _empty(ax, "no scored trials yet")
        ax.set_title(f"Best {facts.metric} against {'wall clock' if by_time else 'trial number'}")
        return fig
    others = [p for p in scored if not p.trial.kept]
    ax.scatter([x_of(p) for p in others], [p.trial.score for p in others], s=18,
               c=[_trial_color(p.trial) for p in others], alpha=0.8, linewidths=0, label="scored, not kept", zorder=2)
    steps = [p for p in points if p.best is not None]
    if steps:
        ax.step([x_of(p) for p in steps], [p.best for p in steps], where="post", color="#1a7f37", lw=2,
                label=f"best {facts.metric} so far", zorder=3)
    for p in scored:
        if p.trial.kept:
            ax.scatter([x_of(p)], [p.trial.score], s=70, marker=markers.get(p.trial.specialist, "o"),
                       c=_color("kept"), edgecolors="black", linewidths=0.8, zorder=4)
    fails = [p for p in points if p.trial.outcome is not None and p.trial.outcome.value not in ("ok", "gate_failed")]
    values = [p.trial.score for p in scored]
    if _log_scale(values):
        ax.set_yscale("log")
    if fails:  # a rug of failures along the bottom, so where the loop struggled is visible
        ax.scatter([x_of(p) for p in fails], [0.02] * len(fails), transform=ax.get_xaxis_transform(), marker="|",
                   s=120, c=[_trial_color(p.trial) for p in fails], zorder=5)
    if facts.goal == "minimize":
        lo, hi = min(values), max(values)
        pad = (hi - lo) * 0.08 or abs(hi) * 0.05 or 0.1
        if ax.get_yscale() == "linear":
            ax.set_ylim(lo - pad * 1.6, hi + pad)  # room for the failure rug
    ax.set_xlabel(f"wall clock ({unit} since the first trial started)" if by_time else "trial number")
    ax.set_ylabel(f"{facts.metric} ({facts.goal})")
    ax.set_title(f"Best {facts.metric} against {'wall clock' if by_time else 'trial number'}")
    ax.grid(True, alpha=0.3)
    if not by_time:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    handles = []
    if steps:
        handles.append(Line2D([], [], color="#1a7f37", lw=2, label=f"best {facts.metric} so far"))
    shown = {_trial_color(p.trial): p for p in others}
    for word, label in (("ok", "ok, not kept"), ("gate_failed", "gate failed (scored)")):
        if _color(word) in shown:
            handles.append(Line2D([], [], marker="o", ls="", color=_color(word), label=label))
    if any(p.trial.kept for p in scored):
        handles.append(Line2D([], [], marker="*", ls="", markerfacecolor=_color("kept"), markeredgecolor="black",
                              markersize=10, label="kept (marker = specialist)"))
    for word in sorted({outcome_word(p.trial) for p in fails}):
        handles.append(Line2D([], [], marker="|", ls="", color=_color(word), markersize=10,
                              label=f"{word.replace('_', ' ')} (no score)"))
    ax.legend(handles=handles, **LEGEND_BESIDE)
    return fig


def best_by_trial_figure(facts: Facts):
    return _progress(facts, by_time=False)


def best_by_time_figure(facts: Facts):
    return _progress(facts, by_time=True)


def best_by_trial(facts: Facts, path: Path) -> Path:
    return _save(best_by_trial_figure(facts), path)


def best_by_time(facts: Facts, path: Path) -> Path:
    return _save(best_by_time_figure(facts), path)


def tree(facts: Facts, path: Path) -> Path:
    """The lineage tree: depth left to right, colour = outcome, marker = specialist, gold = best path."""
    return _save(tree_figure(facts), path)


def tree_figure(facts: Facts):
    lay = layout(facts.lineage)
    markers = specialist_markers(facts)
    width = min(44.0, max(7.0, 1.05 * (lay.depth + 1) + 3))
    height = min(40.0, max(3.0, 0.3 * lay.rows + 1.4))
    rotate = lay.depth > 12  # long chains: slanted labels above the nodes, so neighbours do not overlap
    fig, ax = plt.subplots(figsize=(width, height))
    if not lay.nodes:
        _empty(ax, "no trials yet")
        return fig
    for n in lay.nodes.values():  # edges first, best path on top
        if n.parent in lay.nodes:
            p = lay.nodes[n.parent]
            on_path = n.trial is not None and n.key in lay.best_path and p.key in lay.best_path
            ax.plot([p.x, p.x + 0.5, p.x + 0.5, n.x], [p.y, p.y, n.y, n.y], color=BEST_PATH if on_path else "#b5b5b5",
                    lw=3.2 if on_path else 0.9, zorder=3 if on_path else 1, solid_capstyle="round")
    labelled = 0
    for n in lay.nodes.values():
        if n.trial is None:
            word, count = n.folded.most_common(1)[0]
            ax.scatter([n.x], [n.y], s=90, marker="s", c="white", edgecolors="#777", linewidths=1, zorder=4)
            detail = ", ".join(f"{c} {w}" for w, c in n.folded.most_common(3))
            ax.text(n.x + 0.12, n.y, f"+{n.size} folded ({detail})", va="center", fontsize=7, color="#555", zorder=5)
            continue
        t = n.trial
        on_path = n.key in lay.best_path
        ax.scatter([n.x], [n.y], s=150 if t.kept else 70, marker=markers.get(t.specialist, "o"), c=_trial_color(t),
                   edgecolors="black" if t.kept else "#555", linewidths=1.6 if t.kept else 0.5, zorder=6)
        if t.kept or on_path or (lay.rows <= 40 and labelled < 60):
            score = "" if t.score is None else f" {t.score:.4g}"
            if rotate:
                ax.text(n.x + 0.05, n.y - 0.2, f"{t.short}{score}", va="bottom", ha="left", fontsize=7.5,
                        rotation=30, rotation_mode="anchor", fontweight="bold" if on_path else "normal", zorder=7)
            else:
                ax.text(n.x + 0.14, n.y, f"{t.short}{score}", va="center", fontsize=7.5,
                        fontweight="bold" if on_path else "normal", zorder=7)
            labelled += 1
    ax.set_xlim(-0.5, lay.depth + 1.6)
    ax.set_ylim(lay.rows - 0.5, -1.6 if rotate else -0.8)
    ax.set_xticks(range(lay.depth + 1))
    ax.set_xlabel("generation (steps from the baseline)")
    ax.set_yticks([])
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    title = f"Lineage tree of {facts.experiment or 'the experiment'}: {len(facts.trials)} trials"
    if lay.folded_trials:
        title += f" ({lay.folded_trials} discarded trials folded into +N nodes)"
    ax.set_title(title, fontsize=11, pad=28 if rotate else 8)
    words = sorted({("kept" if t.kept else outcome_word(t)) for t in facts.trials})
    handles = [Patch(color=_color(w), label=w) for w in words]
    handles += [Line2D([], [], marker=m, ls="", color="#444", label=name) for name, m in markers.items()
                if any(t.specialist == name for t in facts.trials)]
    handles.append(Line2D([], [], color=BEST_PATH, lw=3, label="path to the best"))
    ax.legend(handles=handles, **LEGEND_BESIDE)
    return fig


def specialists(facts: Facts, path: Path) -> Path:
    """Outcome mix (stacked bars) and keep rate per specialist."""
    return _save(specialists_figure(facts), path)


def specialists_figure(facts: Facts):
    stats = facts.specialists
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, max(2.6, 0.55 * len(stats) + 1.6)),
                                   gridspec_kw={"width_ratios": [3, 2]})
    if not stats:
        _empty(ax1, "no specialist trials yet")
        _empty(ax2, "")
        return fig
    names = [s.name for s in stats]
    words = ["kept", "ok"] + [w for w in OUTCOME_COLORS if w not in ("kept", "ok")]
    left = [0.0] * len(stats)
    for w in words:
        counts = []
        for s in stats:
            if w == "kept":
                counts.append(s.kept)
            elif w == "ok":
                counts.append(s.outcomes.get("ok", 0) - s.kept)
            else:
                counts.append(s.outcomes.get(w, 0))
        if any(counts):
            ax1.barh(names, counts, left=left, color=_color(w), label=w if w != "ok" else "ok, not kept",
                     edgecolor="white", linewidth=0.5)
            left = [a + b for a, b in zip(left, counts, strict=True)]
    ax1.invert_yaxis()
    ax1.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax1.set_xlabel("trials")
    ax1.set_title("Outcome mix per specialist")
    rates = [100 * s.keep_rate for s in stats]
    ax2.barh(names, rates, color="#1a7f37")
    for i, s in enumerate(stats):
        ax2.text(rates[i] + 1, i, f"{s.kept}/{s.total}", va="center", fontsize=8)
    ax2.set_xlim(0, max(100, max(rates) + 15))
    ax2.invert_yaxis()
    ax2.set_xlabel("keep rate (%)")
    ax2.set_title("Keep rate")
    ax2.set_yticks(range(len(names)), [""] * len(names))
    fig.tight_layout()
    handles, labels = ax1.get_legend_handles_labels()  # only the outcomes some specialist had
    fig.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.0, 0.95), fontsize=8, frameon=False,
               title="outcome", title_fontsize=8)
    return fig


def cost(facts: Facts, path: Path) -> Path:
    """Compute seconds and LLM dollars per kept improvement, and their running totals."""
    return _save(cost_figure(facts), path)


def cost_figure(facts: Facts):
    """The cost plot.  Seconds are labelled for what the trials ran on (``GPU``/``CPU``-seconds, by the
    evaluator's device tag); the dollars axes exist only when some trial recorded LLM spend."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.4))
    unit = facts.device_seconds
    spent = facts.total_dollars > 0
    imps = facts.improvements
    if imps:
        labels = [i.trial.short for i in imps]
        xs_imp = list(range(len(imps)))  # positions, not the labels: "t0001" would parse as a date
        secs = [i.gpu_seconds for i in imps]
        ax1.bar(xs_imp, secs, color="#4c72b0", label=unit)
        ax1.set_xticks(xs_imp, labels)
        ax1.set_ylim(0, max(secs + [1e-9]) * 1.25)
        ax1.set_ylabel(f"{unit} since the previous improvement", color="#4c72b0")
        if spent:
            usd = [i.dollars for i in imps]
            ax4 = ax1.twinx()
            ax4.plot(xs_imp, usd, "o", color="#c44e52", label="LLM dollars")
            ax4.set_ylim(0, max(usd) * 1.25 if max(usd) > 0 else 1)
            ax4.set_ylabel("LLM dollars since the previous improvement", color="#c44e52")
        if len(imps) <= 12:
            for k, i in enumerate(imps):
                ax1.text(k, secs[k], f"{i.trials_spent} trial" + ("" if i.trials_spent == 1 else "s"),
                         ha="center", va="bottom", fontsize=7)
        ax1.set_title("What each kept improvement cost")
        if len(labels) > 12:
            ax1.tick_params(axis="x", labelrotation=90, labelsize=7)
    else:
        _empty(ax1, "no kept improvement yet")
        ax1.set_title("Cost of each kept improvement")
    xs, sec_cum, usd_cum = [], [], []
    g = u = 0.0
    for t in facts.trials:
        g += gpu_seconds(t)
        u += dollars(t)
        xs.append(t.number)
        sec_cum.append(g)
        usd_cum.append(u)
    lines = []
    if xs:
        lines += ax2.plot(xs, sec_cum, color="#4c72b0", lw=2, label=f"{unit} (train_seconds × seeds)")
        ax2.set_ylabel(f"{unit}, cumulative", color="#4c72b0")
        if spent:
            ax3 = ax2.twinx()
            lines += ax3.plot(xs, usd_cum, color="#c44e52", lw=2, ls="--", label="LLM dollars")
            ax3.set_ylabel("LLM dollars, cumulative", color="#c44e52")
        for i in imps:
            ax2.axvline(i.trial.number, color="#1a7f37", lw=0.8, ls=":")
        ax2.set_xlabel("trial number (dotted: kept improvements)")
        ax2.set_title("Spend so far" + ("" if spent else " (no LLM dollars recorded: offline agent)"))
        ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        _empty(ax2, "no trials yet")
    fig.tight_layout()
    if len(lines) > 1:  # one line needs no legend: its axis label names it
        fig.legend(lines, [ln.get_label() for ln in lines], loc="upper center", bbox_to_anchor=(0.75, 0.0),
                   ncol=len(lines), fontsize=8, frameon=False)
    return fig


FIGURES = {
    "best_by_trial": best_by_trial_figure,
    "best_by_time": best_by_time_figure,
    "tree": tree_figure,
    "specialists": specialists_figure,
    "cost": cost_figure,
}
PLOTS = {
    "best_by_trial": best_by_trial,
    "best_by_time": best_by_time,
    "tree": tree,
    "specialists": specialists,
    "cost": cost,
}
