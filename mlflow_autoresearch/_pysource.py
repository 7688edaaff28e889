"""Parsing Python source from several threads.

CPython 3.11's parser can fail with ``SystemError: AST constructor recursion
depth mismatch`` when threads parse at the same time (seen here on a loop's
proposal threads), so every parse in this package goes through one lock.
Parsing a training script takes milliseconds: the lock costs nothing.

:func:`local_imports` follows a script's imports to the ``.py`` files of its
folder (``init`` makes them editable; the ignore list never hides them).
"""

from __future__ import annotations

import ast
import threading
from pathlib import Path

_LOCK = threading.Lock()


def parse(source: str | bytes, filename: str = "<unknown>") -> ast.Module:
    """``ast.parse`` under the package's parser lock.  Raises SyntaxError as it does."""
    with _LOCK:
        return ast.parse(source, filename)


def check_compiles(source: str | bytes, filename: str) -> None:
    """``compile(..., "exec")`` under the lock: raises SyntaxError or ValueError."""
    with _LOCK:
        compile(source, filename, "exec")


def local_imports(folder: Path, entry: str) -> list[str]:
    """``entry`` and every ``.py`` file of ``folder`` it imports, directly or not (sorted, relative)."""
    folder = folder.resolve()
    seen: set[str] = set()
    todo = [entry]
    while todo:
        rel = todo.pop()
        if rel in seen:
            continue
        seen.add(rel)
        path = folder / rel
        try:
            tree = parse(path.read_text(errors="replace"), filename=rel)
        except (OSError, SyntaxError, ValueError):
            continue
        base = PathParts(rel)
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                pkg = base.package(node.level) if node.level else ""
                mod = ".".join(p for p in (pkg, node.module or "") if p)
                names = [mod] + [f"{mod}.{a.name}" if mod else a.name for a in node.names]
            for name in names:
                for cand in _module_files(folder, name):
                    if cand not in seen:
                        todo.append(cand)
    return sorted(seen)


class PathParts:
    def __init__(self, rel: str) -> None:
        self.parts = Path(rel).parent.parts

    def package(self, level: int) -> str:
        keep = len(self.parts) - (level - 1)
        return ".".join(self.parts[: max(0, keep)])


def _module_files(folder: Path, dotted: str) -> list[str]:
    if not dotted:
        return []
    rel = dotted.replace(".", "/")
    found = []
    for cand in (f"{rel}.py", f"{rel}/__init__.py"):
        if (folder / cand).is_file():
            found.append(cand)
    # `import pkg.mod` also runs pkg/__init__.py
    parts = dotted.split(".")
    for i in range(1, len(parts)):
        init = "/".join(parts[:i]) + "/__init__.py"
        if (folder / init).is_file():
            found.append(init)
    return found
