"""The comparison's PNG plots (matplotlib, Agg): best so far by trials and by compute, the failure mix."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from mlflow_autoresearch.report._plots import OUTCOME_COLORS  # noqa: E402

DPI = 110
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#7f7f7f"]


def _save(fig, path: Path) -> None:
    fig.savefig(path, dpi=DPI, bbox_inches="tight", facecolor="white")
    plt.close(fig)


def _by_trials(cmp, out: Path, relative: bool = False) -> None:
    fig, ax = plt.subplots(figsize=(8, 4.5))

    def value(r, x):
        v = r.best_at(x)
        return None if v is None or (relative and not r.baseline) else (v / r.baseline if relative else v)

    for i, arm in enumerate(cmp.arms):
        color = COLORS[i % len(COLORS)]
        runs = [r for r in cmp.runs if r.arm == arm]
        xs = list(range(cmp.budget + 1))
        cols = [[value(r, x) for r in runs if value(r, x) is not None] for x in xs]
        mean = [sum(c) / len(c) if c else float("nan") for c in cols]
        ax.fill_between(xs, [min(c) if c else float("nan") for c in cols],
                        [max(c) if c else float("nan") for c in cols], color=color, alpha=0.15, step="post")
        for r in runs:
            ax.step(xs, [value(r, x) for x in xs], where="post", color=color, alpha=0.35, lw=0.8)
        ax.step(xs, mean, where="post", color=color, lw=2.2, label=f"{arm} (mean of {len(runs)})")
    ax.set_xlabel("budget trials")
    if relative:
        ax.set_ylabel("best so far / the run's own baseline")
        ax.set_title("Best so far over each run's baseline (band: min-max over loop seeds)")
    else:
        ax.set_ylabel(f"best so far ({cmp.goal})")
        ax.set_title("Best so far by trial budget (band: min-max over loop seeds)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    _save(fig, out / ("best_over_baseline.png" if relative else "best_by_trials.png"))


def _by_seconds(cmp, out: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for i, arm in enumerate(cmp.arms):
        color = COLORS[i % len(COLORS)]
        for j, r in enumerate(r for r in cmp.runs if r.arm == arm):
            ax.step(r.seconds, r.scores, where="post", color=color, alpha=0.8, lw=1.2,
                    label=arm if j == 0 else None)
    ax.axvline(cmp.seconds, color="#555", ls="--", lw=1)
    ax.text(cmp.seconds, ax.get_ylim()[1], " equal compute", va="top", fontsize=8, color="#555")
    ax.set_xlabel("evaluator-seconds spent (cumulative, baseline included)")
    ax.set_ylabel(f"best so far ({cmp.goal})")
    ax.set_title("Best so far by compute (one line per loop seed)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    _save(fig, out / "best_by_seconds.png")


def _failure_mix(cmp, out: Path) -> None:
    words = sorted({k for a in cmp.arms.values() for k in a["outcomes"]}, key=lambda w: (w != "ok", w))
    fig, ax = plt.subplots(figsize=(8, 0.6 * len(cmp.arms) + 1.8))
    arms = list(cmp.arms)
    left = [0.0] * len(arms)
    for w in words:
        vals = []
        for a in arms:
            total = sum(cmp.arms[a]["outcomes"].values()) or 1
            vals.append(cmp.arms[a]["outcomes"].get(w, 0) / total)
        ax.barh(arms, vals, left=left, color=OUTCOME_COLORS.get(w, "#d9d9d9"), label=w)
        left = [a + b for a, b in zip(left, vals, strict=True)]
    for k, a in enumerate(arms):
        info = cmp.arms[a]
        ax.text(1.01, k, f"kept {info['kept']}/{info['trials']}, dup {info['duplicates_refused']}", va="center",
                fontsize=8)
    ax.set_xlim(0, 1.3)
    ax.set_xlabel("share of budget trials")
    ax.set_title("Failure mix per arm (all seeds)")
    ax.legend(fontsize=7, ncol=5, loc="upper center", bbox_to_anchor=(0.5, -0.18))
    _save(fig, out / "failure_mix.png")


def plot_all(cmp, out: Path) -> None:
    _by_trials(cmp, out)
    _by_trials(cmp, out, relative=True)
    _by_seconds(cmp, out)
    _failure_mix(cmp, out)
