"""Metric parsing from what a training script prints or writes.

Three forms, all optional: lines ``name: value`` (or ``name=value``) alone on
a line of stdout; a JSON object in the file named by ``AUTORESEARCH_RESULT``;
and the recipe's own regular expressions (one capture group), for scripts
that print their own format.  The last value seen for a name wins; earlier
values are kept as the metric's history (used for pruning sweeps).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?inf|nan"
_LINE = re.compile(rf"^\s*([A-Za-z_][\w./-]{{0,99}})\s*[:=]\s*({_NUMBER})\s*$", re.MULTILINE)


def _num(text: str) -> float | None:
    try:
        v = float(text)
    except ValueError:
        return None
    return v


def parse_text(text: str, regexes: dict[str, str] | None = None) -> dict[str, list[float]]:
    """Every metric value in ``text``, in order of appearance, by name."""
    found: dict[str, list[float]] = {}
    for m in _LINE.finditer(text):
        v = _num(m.group(2))
        if v is not None:
            found.setdefault(m.group(1), []).append(v)
    for name, pattern in (regexes or {}).items():
        values = [v for v in (_num(g) for g in re.findall(pattern, text, re.MULTILINE)) if v is not None]
        if values:
            found[name] = values
    return found


def parse_json_file(path: Path) -> dict[str, list[float]]:
    """Metrics from a JSON object ``{name: number}``; anything else is ignored."""
    from mlflow_autoresearch.evaluator._sandbox import read_trial_file

    raw = read_trial_file(path, 1_000_000)  # never a link (to a root-only file), a FIFO or /dev/zero
    if raw is None:
        return {}
    try:
        data = json.loads(raw.decode(errors="replace"))
    except (ValueError, RecursionError):
        return {}
    if not isinstance(data, dict):
        return {}
    out = {}
    for k, v in data.items():
        if isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) and len(k) <= 100:
            out[k] = [float(v)]
    return out


def last_values(history: dict[str, list[float]]) -> dict[str, float]:
    return {k: v[-1] for k, v in history.items() if v}


def mean_std(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var)


_EXC = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit|Warning|Fault))(?::\s*(.*))?$")


def error_summary(stderr: str, max_lines: int = 25) -> tuple[str | None, str]:
    """The exception type (if a Python traceback ended the output) and the last lines."""
    from mlflow_autoresearch._untrusted import clean

    lines = [ln for ln in clean(stderr).rstrip().splitlines() if ln.strip()]
    exc_type = None
    for ln in reversed(lines[-50:]):
        m = _EXC.match(ln.strip())
        if m:
            exc_type = m.group(1)
            break
    return exc_type, "\n".join(lines[-max_lines:])
