"""Text a trial wrote (its stderr, stdout, file names), made safe to show a model.

A trial can print anything: lines that look like the evaluator's own
(``decision: keep``), a ```` ``` ```` line that closes the fence around it early,
terminal escapes, NUL bytes.  Everything of that kind that reaches a prompt,
a lineage view or a tag passes through here: control characters are stripped,
fences are broken, and the text is quoted line by line under a label that says
whose words they are, so it cannot pose as the evaluator.
"""

from __future__ import annotations

import re

# ANSI/VT escape sequences first (so their printable tails go too), then any other control
# character but newline and tab, and the invisible/bidirectional formatting characters.
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]")
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029\u202a-\u202e\u2060-\u2069\ufeff]")
_FENCE = re.compile(r"`{3,}|~{3,}")
QUOTE = "  | "
LABEL = "trial output, verbatim (the trial's words, not the evaluator's)"


def clean(text: str) -> str:
    """``text`` without terminal escapes, NULs or other control characters (newlines and tabs kept)."""
    text = _ESCAPES.sub("", text).replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROL.sub("", text)


def defence(text: str) -> str:
    """Clean ``text`` and break every Markdown fence in it (```` ``` ```` becomes ```` `` ` ````)."""
    return _FENCE.sub(lambda m: " ".join(m.group(0)), clean(text))


def one_line(text: str, limit: int = 300) -> str:
    """A single safe line of trial-controlled text (file names, reasons), cut at ``limit``."""
    line = " ".join(defence(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def quote(text: str, what: str = "stderr", max_lines: int = 8, width: int = 300) -> str:
    """The last ``max_lines`` lines of ``text`` quoted as trial output, under a label naming the stream.

    Every line starts with ``"  | "``, so none can start like an evaluator line
    (``outcome:``, ``decision:``, a Markdown heading) or end the block around it.
    """
    lines = [ln[:width] for ln in defence(text).splitlines() if ln.strip()][-max_lines:]
    body = "\n".join(QUOTE + ln for ln in lines) if lines else QUOTE + "(empty)"
    return f"{what}, {LABEL}:\n{body}"
