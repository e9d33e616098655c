"""Regenerate spec/transitions.md and the diagrams (spec/*.mmd) from oauthproxy_core/states.py.

Run: .venv/bin/python spec/generate.py
"""

from __future__ import annotations

from pathlib import Path

from oauthproxy_core.transitions_doc import (
    device_transitions_mermaid,
    grant_transitions_mermaid,
    transitions_markdown,
    transitions_mermaid,
)

HERE = Path(__file__).parent


def main() -> None:
    (HERE / "transitions.md").write_text(transitions_markdown())
    (HERE / "transitions.mmd").write_text(transitions_mermaid())
    (HERE / "grant-transitions.mmd").write_text(grant_transitions_mermaid())
    (HERE / "device-transitions.mmd").write_text(device_transitions_mermaid())


if __name__ == "__main__":
    main()
