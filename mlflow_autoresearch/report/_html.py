"""The report's one self-contained HTML page: PNGs inlined as base64, no external assets."""

from __future__ import annotations

import base64
import html
import string
from collections.abc import Mapping
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

from mlflow_autoresearch.lineage import TrialRecord
from mlflow_autoresearch.report._facts import Facts, dollars, gpu_seconds, outcome_word

LEADERBOARD_ROWS = 25
REPAIRS_SHOWN = 30
DIFF_LINES = 40


class Links:
    """Where a trial's run can be opened: an MLflow UI address, or only its run id."""

    def __init__(self, ui_url: str | None, experiment_id: str | None) -> None:
        self.base = ui_url.rstrip("/") if ui_url else None
        self.experiment_id = experiment_id

    @classmethod
    def for_tracking_uri(cls, tracking_uri: str | None, experiment_id: str | None,
                         ui_url: str | None = None) -> Links:
        """Links into the UI of an ``http(s)`` tracking server; run ids for a local store unless ``ui_url``."""
        if ui_url is None and tracking_uri and tracking_uri.startswith(("http://", "https://")):
            ui_url = tracking_uri
        return cls(ui_url, experiment_id)

    def url(self, run_id: str) -> str | None:
        if self.base is None or self.experiment_id is None:
            return None
        return f"{self.base}/#/experiments/{self.experiment_id}/runs/{run_id}"

    def trial(self, t: TrialRecord) -> str:
        url = self.url(t.run_id)
        label = html.escape(t.short)
        if url:
            return f'<a href="{html.escape(url)}" title="{html.escape(t.name)}">{label}</a>'
        return f'{label} <code title="run id">{html.escape(t.run_id)}</code>'


def _e(text: object) -> str:
    return html.escape(str(text))


def _num(v: float | None, fmt: str = ".5g") -> str:
    return "—" if v is None else format(v, fmt)


def _pill(t: TrialRecord) -> str:
    w = outcome_word(t)
    return f'<span class="pill o-{_e(w)}">{_e(w)}</span>'


def _img(png: Path, alt: str, ident: str, *, wide: bool = False) -> str:
    """An inlined PNG; ``wide`` ones keep their size and scroll instead of shrinking (the tree's labels)."""
    data = base64.b64encode(png.read_bytes()).decode("ascii")
    cls = "plot wide" if wide else "plot"
    return f'<img class="{cls}" id="{ident}-img" alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _diff(text: str) -> str:
    lines = text.splitlines()
    shown = lines[:DIFF_LINES]
    out = []
    for ln in shown:
        cls = "diff-add" if ln.startswith("+") and not ln.startswith("+++") else (
            "diff-del" if ln.startswith("-") and not ln.startswith("---") else "")
        out.append(f'<span class="{cls}">{_e(ln)}</span>' if cls else _e(ln))
    if len(lines) > DIFF_LINES:
        out.append(f"… {len(lines) - DIFF_LINES} more lines in the run's patch.diff")
    return "<pre>" + "\n".join(out) + "</pre>"


def _cards(f: Facts) -> str:
    rel = f.relative_gain
    items = [
        ("trials", str(len(f.trials))),
        ("kept improvements", str(len(f.improvements))),
        (f"best {f.metric}", _num(f.best.score if f.best else None) + (f" ({f.best.short})" if f.best else "")),
        ("baseline", _num(f.baseline.score if f.baseline else None)),
        ("gain over baseline", "—" if rel is None else f"{100 * rel:+.1f}%"),
        ("LLM dollars", f"${f.total_dollars:.2f}"),
        (f.device_seconds, f"{f.total_gpu_seconds:,.1f}"),
        ("$ per kept improvement", "—" if f.dollars_per_improvement is None else f"${f.dollars_per_improvement:.2f}"),
        (f"{f.device}-s per kept improvement",
         "—" if f.gpu_seconds_per_improvement is None else f"{f.gpu_seconds_per_improvement:,.1f}"),
    ]
    cards = "".join(f'<div class="card"><div class="v">{_e(v)}</div><div class="k">{_e(k)}</div></div>'
                    for k, v in items)
    mix = ", ".join(f"{n} {w}" for w, n in sorted(f.outcome_totals.items(), key=lambda kv: -kv[1]))
    return f'<section id="summary"><div class="cards">{cards}</div><p class="help">Outcomes: {_e(mix or "none")}. ' \
           f'Tokens: {f.total_tokens[0]:,} in, {f.total_tokens[1]:,} out. ' \
           f'Keep rule: paired confirmation; {_e(f.lineage.noise_model.describe())}.</p></section>'


