"""Parsing Python source from several threads.

CPython 3.11's parser can fail with ``SystemError: AST constructor recursion
depth mismatch`` when threads parse at the same time (seen here on a loop's
proposal threads), so every parse in this package goes through one lock.
Parsing a training script takes milliseconds: the lock costs nothing.
"""

from __future__ import annotations

import ast
import threading

_LOCK = threading.Lock()


def parse(source: str | bytes, filename: str = "<unknown>") -> ast.Module:
    """``ast.parse`` under the package's parser lock.  Raises SyntaxError as it does."""
    with _LOCK:
        return ast.parse(source, filename)


def check_compiles(source: str | bytes, filename: str) -> None:
    """``compile(..., "exec")`` under the lock: raises SyntaxError or ValueError."""
    with _LOCK:
        compile(source, filename, "exec")
