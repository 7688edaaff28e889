"""Applying a proposal's edits to the parent's snapshot, with reasons for refusals.

An :class:`EditSession` is the only way code changes: exact string
replacement in editable files.  Protected files, unknown files, paths that
leave the recipe (``..``, absolute, symlinks) are refused with a reason the
model can read and act on in the same session.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import PurePosixPath

from mlflow_autoresearch._errors import ProposalError
from mlflow_autoresearch._pysource import parse
from mlflow_autoresearch.recipe import Recipe
from mlflow_autoresearch.specialists._base import Edit

MAX_FILE_BYTES = 2_000_000


class EditSession:
    """Working copy of a parent's code.  Not thread-safe: one per proposal."""

    def __init__(self, recipe: Recipe, parent_files: Mapping[str, bytes]) -> None:
        self.recipe = recipe
        self._files = {k: bytes(v) for k, v in parent_files.items()}
        self.edits: list[Edit] = []

    @property
    def files(self) -> dict[str, bytes]:
        return dict(self._files)

    def read(self, path: str) -> str:
        rel = self._check_path(path, for_write=False)
        if rel not in self._files:
            raise ProposalError(f"no file {path!r}; files: {', '.join(sorted(self._files))}")
        return self._files[rel].decode(errors="replace")

    def _check_path(self, path: str, for_write: bool) -> str:
        p = PurePosixPath(path)
        if p.is_absolute() or ".." in p.parts or "\\" in path or not path.strip():
            raise ProposalError(f"path {path!r} leaves the recipe folder; use a relative path like "
                                f"{self.recipe.editable[0]!r}")
        rel = p.as_posix()
        if for_write and rel not in self.recipe.editable:
            if rel in self._files:
                raise ProposalError(f"{rel} is protected: only {', '.join(self.recipe.editable)} may be edited")
            raise ProposalError(f"{rel} is not an editable file of this recipe; editable: "
                                f"{', '.join(self.recipe.editable)}")
        return rel

    def replace(self, path: str, old: str, new: str) -> str:
        """Replace exactly one occurrence of ``old`` with ``new`` in an editable file.

        Raises:
            ProposalError: with a reason a model can act on.
        """
        rel = self._check_path(path, for_write=True)
        text = self.read(rel)
        if not old:
            raise ProposalError("old_text is empty; quote the exact lines to replace")
        count = text.count(old)
        if count == 0:
            hint = _closest_line(text, old)
            raise ProposalError(f"old_text not found in {rel}" + (f"; the closest line is: {hint!r}" if hint else "")
                                + ". Read the file again and quote it exactly, whitespace included.")
        if count > 1:
            raise ProposalError(f"old_text occurs {count} times in {rel}; include more surrounding lines "
                                "so it matches exactly once")
        updated = text.replace(old, new, 1)
        if len(updated.encode()) > MAX_FILE_BYTES:
            raise ProposalError(f"{rel} would exceed {MAX_FILE_BYTES:,} bytes")
        self._files[rel] = updated.encode()
        self.edits.append(Edit(rel, old, new))
        return rel

    def apply(self, edit: Edit) -> None:
        self.replace(edit.file, edit.old, edit.new)

    def syntax_errors(self) -> list[str]:
        """One message per editable Python file that does not parse."""
        errors = []
        for rel in self.recipe.editable:
            if rel.endswith(".py") and rel in self._files:
                try:
                    parse(self._files[rel], rel)
                except SyntaxError as e:
                    errors.append(f"{rel} line {e.lineno}: {e.msg}")
        return errors

    @property
    def changed(self) -> bool:
        return bool(self.edits)


def _closest_line(text: str, old: str) -> str | None:
    first = next((ln.strip() for ln in old.splitlines() if ln.strip()), "")
    if not first:
        return None
    lines = [ln.strip() for ln in text.splitlines()]
    squeezed = "".join(first.split())
    # the usual slip: the same code with other spacing (``SCORE=0.5`` for ``SCORE = 0.5  # ...``)
    same = [ln for ln in lines if squeezed and squeezed in "".join(ln.split())]
    if same:
        return min(same, key=len)
    import difflib

    match = difflib.get_close_matches(first, lines, n=1, cutoff=0.6)
    return match[0] if match else None


def apply_edits(recipe: Recipe, parent_files: Mapping[str, bytes], edits: list[Edit]) -> dict[str, bytes]:
    """Apply all edits or raise ProposalError; the result also parses."""
    session = EditSession(recipe, parent_files)
    for e in edits:
        session.apply(e)
    errors = session.syntax_errors()
    if errors:
        raise ProposalError("SyntaxError after edits: " + "; ".join(errors))
    return session.files
