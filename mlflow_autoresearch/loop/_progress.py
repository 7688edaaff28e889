"""What ``autoresearch run`` shows while it runs: one line per finished trial and a status line.

:class:`Progress` tracks the numbers (thread-safe): trials finished against the budget, the best
so far, slots busy, elapsed time and an estimate of the time left.  The best is merged from every
lineage the loop loads and every kept trial it reports, so a snapshot loaded before a keep never
hides that keep.  A display shows the lines: :class:`PlainDisplay` writes plain text lines
(a log file, a pipe, a test); :class:`LiveDisplay` keeps the status line at the bottom of a
terminal (tqdm) and refreshes it every second.  Every line fits ``width`` columns (80).
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TextIO

from mlflow_autoresearch.lineage import Lineage, TrialRecord
from mlflow_autoresearch.outcome import Direction, Outcome
from mlflow_autoresearch.research import DUPLICATE_OF

WIDTH = 80
Echo = Callable[[str], None]


def fmt_score(x: float | None) -> str:
    """A score with 6 significant digits: 164.97 stays 164.97, 0.123456789 is 0.123457."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{x:.6g}"


def fmt_duration(seconds: float | None) -> str:
    """12s, 4m05s, 2h03m; '?' when unknown."""
    if seconds is None or math.isnan(seconds) or seconds < 0:
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def fit(text: str, width: int = WIDTH) -> str:
    """``text`` cut to ``width`` columns, with an ellipsis when cut."""
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


@dataclass(frozen=True)
class Status:
    """One moment of the loop, as the status line shows it."""

    finished: int
    total: int
    best: TrialRecord | None
    elapsed: float
    eta: float | None  # seconds left at the current rate; None before the first trial of this run
    busy: int
    slots: int
    dollars: float

    def line(self, width: int = WIDTH) -> str:
        """``3/20 trials | best 164.97 (t0007) | 1m12s, ETA 6m02s | slots 1/1 busy | $0.00``, in ``width``."""
        best = fmt_score(self.best.score) if self.best is not None else "—"
        eta = "ETA —" if self.eta is None else ("ETA 0s" if self.finished >= self.total else
                                                 f"ETA {fmt_duration(self.eta)}")
        # From the fullest to the most compact: the first that fits is shown.
        variants = [
            [f"{self.finished}/{self.total} trials", f"best {best}" + (f" ({self.best.short})" if self.best else ""),
             f"{fmt_duration(self.elapsed)}, {eta}", f"slots {self.busy}/{self.slots} busy", f"${self.dollars:.2f}"],
            [f"{self.finished}/{self.total} trials", f"best {best}", f"{fmt_duration(self.elapsed)}, {eta}",
             f"slots {self.busy}/{self.slots}", f"${self.dollars:.2f}"],
            [f"{self.finished}/{self.total}", f"best {best}", f"{fmt_duration(self.elapsed)} {eta}",
             f"{self.busy}/{self.slots} busy", f"${self.dollars:.2f}"],
        ]
        for parts in variants:
            text = " | ".join(parts)
            if len(text) <= width:
                return text
        return fit(" ".join(variants[-1]), width)


def trial_line(t: TrialRecord, *, new_best: bool = False, counted: bool = True, width: int = WIDTH) -> str:
    """One finished trial in ``width`` columns, what was tried or, for a failure, what went wrong:

    ``t0007 keep ok 164.97 (new best) · optimization: shorter warmup``,
    ``t0008 discard crashed · data: crashed: training (seed 0) failed with RuntimeError``,
    ``t0009 refused duplicate (not counted) · systems: the same exact code was already evaluated as t0004``.
    """
    outcome = t.outcome.value if t.outcome else t.status.lower()
    if DUPLICATE_OF in t.tags:
        head = f"{t.short} refused duplicate"
        detail = t.reason.removeprefix("duplicate: ")
    else:
        head = f"{t.short} {t.decision or outcome}"
        if outcome != (t.decision or ""):
            head += f" {outcome}"
        if t.score is not None:
            head += f" {fmt_score(t.score)}"
        failed = t.outcome is not None and t.outcome not in (Outcome.OK, Outcome.GATE_FAILED)
        detail = t.reason if failed and t.reason else t.hypothesis
    if new_best:
        head += " (new best)"
    if not counted and t.specialist != "baseline":
        head += " (not counted)"
    what = t.specialist if t.specialist == "baseline" else f"{t.specialist}: {detail}"
    return fit(f"{head} · {' '.join(what.split())}", width)


