"""The tools a model-backed specialist may call, on one proposal's working copy.

:class:`ToolBox` runs one tool call and returns a :class:`ToolResult`: text
for the model and whether it is an error.  Every refusal (bad input, an edit
that does not apply, a protected file, a submit that is not ready) is an
error *result* with a reason, never an exception, so the model can correct
itself in the same session.  Not thread-safe: one per proposal.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from mlflow_autoresearch._errors import ProposalError, StoreError, UsageError
from mlflow_autoresearch.lineage import code_digest, query_trial
from mlflow_autoresearch.recipe import Knob
from mlflow_autoresearch.specialists._base import ProposalContext
from mlflow_autoresearch.specialists._edits import EditSession
from mlflow_autoresearch.specialists._prompting import message, tool_specs

READ_CHARS = 100_000
_JSON_TYPES: dict[str, tuple[type, ...]] = {"string": (str,), "number": (int, float), "integer": (int,),
                                            "boolean": (bool,), "array": (list,), "object": (dict,)}


@dataclass(frozen=True)
class ToolResult:
    text: str
    is_error: bool = False


@dataclass(frozen=True)
class Submission:
    hypothesis: str
    expected_effect: str
    knobs: tuple[Knob, ...] = ()


def input_problems(schema: Mapping[str, Any], value: Any) -> list[str]:
    """What is wrong with a tool input against the (small) JSON schema subset used in tools.yaml."""
    if not isinstance(value, dict):
        return [f"input must be a JSON object, got {type(value).__name__}"]
    problems = [f"missing field {name!r}" for name in schema.get("required", []) if name not in value]
    for name, prop in schema.get("properties", {}).items():
        if name in value:
            problems += _type_problems(name, prop, value[name])
    return problems


def _type_problems(name: str, prop: Mapping[str, Any], v: Any) -> list[str]:
    kind = prop.get("type")
    ok = _JSON_TYPES.get(kind, (object,))
    if not isinstance(v, ok) or (kind in ("number", "integer") and isinstance(v, bool)):
        return [f"field {name!r} must be {'an' if kind in ('array', 'object', 'integer') else 'a'} {kind}, "
                f"got {type(v).__name__}"]
    if "enum" in prop and v not in prop["enum"]:
        return [f"field {name!r} must be one of {', '.join(map(str, prop['enum']))}, got {v!r}"]
    if kind == "array" and "items" in prop:
        out = []
        for i, item in enumerate(v):
            item_schema = prop["items"]
            if item_schema.get("type") == "object":
                out += [f"{name}[{i}]: {p}" for p in input_problems(item_schema, item)]
            else:
                out += _type_problems(f"{name}[{i}]", item_schema, item)
        return out
    return []


class ToolBox:
    """One proposal's tools over an :class:`EditSession` of the parent's code."""

    def __init__(self, ctx: ProposalContext, session: EditSession) -> None:
        self.ctx = ctx
        self.session = session
        self.specs = {t["name"]: t for t in tool_specs()}
        self.submission: Submission | None = None
        self.last_hypothesis = ""  # from a submit that was refused, for the record
        self._handlers: dict[str, Callable[[dict[str, Any]], ToolResult]] = {
            "read_file": self._read_file, "list_files": self._list_files, "lineage_view": self._lineage_view,
            "query_trial": self._query_trial, "edit_file": self._edit_file, "check_syntax": self._check_syntax,
            "submit": self._submit,
        }

    def run(self, name: str, tool_input: Any) -> ToolResult:
        """Run one tool call.  Never raises for the model's mistakes."""
        if name not in self._handlers or name not in self.specs:
            return ToolResult(message("unknown_tool", name=name, names=", ".join(self.specs)), True)
        problems = input_problems(self.specs[name]["input_schema"], tool_input)
        if problems:
            return ToolResult(message("bad_input", tool=name, problems="; ".join(problems)), True)
        try:
            return self._handlers[name](tool_input)
        except ProposalError as e:
            return ToolResult(str(e), True)

    # ----- reading ------------------------------------------------------------
    def _read_file(self, a: dict[str, Any]) -> ToolResult:
        text = self.session.read(a["path"])
        if len(text) > READ_CHARS:
            text = text[:READ_CHARS] + message("read_truncated", limit=READ_CHARS, total=len(text))
        return ToolResult(text)

    def _list_files(self, a: dict[str, Any]) -> ToolResult:
        files = self.session.files
        lines = [message("listed_file", path=rel, size=len(data),
                         access=message("editable" if self.ctx.recipe.is_editable(rel) else "read_only"))
                 for rel, data in sorted(files.items())]
        return ToolResult("\n".join(lines))

    def _lineage_view(self, a: dict[str, Any]) -> ToolResult:
        lin = self.ctx.lineage
        views: dict[str, Callable[[], str]] = {
            "leaderboard": lin.leaderboard, "best_path": lin.best_path, "best_children": lin.best_children,
            "recent": lin.recent, "near_misses": lin.near_misses, "counts": lin.counts,
            "all": lambda: lin.render(self.ctx.role.name)}
        if a["name"] not in views:
            return ToolResult(message("unknown_view", name=a["name"], names=", ".join(views)), True)
        return ToolResult(views[a["name"]]())

    def _query_trial(self, a: dict[str, Any]) -> ToolResult:
        try:
            return ToolResult(query_trial(self.ctx.store, self.ctx.lineage, a["ref"]))
        except StoreError as e:
            return ToolResult(f"could not read trial {a['ref']!r}: {e}", True)

    # ----- changing -----------------------------------------------------------
    def _edit_file(self, a: dict[str, Any]) -> ToolResult:
        rel = self.session.replace(a["path"], a["old_text"], a["new_text"])
        return ToolResult(message("edited", path=rel, old_lines=len(a["old_text"].splitlines()),
                                  new_lines=len(a["new_text"].splitlines()), count=len(self.session.edits)))

    def _check_syntax(self, a: dict[str, Any]) -> ToolResult:
        errors = self.session.syntax_errors()
        if errors:
            return ToolResult(message("syntax_errors", errors="\n".join(errors)), True)
        return ToolResult(message("syntax_ok", files=", ".join(self.ctx.recipe.editable)))

    def _submit(self, a: dict[str, Any]) -> ToolResult:
        self.last_hypothesis = a["hypothesis"].strip()
        if not self.last_hypothesis:
            return ToolResult(message("submit_no_hypothesis"), True)
        if not self.session.changed:
            return ToolResult(message("submit_no_edits"), True)
        errors = self.session.syntax_errors()
        if errors:
            return ToolResult(message("submit_syntax", errors="\n".join(errors)), True)
        digest = code_digest(self.session.files)
        twin = next((t for t in self.ctx.lineage.trials if t.code_sha256 == digest), None)
        if twin is not None:
            return ToolResult(message("submit_duplicate", trial=twin.short), True)
        knobs = []
        for k in a.get("knobs") or []:
            found = self._knob(k)
            if isinstance(found, ToolResult):
                return found
            knobs.append(found)
        self.submission = Submission(a["hypothesis"].strip(), a["expected_effect"].strip(), tuple(knobs))
        return ToolResult(message("submitted"))

    def _knob(self, k: dict[str, Any]) -> Knob | ToolResult:
        name = str(k.get("name", ""))
        files = self.session.files
        pattern = re.compile(rf"^{re.escape(name)}\s*(?::[^=\n]*)?=\s*(\S[^#\n]*)", re.M)
        home, literal = None, ""
        for rel in self.ctx.recipe.editable:
            m = pattern.search(files[rel].decode(errors="replace")) if name and rel in files else None
            if m:
                home, literal = rel, m.group(1).strip()
                break
        if home is None and name:  # an argparse flag's default: --lr is knob lr (sweep/_knobs.py)
            from mlflow_autoresearch.sweep._knobs import find_flag_sites

            for rel in self.ctx.recipe.editable:
                if rel.endswith(".py") and rel in files:
                    try:
                        sites = find_flag_sites(files[rel], rel).get(name)
                    except UsageError:
                        continue
                    if sites:
                        home, literal = rel, sites[0].text
                        break
        if home is None:
            return ToolResult(message("submit_unknown_knob", name=name, files=", ".join(self.ctx.recipe.editable)), True)
        integer = re.fullmatch(r"[-+]?\d[\d_]*", literal) is not None
        try:
            return Knob(name=name, low=k["low"], high=k["high"], log=bool(k.get("log", False)), integer=integer,
                        file=home)
        except ValidationError as e:
            problem = "; ".join(err["msg"].removeprefix("Value error, ").removeprefix(f"knob {name}: ")
                                for err in e.errors())
            return ToolResult(message("submit_bad_knob", name=name, problem=problem), True)
