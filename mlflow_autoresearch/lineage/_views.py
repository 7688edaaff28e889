"""Views of the lineage an agent reads: bounded markdown, however long the lineage.

:class:`Lineage` is a read-only snapshot of a store's trials at one moment,
with the score direction of the recipe; rendering works in memory on it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from functools import cached_property

from mlflow_autoresearch import schema as S
from mlflow_autoresearch._errors import UsageError
from mlflow_autoresearch._untrusted import defence, quote
from mlflow_autoresearch.lineage._record import TrialRecord
from mlflow_autoresearch.lineage._resolve import SHORT_ID, match_trial
from mlflow_autoresearch.lineage._store import LineageStore
from mlflow_autoresearch.outcome import Direction, Outcome

ROW_CHARS = 160
VIEW_CHARS = 6000


def _cell(text: str, limit: int = 90) -> str:
    text = " ".join(defence(str(text)).split()).replace("|", "/")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.5g}"


def ident(t: TrialRecord) -> str:
    """``t0007 1a2b3c4d``: the trial number and the start of its run id, each accepted by ``--trial``."""
    return f"{t.short} {t.run_id[:SHORT_ID]}"


def _bound(text: str, limit: int = VIEW_CHARS) -> str:
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit("\n", 1)[0]
    return cut + "\n… (view truncated)"


class Lineage:
    """An immutable snapshot of the trials of one experiment.

    ``scale`` is the scale the score's noise is additive on (``relative`` for
    timings, ``absolute`` otherwise; ``auto`` detects it from the score's
    name).  Kept trials are ranked by their *estimate*: the mean, on that
    scale, of every measurement of their code (their own seeds and every
    confirmation seed since), so a lucky first draw loses its place as soon
    as re-measurement shows it.
    """

    def __init__(self, trials: Sequence[TrialRecord], goal: str = "minimize", scale: str = "auto") -> None:
        self.trials = tuple(trials)
        self.direction = Direction(goal)
        self._scale_kind = scale
        self.by_id = {t.run_id: t for t in self.trials}
        self._children: dict[str | None, list[TrialRecord]] = {}
        for t in self.trials:
            self._children.setdefault(t.parent_id, []).append(t)

    @classmethod
    def load(cls, store: LineageStore, goal: str = "minimize") -> Lineage:
        return cls(store.trials(), goal)

    # ----- facts (computed once: the snapshot never changes) ----------------
    @cached_property
    def _finished(self) -> tuple[TrialRecord, ...]:
        return tuple(t for t in self.trials if t.finished)

    @cached_property
    def _kept(self) -> tuple[TrialRecord, ...]:
        return tuple(sorted((t for t in self.trials if t.kept), key=lambda t: -self.direction.key(self.estimate(t))))

    # ----- measurements and noise --------------------------------------------
    @cached_property
    def scale(self):
        from mlflow_autoresearch.acceptance import Scale, detect_scale

        if self._scale_kind != "auto":
            return Scale(self._scale_kind)
        name = next((t.tags.get(S.SCORE_NAME, "") for t in self.trials if t.tags.get(S.SCORE_NAME)), "")
        return Scale(detect_scale(name, [t.score for t in self.trials if t.score is not None]))

    @cached_property
    def measurements(self) -> dict[str, dict[str, list[float]]]:
        """code sha256 -> window -> score values: each evaluation's seeds, and each confirmation pair's."""
        codes: dict[str, dict[str, list[float]]] = {}
        for t in self.trials:
            if t.code_sha256 and t.outcome is not None and t.outcome.scored:
                values = t.seed_values()
                if values:
                    codes.setdefault(t.code_sha256, {})[t.run_id] = values
        for t in self.trials:
            ev = t.evidence
            pairs = ev.get("pairs") or []
            inc = self.by_id.get(ev.get("incumbent_run", ""))
            for k, pair in enumerate(pairs):
                window = f"{t.run_id}/pair{k}"
                if len(pair) == 2:
                    c, i = pair
                    if c is not None and t.code_sha256:
                        codes.setdefault(t.code_sha256, {}).setdefault(window, []).append(float(c))
                    if i is not None and inc is not None and inc.code_sha256:
                        codes.setdefault(inc.code_sha256, {}).setdefault(window, []).append(float(i))
        return codes

    def windows_of(self, t: TrialRecord) -> tuple[tuple[float, ...], ...]:
        """Every measurement of ``t``'s code, by window, oldest first."""
        return tuple(tuple(v) for v in self.measurements.get(t.code_sha256, {}).values())

    def values_of(self, t: TrialRecord) -> tuple[list[float], int]:
        """Every measurement of ``t``'s code, and in how many windows they were made."""
        windows = self.measurements.get(t.code_sha256, {})
        return [v for vals in windows.values() for v in vals], len(windows)

    def estimate(self, t: TrialRecord | None) -> float | None:
        """The score over every measurement of ``t``'s code (geometric mean on the relative scale)."""
        if t is None:
            return None
        values, _ = self.values_of(t)
        if not values:
            return t.score
        xs = [self.scale.to(v) for v in values]
        return self.scale.back(sum(xs) / len(xs))

    @cached_property
    def _pair_diffs(self) -> list[list[float]]:
        # Each confirmation's paired differences, over sqrt(2): spread like two seeds of one code in one window.
        sc, out = self.scale, []
        for t in self.trials:
            pairs = [p for p in t.evidence.get("pairs") or [] if len(p) == 2 and None not in p]
            if len(pairs) > 1:
                out.append([(sc.to(c) - sc.to(i)) / 2**0.5 for c, i in pairs])
        return out

    @cached_property
    def noise_model(self):
        """The experiment's noise, pooled from every measurement (see :mod:`mlflow_autoresearch.acceptance`)."""
        return self.noise_with(None)

    def noise_with(self, diffs: list[float] | None):
        """The noise model with one more confirmation's paired differences (on the scale) pooled in."""
        from mlflow_autoresearch.acceptance import NoiseModel

        extra = [[d / 2**0.5 for d in diffs]] if diffs and len(diffs) > 1 else []
        return NoiseModel.learn(self.measurements, self.scale, on_scale=self._pair_diffs + extra)

    @property
    def finished(self) -> list[TrialRecord]:
        return list(self._finished)

    @property
    def kept(self) -> list[TrialRecord]:
        """Kept trials, best first."""
        return list(self._kept)

    @property
    def baseline(self) -> TrialRecord | None:
        # A baseline measured but not yet decided (a loop stopped in between) is still the baseline.
        return next((t for t in self.trials if t.decision == "baseline"
                     or (t.decision is None and t.specialist == "baseline")), None)

    @property
    def best(self) -> TrialRecord | None:
        return self._kept[0] if self._kept else None

    def children(self, run_id: str) -> list[TrialRecord]:
        return self._children.get(run_id, [])

    def path_to(self, trial: TrialRecord | None) -> list[TrialRecord]:
        path, seen = [], set()
        while trial is not None and trial.run_id not in seen:
            path.append(trial)
            seen.add(trial.run_id)
            trial = self.by_id.get(trial.parent_id) if trial.parent_id else None
        return path[::-1]

    def noise(self) -> float:
        """The spread of one measurement, in the score's units near the best (0 when not measured yet)."""
        nm = self.noise_model
        if nm.sigma is None:
            return 0.0
        ref = self.estimate(self.best) or self.estimate(self.baseline) or 0.0
        return abs(ref) * nm.sigma if nm.scale.kind == "relative" else nm.sigma

    def has_code(self, digest: str) -> bool:
        return any(t.code_sha256 == digest for t in self.trials)

    def parent_score(self, t: TrialRecord) -> float | None:
        p = self.by_id.get(t.parent_id) if t.parent_id else None
        return p.score if p else None

    # ----- views ----------------------------------------------------------
    def leaderboard(self, k: int = 10) -> str:
        rows = ["| rank | trial (run) | estimate (n) | gain vs parent | specialist | hypothesis |", "|---|---|---|---|---|---|"]
        for i, t in enumerate(self._kept[:k], 1):
            parent = self.by_id.get(t.parent_id) if t.parent_id else None
            gain = self.direction.gain(self.estimate(t), self.estimate(parent)) if parent else None
            n = len(self.values_of(t)[0])
            rows.append(f"| {i} | {ident(t)} | {_fmt(self.estimate(t))} ({n}) | {_fmt(gain)} | {t.specialist} | "
                        f"{_cell(t.hypothesis)} |")
        if len(rows) == 2:
            rows.append("| — | no kept trials yet | | | | |")
        demoted = [t for t in self.trials if t.demoted][-3:]
        tail = "".join(f"\n- {t.short} demoted: {_cell(t.demoted, 200)}" for t in demoted)
        return _bound("### Leaderboard (kept trials, best first; estimate over every measurement)\n"
                      + "\n".join(rows) + f"\n{self.noise_model.describe()}" + tail)

    def best_path(self, k: int = 15) -> str:
        path = self.path_to(self.best)
        if not path:
            return "### Path to the best\n(no best yet)"
        lines = []
        shown = path if len(path) <= k else path[:2] + path[-(k - 2):]
        for i, t in enumerate(shown):
            if len(path) > k and i == 2:
                lines.append(f"- … {len(path) - k} steps omitted …")
            lines.append(f"- {ident(t)} [{t.specialist}] score {_fmt(t.score)}: {_cell(t.hypothesis, 120)}")
        return _bound("### Path from the baseline to the best\n" + "\n".join(lines))

    def best_children(self, k: int = 10) -> str:
        best = self.best
        if best is None:
            return "### Children of the best\n(no best yet)"
        kids = [t for t in self.children(best.run_id) if t.finished][-k:]
        lines = [self._line(t) for t in kids] or ["(none yet: every idea tried on the best is new)"]
        return _bound(f"### Children of the best ({ident(best)})\n" + "\n".join(lines))

    def recent(self, k: int = 8) -> str:
        recent = sorted(self._finished, key=lambda t: t.end_time or 0)[-k:]
        lines = [self._line(t, feedback=True) for t in recent] or ["(no finished trials yet)"]
        return _bound("### Most recent trials, with the evaluator's feedback\n" + "\n".join(lines))

    def near_misses(self, k: int = 5) -> str:
        nm = [t for t in self._finished if t.near_miss and not self._repaired(t)][-k:]
        lines = [self._line(t, feedback=True) for t in nm] or ["(none open)"]
        return _bound("### Near misses not yet repaired\n" + "\n".join(lines))

    def counts(self) -> str:
        table: dict[str, Counter] = {}
        for t in self._finished:
            c = table.get(t.specialist)
            if c is None:
                c = table[t.specialist] = Counter()
            c[t.outcome.value if t.outcome else "?"] += 1
            if t.decision == "keep":
                c["kept"] += 1
        cols = [o.value for o in Outcome if any(c[o.value] for c in table.values())]
        rows = ["| specialist | trials | kept | " + " | ".join(cols) + " |", "|---" * (len(cols) + 3) + "|"]
        for name, c in sorted(table.items()):
            total = sum(c[o] for o in cols)
            rows.append(f"| {name} | {total} | {c['kept']} | " + " | ".join(str(c[o]) for o in cols) + " |")
        return _bound("### Trials per specialist and outcome\n" + "\n".join(rows))

    def render(self, role: str | None = None) -> str:
        """Every view, for one agent prompt.  Bounded (about 30 kB)."""
        parts = [self.leaderboard(), self.best_path(), self.best_children(), self.near_misses(), self.recent(),
                 self.counts()]
        if role:
            mine = [t for t in self._finished if t.specialist == role][-6:]
            parts.append(_bound(f"### Your ({role}) last trials\n" + ("\n".join(self._line(t, True) for t in mine)
                                                                       or "(none yet)")))
        return "\n\n".join(parts)

    def _line(self, t: TrialRecord, feedback: bool = False) -> str:
        head = f"- {ident(t)} [{t.specialist}] {t.outcome.value if t.outcome else t.status}"
        head += f"/{t.decision}" if t.decision else ""
        head += f" score {_fmt(t.score)}: {_cell(t.hypothesis, 100)}"
        if t.tags.get(S.PREFIX + "transfer_verdict"):  # autoresearch confirm
            head += f" [transfer: {t.tags[S.PREFIX + 'transfer_verdict']}]"
        if feedback and t.feedback:
            head += f"\n  feedback: {_cell(t.feedback, 300)}"
        return head[: ROW_CHARS + (320 if feedback else 0)]

    def _repaired(self, t: TrialRecord) -> bool:
        return any(c.outcome is Outcome.OK for c in self.children(t.run_id))