def _leaderboard(f: Facts, links: Links) -> str:
    rows = []
    for i, t in enumerate(f.lineage.kept[:LEADERBOARD_ROWS], 1):
        parent = f.lineage.by_id.get(t.parent_id) if t.parent_id else None
        gain = f.lineage.direction.gain(t.score, parent.score if parent else None)
        gain_cell = _num(gain, "+.4g") if gain is not None or parent is None else f"— (parent {_e(outcome_word(parent))})"
        rows.append(
            f"<tr><td class=num>{i}</td><td>{links.trial(t)}</td><td class=num>{_num(t.score)}</td>"
            f"<td class=num>{gain_cell}</td><td>{_e(t.specialist)}</td><td>{_e(t.hypothesis)}</td>"
            f"<td>{links.trial(parent) if parent else '—'}</td><td class=num>{gpu_seconds(t):.1f}</td>"
            f"<td class=num>${dollars(t):.3f}</td></tr>")
    if not rows:
        rows.append('<tr><td colspan="9">no kept trials yet</td></tr>')
    more = len(f.lineage.kept) - LEADERBOARD_ROWS
    tail = f'<p class="help">… and {more} more kept trials.</p>' if more > 0 else ""
    return (
        '<section id="leaderboard"><h2>Leaderboard</h2>'
        f'<p class="help">Kept trials (and the baseline), best {f.metric} first ({f.goal}). '
        'Gain is against the trial\'s parent; positive is better.</p>'
        '<div class="scroll"><table><thead><tr><th>rank</th><th>trial</th><th>score</th><th>gain vs parent</th>'
        f'<th>specialist</th><th>hypothesis</th><th>parent</th><th>{f.device}-s</th><th>LLM $</th></tr></thead><tbody>'
        + "".join(rows) + "</tbody></table></div>" + tail + "</section>")


def _best_path(f: Facts, links: Links) -> str:
    if not f.best_path:
        return ""
    items = []
    for t in f.best_path:
        items.append(f"<li>{links.trial(t)} [{_e(t.specialist)}] {_num(t.score)}: {_e(t.hypothesis)}</li>")
    return f"<h3>Path from the baseline to the best</h3><ol>{''.join(items)}</ol>"


def _specialist_table(f: Facts) -> str:
    words = sorted({w for s in f.specialists for w in s.outcomes})
    head = "".join(f"<th>{_e(w)}</th>" for w in words)
    rows = "".join(
        f"<tr><td>{_e(s.name)}</td><td class=num>{s.total}</td><td class=num>{s.kept}</td>"
        f"<td class=num>{100 * s.keep_rate:.0f}%</td>" + "".join(f"<td class=num>{s.outcomes.get(w, 0)}</td>"
                                                                 for w in words) + "</tr>"
        for s in f.specialists)
    return (f"<table><thead><tr><th>specialist</th><th>trials</th><th>kept</th><th>keep rate</th>{head}</tr></thead>"
            f"<tbody>{rows}</tbody></table>")


def _cost_table(f: Facts, links: Links) -> str:
    rows = "".join(
        f"<tr><td>{links.trial(i.trial)}</td><td class=num>{_num(i.trial.score)}</td>"
        f"<td class=num>{_num(i.gain, '+.4g')}</td><td class=num>{i.trials_spent}</td>"
        f"<td class=num>{i.gpu_seconds:,.1f}</td><td class=num>${i.dollars:.3f}</td>"
        f"<td class=num>{i.tokens_in:,} / {i.tokens_out:,}</td></tr>" for i in f.improvements)
    if not rows:
        rows = '<tr><td colspan="7">no kept improvement yet</td></tr>'
    return ('<table><thead><tr><th>improvement</th><th>score</th><th>gain vs previous best</th><th>trials spent</th>'
            f'<th>{f.device_seconds}</th><th>LLM $</th><th>tokens in / out</th></tr></thead><tbody>' + rows + "</tbody></table>")


