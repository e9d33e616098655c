"""The configuration reference, rendered from ``config_schema.py`` (where every key is declared).

``spec/docs_hooks.py`` puts ``reference_markdown()`` into the documentation's configuration page, so
the published reference is the parser's own declaration and cannot drift from it;
``tests/adapters/test_config_reference.py`` checks that the defaults it shows are the ones a loaded
file gets.
"""

from __future__ import annotations

from .config_schema import KEYS, TABLES, Key, keys_of

__all__ = ["KEYS", "TABLE_DOCS", "Key", "reference_markdown"]

#: Table name -> what it is for (``clients.static`` is written ``[[clients.static]]``).
TABLE_DOCS: dict[str, str] = {t.name: t.doc for t in TABLES}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _heading(name: str) -> str:
    table = next(t for t in TABLES if t.name == name)
    title = f"[[{name}]]" if table.array else f"[{name}]"
    return f"## `{title}`" + (" (required)" if table.required else "")


def _meaning(k: Key) -> str:
    parts = [k.doc]
    if k.providers:
        parts.insert(0, f"**{', '.join(k.providers)} only.**")
    if k.choices and not any(f"`{c}`" in k.doc for c in k.choices):
        parts.append("One of " + ", ".join(f"`{c}`" for c in k.choices) + ".")
    if k.minimum is not None and k.maximum is not None:
        parts.append(f"From {k.minimum} to {k.maximum}.")
    if k.why:
        parts.append(f"*Why this default:* {k.why}")
    return " ".join(parts)


def reference_markdown() -> str:
    """The reference as Markdown: one section per table, one row per key."""
    lines: list[str] = []
    for table in TABLES:
        lines += [_heading(table.name), "", table.doc, "", "| key | type | default | meaning |"]
        lines.append("| --- | --- | --- | --- |")
        for k in keys_of(table.name).values():
            shown = k.shown_default()
            default = "**required**" if k.required else (f"`{shown}`" if shown else "-")
            if shown and "`" in shown:  # already Markdown (a sentence with code in it)
                default = shown
            lines.append(
                f"| `{k.name}` | {k.type.value} | {_cell(default)} | {_cell(_meaning(k))} |"
            )
        lines.append("")
    return "\n".join(lines)
