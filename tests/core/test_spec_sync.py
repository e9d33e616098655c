"""spec/transitions.md and the diagrams (spec/transitions.mmd, spec/grant-transitions.mmd) are
generated from states.py and must not drift."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from oauthproxy_core.transitions_doc import (
    device_transitions_mermaid,
    grant_transitions_mermaid,
    transitions_markdown,
    transitions_mermaid,
)

SPEC = Path(__file__).resolve().parents[2] / "spec"


@pytest.mark.parametrize(
    ("name", "render"),
    [
        ("transitions.md", transitions_markdown),
        ("transitions.mmd", transitions_mermaid),
        ("grant-transitions.mmd", grant_transitions_mermaid),
        ("device-transitions.mmd", device_transitions_mermaid),
    ],
)
def test_generated_spec_file_matches_the_code(name: str, render: Callable[[], str]) -> None:
    assert (SPEC / name).read_text() == render(), (
        f"spec/{name} is stale: run .venv/bin/python spec/generate.py"
    )
