"""spec/requirements.toml, the requirement matrix, is complete and truthful, and spec/requirements.md is
its rendering (spec/render_requirements.py), so the Markdown cannot drift.

Checked: ids are unique; every requirement has a source, a level, a text and a status; every
``implemented`` requirement names at least one test and every named test exists (the file parses and
defines that function at top level or as a method of a class); ``planned`` requirements name no test
and say which issue will implement them; no ``untested`` requirement remains (a requirement we claim
without a proving test fails CI loudly until a test is written); every invariant 1..29 of SECURITY.md
appears in some requirement's ``source``.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import tomllib
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "spec"
TOML_PATH = SPEC / "requirements.toml"
RENDERER_PATH = SPEC / "render_requirements.py"
MARKDOWN_PATH = SPEC / "requirements.md"

LEVELS = {"MUST", "SHOULD", "MAY", "INVARIANT"}
STATUSES = {"implemented", "planned", "untested"}
REQUIRED_FIELDS = ("id", "source", "level", "text", "status")
#: SECURITY.md numbers its invariants 1..35; those listed here are mapped (32: vouched claims). The
#: test must not read a file outside the repository.
SECURITY_INVARIANTS = (*range(1, 30), 32)
TEST_ID = re.compile(r"(?P<path>tests/[\w/]+\.py)::(?P<name>(?:\w+::)?\w+)")


def requirements() -> list[dict[str, Any]]:
    with TOML_PATH.open("rb") as f:
        data = tomllib.load(f)
    reqs = data.get("requirement")
    assert isinstance(reqs, list) and reqs, "spec/requirements.toml has no [[requirement]] tables"
    return reqs


@cache
def definitions(path: Path) -> frozenset[str]:
    """Names defined in a test module: ``f`` for top-level functions, ``f`` and ``C::f`` for methods."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    names.update({item.name, f"{node.name}::{item.name}"})
    return frozenset(names)


def load_renderer() -> ModuleType:
    spec = importlib.util.spec_from_file_location("render_requirements", RENDERER_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ids_are_unique() -> None:
    seen: set[str] = set()
    duplicates = []
    for req in requirements():
        rid = req.get("id")
        if rid in seen:
            duplicates.append(rid)
        seen.add(rid)
    assert not duplicates, f"duplicate requirement ids: {duplicates}"


def test_every_requirement_has_source_level_text_and_status() -> None:
    problems = []
    for i, req in enumerate(requirements()):
        rid = req.get("id", f"#{i}")
        for field in REQUIRED_FIELDS:
            value = req.get(field)
            if not isinstance(value, str) or not value.strip():
                problems.append(f"{rid}: missing or empty `{field}`")
        if req.get("level") not in LEVELS:
            problems.append(f"{rid}: level {req.get('level')!r} not in {sorted(LEVELS)}")
        if req.get("status") not in STATUSES:
            problems.append(f"{rid}: status {req.get('status')!r} not in {sorted(STATUSES)}")
        tests = req.get("tests", [])
        if not isinstance(tests, list) or not all(isinstance(t, str) for t in tests):
            problems.append(f"{rid}: `tests` must be a list of strings")
    assert not problems, "\n".join(problems)


def test_implemented_requirements_name_tests() -> None:
    bare = [r["id"] for r in requirements() if r["status"] == "implemented" and not r.get("tests")]
    assert not bare, f"implemented but no test named: {bare}"


def test_planned_requirements_name_an_issue_and_no_tests() -> None:
    problems = []
    for req in requirements():
        if req["status"] != "planned":
            continue
        if req.get("tests"):
            problems.append(f"{req['id']}: planned but names tests")
        if not re.fullmatch(r"issue \d+", str(req.get("issue", ""))):
            problems.append(f'{req["id"]}: planned without `issue = "issue N"`')
    assert not problems, "\n".join(problems)


def test_every_named_test_exists() -> None:
    missing = []
    for req in requirements():
        for test_id in req.get("tests", []):
            match = TEST_ID.fullmatch(test_id)
            if match is None:
                missing.append(f"{req['id']}: malformed test id {test_id!r} (path::function)")
                continue
            path = ROOT / match["path"]
            if not path.is_file():
                missing.append(f"{req['id']}: no file {match['path']}")
            elif match["name"] not in definitions(path):
                missing.append(f"{req['id']}: {match['path']} defines no {match['name']}")
    assert not missing, "\n".join(missing)


def test_no_requirement_is_left_untested() -> None:
    untested = [f"{r['id']} ({r['source']})" for r in requirements() if r["status"] == "untested"]
    assert not untested, (
        "requirements we implement but no test proves yet (write the test, then mark them "
        "implemented):\n" + "\n".join(untested)
    )


def test_every_security_invariant_is_mapped() -> None:
    covered: set[int] = set()
    for req in requirements():
        match = re.match(r"SECURITY\.md\s+([\d,\s]+)", req["source"])
        if match:
            covered.update(int(n) for n in re.findall(r"\d+", match[1]))
    missing = [n for n in SECURITY_INVARIANTS if n not in covered]
    assert not missing, f"SECURITY.md invariants without a requirement: {missing}"


def test_markdown_is_the_rendering_of_the_toml() -> None:
    renderer = load_renderer()
    expected = renderer.render(renderer.load(TOML_PATH))
    assert MARKDOWN_PATH.read_text(encoding="utf-8") == expected, (
        "spec/requirements.md is stale: run .venv/bin/python spec/render_requirements.py"
    )
