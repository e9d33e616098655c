"""Every reference to a design document resolves inside the repository.

The design documents live in ``spec/``: ``security.md`` (the numbered invariants),
``architecture.md``, ``interop.md`` and ``style.md``. Code comments, docstrings, tests, the spec
files, the documentation and the README cite them in three ways, and each is checked:

- an invariant by number: ``spec/security.md 23``, ``spec/security.md 5, 9``,
  ``spec/security.md invariants 1-27``: every number must be one spec/security.md defines;
- a document, optionally with a section: ``spec/architecture.md, "Storage contract"``,
  ``spec/interop.md §Discovery``: the file must exist, and the section must be (the start of) one of
  its headings;
- a test named after invariants (``test_invariant_8_...``, ``test_invariants_1_to_27_...``): the
  numbers must be defined too.

The documents were first written as briefs outside the repository under upper-case names without a
directory. Until every citation is rewritten to the ``spec/`` path, such a bare name is read as the
``spec/`` document of the same name in lower case (``ACCEPT_BARE_NAMES``); an absolute path to the
briefs' old location is read the same way. Set ``ACCEPT_BARE_NAMES = False`` once nothing uses them.

Also checked here: spec/security.md numbers its invariants 1, 2, 3, ... without gaps, each has a
proof pointer, and every test the design documents and the recipes cite exists.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

from tests.core.test_requirements_matrix import (
    ROOT,
    SECURITY_INVARIANTS,
    cited_test_problem,
    invariant_sections,
)

SPEC = ROOT / "spec"
#: The design documents, by their name in spec/.
DESIGN_DOCUMENTS = ("security", "architecture", "interop", "style")
#: Accept the briefs' bare upper-case names (resolved against spec/) besides the spec/ paths.
ACCEPT_BARE_NAMES = False

#: Files that may cite the documents: everything a person reads or runs, not generated output.
SUFFIXES = frozenset(
    {".py", ".md", ".toml", ".yaml", ".yml", ".txt", ".cfg", ".ini", ".sh", ".mjs"}
)
SKIPPED_DIRS = frozenset({"node_modules", "build", "site", "__pycache__"})

_BARE = "|".join(name.upper() for name in DESIGN_DOCUMENTS)
#: A design document: ``spec/<path>.md``, or a bare brief name (optionally under its old directory).
DOCUMENT = re.compile(
    rf"(?<![\w./-])(?:(?P<spec>spec/[\w./-]*?\.md)|(?:/work/shared/)?(?P<bare>{_BARE})\.md)\b"
)
#: What may follow a document to name a section: ``§Heading`` or ``, "Heading"``.
SECTION = re.compile(r'\s*§\s*(?P<sign>[^"`|)\\\n;,]+)|(?:,\s*|\s+)"(?P<quoted>[^"]{1,80})"')
#: What may follow the security document to name invariants: ``23``, ``5, 9``, ``invariants 1-27``.
NUMBERS = re.compile(
    r",?\s+(?:invariants?\s+)?(?P<list>\d+(?:\s*(?:,|-|–|\.\.|and|to)\s*\d+)*)(?![\w-]|\.\d)"
)
TEST_NAME = re.compile(r"\bdef (test_invariants?_(?P<list>\d+(?:_(?:to_|and_)?\d+)*))(?:_|\()")
CITED_TEST = re.compile(r"`(tests/[\w/]+\.py::(?:\w+::)?\w+)`")


def files() -> Iterator[Path]:
    """Every text file of the repository that a person writes (not generated output, not vendored),
    except this checker, whose examples of broken citations are deliberate."""
    here = Path(__file__).resolve()
    for folder, dirs, names in os.walk(ROOT):
        # Pruned in place, so vendored and generated trees are never walked.
        dirs[:] = sorted(
            d for d in dirs if d not in SKIPPED_DIRS and (not d.startswith(".") or d == ".ci")
        )
        base = Path(folder)
        in_ci = base.relative_to(ROOT).parts[:1] == (".ci",)
        for name in sorted(names):
            path = base / name
            if path != here and (path.suffix in SUFFIXES or in_ci):
                yield path


def numbers(text: str) -> set[int]:
    """``"5, 9"`` -> {5, 9}; ``"1-3"`` / ``"1 to 3"`` / ``"1_to_3"`` -> {1, 2, 3}."""
    tokens = re.findall(r"\d+|-|–|\.\.|to", text.replace("_", " "))
    out: set[int] = set()
    previous: int | None = None
    span = False
    for token in tokens:
        if token.isdigit():
            n = int(token)
            out.update(range(previous, n + 1) if span and previous is not None else {n})
            previous, span = n, False
        else:
            span = True
    return out


def target(match: re.Match[str]) -> str:
    """The repository path a document reference resolves to."""
    if match["spec"]:
        return match["spec"]
    return f"spec/{match['bare'].lower()}.md"


@cache
def headings(path: str) -> tuple[str, ...]:
    text = (ROOT / path).read_text(encoding="utf-8")
    found = re.findall(r"^#{1,6} +(.+?) *#*$", text, flags=re.MULTILINE)
    return tuple(" ".join(h.split()).lower() for h in found)


def problems_in(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8", errors="replace")
    return problems_in_text(text, str(path.relative_to(ROOT)), python=path.suffix == ".py")


def problems_in_text(text: str, where: str, *, python: bool) -> list[str]:
    """What is wrong with the references in ``text`` (the contents of file ``where``)."""
    defined = set(SECURITY_INVARIANTS)
    found: list[str] = []
    for match in DOCUMENT.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        cited = match[0]
        resolved = target(match)
        if match["bare"] and not ACCEPT_BARE_NAMES:
            found.append(f"{where}:{line}: {cited} is cited by its old name; write {resolved}")
        if not (ROOT / resolved).is_file():
            found.append(f"{where}:{line}: {cited} -> {resolved} does not exist")
            continue
        rest = text[match.end() : match.end() + 300]
        if resolved == "spec/security.md":
            listed = NUMBERS.match(rest)
            if listed is not None:
                unknown = sorted(numbers(listed["list"]) - defined)
                if unknown:
                    found.append(f"{where}:{line}: {cited} cites undefined invariants {unknown}")
        section = SECTION.match(rest)
        if section is not None and resolved.endswith(".md"):
            name = " ".join((section["sign"] or section["quoted"]).split()).lower().rstrip(" .")
            if not any(h.startswith(name) for h in headings(resolved)):
                found.append(f'{where}:{line}: {resolved} has no section "{name}"')
    if python:
        for match in TEST_NAME.finditer(text):
            unknown = sorted(numbers(match["list"]) - defined)
            if unknown:
                line = text.count("\n", 0, match.start()) + 1
                found.append(f"{where}:{line}: {match[1]} names undefined invariants {unknown}")
    return found


def test_invariants_are_numbered_without_gaps() -> None:
    numbers_ = list(SECURITY_INVARIANTS)
    assert numbers_ == list(range(1, len(numbers_) + 1)), numbers_
    assert len(numbers_) >= 35, "code and tests cite invariants up to 35"


def test_every_invariant_has_a_reason_and_a_proof_pointer() -> None:
    problems = []
    for n, section in invariant_sections().items():
        if "*Why:*" not in section:
            problems.append(f"invariant {n}: no *Why:* paragraph")
        if not re.search(r"^\*\*Proof:\*\* ", section, flags=re.MULTILINE):
            problems.append(f"invariant {n}: no **Proof:** line")
    assert not problems, "\n".join(problems)


def test_every_design_document_reference_resolves() -> None:
    problems = [p for path in files() for p in problems_in(path)]
    assert not problems, "\n".join(problems)


def test_the_design_documents_exist_and_the_scan_sees_their_citations() -> None:
    """Guards the test above against scanning nothing: the repository cites each document."""
    cited: set[str] = set()
    for path in files():
        cited |= {target(m) for m in DOCUMENT.finditer(path.read_text(errors="replace"))}
    for name in DESIGN_DOCUMENTS:
        assert (SPEC / f"{name}.md").is_file(), name
        assert f"spec/{name}.md" in cited, f"nothing cites spec/{name}.md"


def test_tests_cited_by_the_design_documents_and_recipes_exist() -> None:
    pages = [SPEC / f"{name}.md" for name in DESIGN_DOCUMENTS]
    pages += sorted((SPEC / "docs" / "recipes").glob("*.md"))
    cited = [(page, t) for page in pages for t in CITED_TEST.findall(page.read_text("utf-8"))]
    missing = [f"{page.name}: {problem}" for page, t in cited if (problem := cited_test_problem(t))]
    assert len(cited) >= 40, "the design documents cite suspiciously few tests"
    assert not missing, "\n".join(missing)


def test_the_checker_catches_what_it_must(monkeypatch: pytest.MonkeyPatch) -> None:
    """The patterns themselves: an undefined number, a missing file, a missing section, a test name,
    in each spelling of a citation; the correct citations pass; the old names pass only while
    ``ACCEPT_BARE_NAMES`` is on."""
    undefined = max(SECURITY_INVARIANTS) + 1
    old_name = "SECURITY" + ".md"
    cases = {
        f"# spec/security.md {undefined}\n": "undefined invariants",
        f"# spec/security.md invariants 1-{undefined}\n": "undefined invariants",
        f"# (spec/security.md 3, {undefined}).\n": "undefined invariants",
        "# spec/no-such-document.md\n": "does not exist",
        '# spec/architecture.md, "No such section"\n': "has no section",
        "# spec/interop.md §Nowhere\n": "has no section",
        f"def test_invariant_{undefined}_x() -> None: ...\n": "undefined invariants",
        f"def test_invariants_1_to_{undefined}_x() -> None: ...\n": "undefined invariants",
    }
    fine = (
        "# spec/security.md 23; (spec/security.md 5, 9) spec/security.md invariants 1 and 3.\n"
        '# spec/architecture.md, "Storage contract"; spec/interop.md §Upstream providers\n'
        "def test_invariant_8_x() -> None: ...\n"
    )
    assert problems_in_text(fine, "fine.py", python=True) == []
    for line, expected in cases.items():
        found = problems_in_text(line, "case.py", python=True)
        assert len(found) == 1 and expected in found[0], (line, found)

    old = f'# ({old_name} 5, 9) {old_name}, "What went wrong elsewhere"; /work/shared/{old_name}\n'
    this = sys.modules[__name__]
    monkeypatch.setattr(this, "ACCEPT_BARE_NAMES", True)
    assert problems_in_text(old, "old.py", python=False) == []
    found = problems_in_text(f"# {old_name} {undefined}\n", "old.py", python=False)
    assert len(found) == 1 and "undefined invariants" in found[0], found
    monkeypatch.setattr(this, "ACCEPT_BARE_NAMES", False)
    found = problems_in_text(old, "old.py", python=False)
    assert len(found) == 3 and all("old name; write spec/security.md" in p for p in found), found