class Progress:
    """The loop's numbers for the status line; every method is thread-safe.

    ``counts(t)`` says whether a trial counts against the budget (the loop's rule).  The finished
    count and the best are merged from the last lineage :meth:`observe` saw and the trials
    :meth:`finished` was told about since, so an older snapshot never undoes a newer report.
    """

    def __init__(self, *, total: int, slots: int, direction: Direction, counts: Callable[[TrialRecord], bool],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.slots, self.direction, self._counts = total, slots, direction, counts
        self._clock = clock
        self.start = clock()
        self._lock = threading.Lock()
        self._seen_finished = 0  # counted trials finished in the last observed lineage
        self._reported: dict[str, TrialRecord] = {}  # finished since, not yet in an observed lineage
        self._lineage_best: TrialRecord | None = None
        self._at_start: int | None = None  # finished when this run began (for the rate)
        self._busy = 0
        self.dollars = 0.0

    def observe(self, lineage: Lineage) -> None:
        """Take the counts and the best of a freshly loaded lineage."""
        by_id = {t.run_id: t for t in lineage.trials}
        with self._lock:
            self._seen_finished = sum(1 for t in lineage.trials if t.finished and self._counts(t))
            self._lineage_best = lineage.best
            for run_id in [r for r, t in by_id.items() if t.finished and r in self._reported]:
                del self._reported[run_id]  # the lineage now knows it (and whether it was demoted since)
            if self._at_start is None:
                self._at_start = self._finished()

    def finished(self, t: TrialRecord) -> bool:
        """Report a finished trial; True when it is the new best."""
        with self._lock:
            before = self._best()
            self._reported[t.run_id] = t
            return t.kept and (before is None or self.direction.better(t.score, before.score))

    def busy(self, delta: int) -> None:
        with self._lock:
            self._busy += delta

    def _finished(self) -> int:
        return self._seen_finished + sum(1 for t in self._reported.values() if self._counts(t))

    def _best(self) -> TrialRecord | None:
        best = self._lineage_best
        for t in self._reported.values():
            if t.kept and (best is None or self.direction.better(t.score, best.score)):
                best = t
        return best

    @property
    def best(self) -> TrialRecord | None:
        with self._lock:
            return self._best()

    def status(self, wall_budget: float | None = None) -> Status:
        with self._lock:
            done, best, busy = self._finished(), self._best(), self._busy
            at_start = self._at_start or 0
        elapsed = self._clock() - self.start
        this_run = done - at_start
        eta = None
        if done >= self.total:
            eta = 0.0
        elif this_run > 0:
            eta = elapsed / this_run * (self.total - done)
        if wall_budget:
            left = max(wall_budget - elapsed, 0.0)
            eta = left if eta is None else min(eta, left)
        return Status(finished=done, total=self.total, best=best, elapsed=elapsed, eta=eta, busy=busy,
                      slots=self.slots, dollars=self.dollars)


class Display(Protocol):
    """Where the loop's lines go."""

    width: int

    def message(self, text: str) -> None: ...

    def trial(self, line: str, status: Callable[[], str]) -> None: ...

    def start(self, status: Callable[[], str]) -> None: ...

    def close(self) -> None: ...


class PlainDisplay:
    """Plain lines, no control codes: each finished trial, then the status line indented below it."""

    def __init__(self, echo: Echo, width: int = WIDTH) -> None:
        self.echo, self.width = echo, width

    def message(self, text: str) -> None:
        self.echo(text)

    def trial(self, line: str, status: Callable[[], str]) -> None:
        self.echo(line)
        self.echo("  " + status())

    def start(self, status: Callable[[], str]) -> None:
        pass

    def close(self) -> None:
        pass


class LiveDisplay:
    """A tqdm status line at the bottom of a terminal, refreshed every second; other lines above it."""

    def __init__(self, stream: TextIO, width: int | None = None) -> None:
        self.stream = stream
        self.width = width or max(min(shutil.get_terminal_size((WIDTH, 24)).columns - 1, WIDTH), 20)
        self._bar = None
        self._status: Callable[[], str] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._redirect = None

    def _write(self, text: str) -> None:
        from tqdm import tqdm

        with self._lock:
            tqdm.write(text, file=self.stream)

    def message(self, text: str) -> None:
        # Wrapped at words on a terminal (a pipe or a log file gets each message on one line).
        self._write("\n".join(textwrap.fill(ln, self.width, subsequent_indent="    ", break_long_words=False,
                                             break_on_hyphens=False) or ln for ln in text.splitlines() or [""]))

    def trial(self, line: str, status: Callable[[], str]) -> None:
        self._write(line)
        self._status = status
        self._refresh()

    def start(self, status: Callable[[], str]) -> None:
        from tqdm import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        self._status = status
        # nrows given: a terminal that reports 0 rows (some ptys) would make tqdm hide the line.
        self._bar = tqdm(total=0, file=self.stream, bar_format="{desc}", ncols=self.width, leave=True,
                         dynamic_ncols=False, nrows=max(shutil.get_terminal_size((WIDTH, 24)).lines, 2))
        self._redirect = logging_redirect_tqdm()  # log records print above the status line, not through it
        self._redirect.__enter__()
        self._refresh()
        self._thread = threading.Thread(target=self._run, name="autoresearch-progress", daemon=True)
        self._thread.start()

    def _refresh(self) -> None:
        if self._bar is None or self._status is None:
            return
        try:
            text = self._status()
        except Exception:  # a status that cannot be read this second is shown the next
            return
        with self._lock:
            self._bar.set_description_str(fit(text, self.width), refresh=True)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self._refresh()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        self._refresh()
        if self._redirect is not None:
            self._redirect.__exit__(None, None, None)
            self._redirect = None
        if self._bar is not None:
            with self._lock:
                self._bar.close()
            self._bar = None


def is_terminal(stream: TextIO) -> bool:
    """A terminal that takes control codes (not a pipe, a file, or TERM=dumb)."""
    try:
        return stream.isatty() and os.environ.get("TERM", "") != "dumb"
    except (AttributeError, ValueError):
        return False


def make_display(echo: Echo, stream: TextIO | None = None) -> Display:
    """A live status line when ``stream`` (default stderr) is a terminal, else plain lines through ``echo``."""
    stream = stream or sys.stderr
    return LiveDisplay(stream) if is_terminal(stream) else PlainDisplay(echo)
