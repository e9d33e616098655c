"""spec/threat-model.md stays truthful: every test id it cites exists (the same check as the
requirement matrix's), every threat section cites at least one, every RFC 9700 §4 threat and MCP
best-practice threat has its section, and every SECURITY.md invariant 1..29 appears in its
invariant table."""

from __future__ import annotations

import re

from tests.core.test_requirements_matrix import (
    ROOT,
    SECURITY_INVARIANTS,
    TEST_ID,
    definitions,
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


def test_every_cited_test_exists() -> None:
    cited = CITED.findall(text())
    assert len(cited) >= 50, "the threat model cites suspiciously few tests"
    missing = []
    for test_id in cited:
        match = TEST_ID.fullmatch(test_id)
        assert match is not None, test_id
        path = ROOT / match["path"]
        if not path.is_file():
            missing.append(f"no file {match['path']}")
        elif match["name"] not in definitions(path):
            missing.append(f"{match['path']} defines no {match['name']}")
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
        for line in sections()['Incidents (SECURITY.md, "What went wrong elsewhere")'].splitlines()
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
    table = sections()["SECURITY.md invariants by threat"]
    numbers = {int(n) for n in re.findall(r"^\| (\d+) \|", table, flags=re.MULTILINE)}
    missing = [n for n in SECURITY_INVARIANTS if n not in numbers]
    assert not missing, f"SECURITY.md invariants missing from spec/threat-model.md: {missing}"
    # SECURITY.md numbers 35 invariants; SECURITY_INVARIANTS lists those every table must map.
    assert numbers <= set(range(1, 36)), f"unknown invariants: {numbers}"
