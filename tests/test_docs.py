"""The docs stay true: the CLI page matches the command's help, and every relative link resolves."""

from __future__ import annotations

import importlib.util
import re
import sys

from .conftest import ROOT

DOCS = ROOT / "docs"
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _gen_cli_docs():
    spec = importlib.util.spec_from_file_location("gen_cli_docs", ROOT / "scripts" / "gen_cli_docs.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_cli_page_is_generated_from_the_current_help():
    gen = _gen_cli_docs()
    page = gen.render()
    assert (DOCS / "cli.md").read_text(encoding="utf-8") == page, \
        "docs/cli.md is out of date: run python scripts/gen_cli_docs.py"
    for command in ("run", "evaluate", "lineage", "report"):
        assert f"## `autoresearch {command}`" in page


def test_relative_links_in_the_docs_resolve():
    pages = sorted(DOCS.rglob("*.md")) + [ROOT / "README.md"]
    broken = []
    for page in pages:
        text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)  # code is not a link
        for target in LINK.findall(text):
            if target.startswith(("http://", "https://", "mailto:", "#")):
                continue
            path = target.split("#", 1)[0]
            if not (page.parent / path).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert broken == [], "broken links:\n" + "\n".join(broken)


def test_every_screenshot_the_ui_page_shows_exists():
    page = (DOCS / "mlflow-ui.md").read_text(encoding="utf-8")
    images = re.findall(r"!\[[^\]]*\]\((img/[^)]+)\)", page)
    assert len(images) >= 5
    for rel in images:
        png = DOCS / rel
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", rel
