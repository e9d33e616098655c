"""spec/threat-model.md stays truthful: every test id it cites exists (the same check as the
requirement matrix's), every threat section cites at least one, every RFC 9700 §4 threat and MCP
best-practice threat has its section, and every invariant spec/security.md defines appears in its
invariant table (except those whose proof spec/security.md marks pending), and no other number."""

from __future__ import annotations

import re
from collections.abc import Callable

from tests.core.test_requirements_matrix import (
    PENDING_INVARIANTS,
    ROOT,
    SECURITY_INVARIANTS,
    cited_test_problem,
)

THREAT_MODEL = ROOT / "spec" / "threat-model.md"
RFC9700_SECTIONS = [f"4.{n}" for n in range(1, 18)]
MCP_THREATS = ("confused deputy", "token passthrough", "session hijacking", "SSRF")
CITED = re.compile(r"`(tests/[\w/]+\.py::(?:\w+::)?\w+)`")


def text() -> str:
    return THREAT_MODEL.read_text(encoding="utf-8")


def sections() -> dict[str, str]:
    """``## heading`` -> the text up to the next ``## heading``."""
    parts = re.split(r"^## (.+)$", text(), flags=re.MULTILINE)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts), 2)}


def section(predicate: Callable[[str], bool], what: str) -> str:
    """The one section whose heading satisfies ``predicate`` (headings name the security document,
    whose path changed when it moved into spec/, so they are found by their stable part)."""
    found = [body for heading, body in sections().items() if predicate(heading)]
    assert len(found) == 1, f"spec/threat-model.md needs exactly one {what} section"
    return found[0]


def test_every_cited_test_exists() -> None:
    cited = CITED.findall(text())
    assert len(cited) >= 50, "the threat model cites suspiciously few tests"
    missing = [problem for test_id in cited if (problem := cited_test_problem(test_id))]
    assert not missing, "\n".join(missing)


def test_every_rfc9700_and_mcp_threat_has_a_section_with_proof() -> None:
    by_heading = sections()
    problems = []
    for number in RFC9700_SECTIONS:
        found = [h for h in by_heading if h.startswith(f"RFC 9700 §{number} ")]
        if len(found) != 1:
            problems.append(f"RFC 9700 §{number}: {len(found)} sections")
            continue
        if not CITED.search(by_heading[found[0]]):
            problems.append(f"RFC 9700 §{number}: no test cited")
    for threat in MCP_THREATS:
        found = [h for h in by_heading if h.startswith("MCP:") and threat.lower() in h.lower()]
        if len(found) != 1:
            problems.append(f"MCP {threat}: {len(found)} sections")
        elif not CITED.search(by_heading[found[0]]):
            problems.append(f"MCP {threat}: no test cited")
    assert not problems, "\n".join(problems)


def test_every_incident_row_cites_a_test() -> None:
    rows = [
        line
        for line in section(lambda h: h.startswith("Incidents"), "incidents").splitlines()
        if line.startswith("| ") and not line.startswith("| incident") and "---" not in line
    ]
    assert len(rows) >= 10
    bare = [row for row in rows if not CITED.search(row)]
    assert not bare, "\n".join(bare)
    for cve in ("CVE-2026-27124", "CVE-2025-4143", "CVE-2026-41479", "CVE-2026-44681"):
        assert cve in text()
    for cve in ("CVE-2025-4144", "CVE-2025-69196"):
        assert cve in text()


def test_every_security_invariant_is_mentioned() -> None:
    table = section(lambda h: h.endswith("invariants by threat"), "invariants-by-threat")
    numbers = {int(n) for n in re.findall(r"^\| (\d+) \|", table, flags=re.MULTILINE)}
    missing = [n for n in SECURITY_INVARIANTS if n not in numbers and n not in PENDING_INVARIANTS]
    assert not missing, f"spec/security.md invariants missing from spec/threat-model.md: {missing}"
    unknown = numbers - set(SECURITY_INVARIANTS)
    assert not unknown, f"spec/threat-model.md names invariants spec/security.md lacks: {unknown}"