def _repairs(f: Facts, links: Links, diffs: Mapping[str, str]) -> str:
    rows = []
    for r in f.repairs[-REPAIRS_SHOWN:]:
        fail, fix = r.failure, r.repair
        diff = diffs.get(fix.run_id)
        rows.append(
            "<tr><td>" + f"{links.trial(fail)} {_pill(fail)} [{_e(fail.specialist)}]<br>{_e(fail.hypothesis)}"
            + f"<pre>{_e(fail.feedback or fail.reason)}</pre></td><td class=arrow>&rarr;</td><td>"
            + f"{links.trial(fix)} {_pill(fix)} [{_e(fix.specialist)}] score {_num(fix.score)}<br>{_e(fix.hypothesis)}"
            + (_diff(diff) if diff else "") + "</td></tr>")
    if not rows:
        rows.append('<tr><td colspan="3">no failure has been repaired by a kept child yet</td></tr>')
    return ('<section id="repairs"><h2>Failures that were later repaired</h2>'
            '<p class="help">A trial that failed (crash, gate, limit…), next to its child that was kept: '
            'the evaluator\'s feedback on the left, the repair\'s change on the right.</p>'
            '<table><thead><tr><th>failure</th><th></th><th>repair</th></tr></thead><tbody>'
            + "".join(rows) + "</tbody></table></section>")


def render(f: Facts, images: Mapping[str, Path], links: Links, *, title: str, tracking_uri: str | None,
           diffs: Mapping[str, str] | None = None) -> str:
    """The whole page as a string."""
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    where = f" · tracking store {_e(tracking_uri)}" if tracking_uri else ""
    body = [
        f'<header><h1>{_e(title)}</h1><div class="sub">experiment {_e(f.experiment or "—")} · score '
        f'{_e(f.metric)} ({_e(f.goal)}) · generated {now}{where}</div></header><main>',
        _cards(f),
        '<section id="progress"><h2>Best score over time</h2><p class="help">The green step line is the best kept '
        'score; dots are other scored trials; ticks along the bottom are trials that failed without a score.</p>'
        + '<div class="pair">' + _img(images["best_by_trial"], "best score against trial number", "best-by-trial")
        + _img(images["best_by_time"], "best score against wall clock", "best-by-time") + "</div></section>",
        '<section id="tree"><h2>Lineage tree</h2><p class="help">Each node is a trial, placed by generation; '
        'colour is the outcome (dark green: kept), the marker is the specialist, the gold line is the path from the '
        'baseline to the best.</p><div class="scroll">'
        + _img(images["tree"], "lineage tree", "tree", wide=True) + "</div>" + _best_path(f, links) + "</section>",
        _leaderboard(f, links),
        '<section id="specialists"><h2>Specialists</h2>' + _img(images["specialists"], "outcome mix per specialist",
                                                                   "specialists")
        + _specialist_table(f) + "</section>",
        f'<section id="cost"><h2>Cost per kept improvement</h2><p class="help">{f.device_seconds} are the evaluator\'s '
        'train_seconds times seeds; dollars are the LLM spend recorded on each trial (0 for the offline agent). '
        'Each improvement is charged every trial since the previous one.</p>'
        + _img(images["cost"], "cost per kept improvement", "cost") + _cost_table(f, links) + "</section>",
        _repairs(f, links, diffs or {}),
        f"<footer>{len(f.trials)} trials · mlflow-autoresearch report</footer></main>",
    ]
    template = string.Template(resources.files("mlflow_autoresearch.report").joinpath("page.html").read_text("utf-8"))
    return template.substitute(title=_e(title), body="\n".join(body))
