"""MkDocs hooks: the parts of the documentation that are generated from the code at build time.

Generated, so they cannot drift:

- ``<!-- generated: config-reference -->``: every ``proxy.toml`` key, from the declaration the
  parser's checks are generated from (``oauthproxy_adapters.config_schema.KEYS``, rendered by
  ``config_reference.reference_markdown``);
- ``<!-- generated: consent-placeholders -->``: the consent template's placeholders, from
  ``oauthproxy_core.consent_theme.TEMPLATE_PLACEHOLDERS``;
- ``<!-- generated: cli-help -->``: ``oauthproxy --help`` and every sub-command's help, from the
  argparse parser in ``oauthproxy_adapters.cli``;
- ``<!-- generated: transitions-diagram -->``: ``spec/transitions.mmd`` as a Mermaid block;
- the pages ``reference/transitions.md``, ``reference/requirements.md``,
  ``reference/threat-model.md`` and the design documents ``reference/architecture.md``,
  ``reference/security.md``, ``reference/interop.md`` and ``reference/style.md``: copies of the
  files of the same names in ``spec/``. They sit side by side, so their relative links to each other
  resolve in the repository and on the site alike.

A marker that is not replaced, or a page that names an unknown marker, fails the build.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

SPEC = Path(__file__).resolve().parent
MARKER = re.compile(r"<!-- generated: ([a-z-]+) -->")


def _config_reference() -> str:
    from oauthproxy_adapters.config_reference import reference_markdown  # noqa: PLC0415

    return reference_markdown()


def _consent_placeholders() -> str:
    from oauthproxy_core.consent_theme import TEMPLATE_PLACEHOLDERS  # noqa: PLC0415

    rows = ["| placeholder | becomes |", "| --- | --- |"]
    rows += [f"| `${name}` | {what} |" for name, what in TEMPLATE_PLACEHOLDERS.items()]
    return "\n".join(rows).replace("<", "&lt;").replace(">", "&gt;")


def _subparsers(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    out: list[tuple[str, argparse.ArgumentParser]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out.append((name, sub))
    return out


def _cli_help() -> str:
    from oauthproxy_adapters import cli  # noqa: PLC0415

    parser = cli._parser()
    blocks: list[str] = []

    def walk(p: argparse.ArgumentParser, prefix: str) -> None:
        blocks.append(f"### `{prefix}`\n\n```text\n{p.format_help().rstrip()}\n```\n")
        for name, sub in _subparsers(p):
            if name == "demo":
                continue  # the demo has its own parser; `oauthproxy demo --help` shows it
            walk(sub, f"{prefix} {name}")

    walk(parser, "oauthproxy")
    return "\n".join(blocks)


def _transitions_diagram() -> str:
    return "```mermaid\n" + (SPEC / "transitions.mmd").read_text().rstrip() + "\n```"


GENERATORS = {
    "config-reference": _config_reference,
    "consent-placeholders": _consent_placeholders,
    "cli-help": _cli_help,
    "transitions-diagram": _transitions_diagram,
}

COPIED = {
    "reference/transitions.md": SPEC / "transitions.md",
    "reference/requirements.md": SPEC / "requirements.md",
    "reference/threat-model.md": SPEC / "threat-model.md",
    "reference/architecture.md": SPEC / "architecture.md",
    "reference/security.md": SPEC / "security.md",
    "reference/interop.md": SPEC / "interop.md",
    "reference/style.md": SPEC / "style.md",
    "reference/rfc8628.md": SPEC / "rfc8628.md",
}


def on_files(files: Files, config: Any) -> Files:
    for uri, source in COPIED.items():
        files.append(File.generated(config, uri, content=source.read_text()))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in GENERATORS:
            raise PluginError(f"{page.file.src_uri}: unknown generated block {name!r}")
        return GENERATORS[name]()

    return MARKER.sub(replace, markdown)
