"""The documentation's included examples stay includes (pymdownx.snippets ``--8<--``).

A formatter that treats a fenced ``python`` block as code rewrites ``--8<-- "file"`` into
``--8 < --"file"``, which is no longer an include: the page then shows that line instead of the
example, and ``mkdocs build --strict`` cannot notice. Every such line must be the directive, naming
a file that exists.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "spec" / "docs"
_MANGLED = re.compile(r"^--8\s*<\s*--", re.MULTILINE)
_DIRECTIVE = re.compile(r'^--8<-- "([^"]+)"$', re.MULTILINE)


def test_every_snippet_include_is_intact_and_names_a_file() -> None:
    pages = sorted(DOCS.rglob("*.md"))
    assert pages
    found = 0
    for page in pages:
        text = page.read_text()
        bad = [m.group(0) for m in _MANGLED.finditer(text) if not m.group(0).startswith("--8<--")]
        assert not bad, f"{page.relative_to(ROOT)}: mangled include {bad}"
        for included in _DIRECTIVE.findall(text):
            found += 1
            assert (ROOT / included).is_file(), f"{page.relative_to(ROOT)}: {included} is missing"
    assert found >= 5  # the quick starts, the testing recipe, the OpenAPI page