def query_trial(store: LineageStore, lineage: Lineage, ref: str, tail_lines: int = 40) -> str:
    """One trial in full: tags, feedback, diff and the end of its logs.  Bounded."""
    try:
        t = match_trial(lineage.trials, ref, option="trial")
    except UsageError as e:
        return f"no trial {ref!r}: {str(e).split(': ', 1)[-1]}"
    parts = [f"## {t.name} ({t.run_id})", f"specialist: {t.specialist}; parent: "
             f"{lineage.by_id[t.parent_id].short if t.parent_id in lineage.by_id else '—'}",
             f"outcome: {t.outcome.value if t.outcome else t.status}; decision: {t.decision}; score: {_fmt(t.score)}",
             f"hypothesis: {t.hypothesis}", f"feedback: {defence(t.feedback)}"]
    if t.tags.get(S.PREFIX + "transfer"):  # `autoresearch confirm`: the gain re-checked at another profile
        parts.append(t.tags[S.PREFIX + "transfer"])
    diff = store.read_artifact(t.run_id, S.PATCH) or ""
    parts.append("### patch.diff\n```diff\n" + _bound(diff, 4000) + "\n```")
    for name in ("seed0.stderr.txt", "seed0.stdout.txt"):
        log = store.read_artifact(t.run_id, f"{S.LOGS_DIR}/{name}")
        if log:
            tail = "\n".join(log.splitlines()[-tail_lines:])
            parts.append(f"### {name} (last {tail_lines} lines)\n```\n"
                         f"{_bound(quote(tail, name, max_lines=tail_lines, width=200), 3000)}\n```")
    return _bound("\n".join(parts), 12000)

