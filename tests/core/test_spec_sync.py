"""spec/transitions.md and spec/transitions.mmd are generated from states.py and must not drift."""

from __future__ import annotations

from pathlib import Path

from oauthproxy_core.transitions_doc import transitions_markdown, transitions_mermaid

SPEC = Path(__file__).resolve().parents[2] / "spec"


def test_transition_table_in_spec_matches_the_code() -> None:
    assert (SPEC / "transitions.md").read_text() == transitions_markdown(), (
        "spec/transitions.md is stale: run .venv/bin/python spec/generate.py"
    )


def test_transition_diagram_in_spec_matches_the_code() -> None:
    assert (SPEC / "transitions.mmd").read_text() == transitions_mermaid(), (
        "spec/transitions.mmd is stale: run .venv/bin/python spec/generate.py"
    )
