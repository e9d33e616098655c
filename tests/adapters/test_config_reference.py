"""The documented configuration reference (config_reference.KEYS) matches what config_file.py accepts.

The documentation's reference page is generated from ``KEYS`` (spec/docs_hooks.py): this test is what
keeps it true. A key added to the parser without a description here fails, and so does a described
key the parser does not know, or a documented default the parser does not apply."""

from __future__ import annotations

from typing import Any

from oauthproxy_adapters import config_file
from oauthproxy_adapters.config_reference import KEYS, TABLE_DOCS, reference_markdown
from oauthproxy_core.consent_theme import ConsentTheme


def test_reference_describes_exactly_the_keys_the_parser_accepts() -> None:
    documented = {(k.table, k.key) for k in KEYS}
    accepted = {(t, k) for t, keys in config_file._TABLES.items() for k in keys}
    assert documented == accepted, (
        f"undocumented: {sorted(accepted - documented)}; unknown to the parser: "
        f"{sorted(documented - accepted)} (edit adapters/oauthproxy_adapters/config_reference.py)"
    )
    assert set(TABLE_DOCS) == set(config_file._TABLES)
    assert len(documented) == len(KEYS), "a key is described twice"


def test_required_keys_are_the_ones_the_parser_requires() -> None:
    required = {(k.table, k.key) for k in KEYS if k.required}
    assert required == {
        ("server", "base_url"),
        ("upstream", "provider"),
        ("upstream", "client_id"),
    }


def _minimal() -> dict[str, Any]:
    return {
        "server": {"base_url": "https://mcp.example"},
        "upstream": {"provider": "github", "client_id": "Iv1.abc", "client_secret": "s3cret"},
    }


def test_documented_defaults_are_the_parsers_defaults() -> None:
    settings = config_file.parse_settings(_minimal(), environ={})
    default = {(k.table, k.key): k.default for k in KEYS}
    observed = {
        ("server", "host"): f'"{settings.host}"',
        ("server", "port"): str(settings.port),
        ("server", "mcp_path"): f'"{settings.proxy.mcp_path}"',
        ("server", "service_name"): f'"{settings.proxy.service_name}"',
        ("server", "scopes_supported"): str(list(settings.proxy.scopes_supported)).replace(
            "'", '"'
        ),
        ("server", "default_scopes"): str(list(settings.proxy.default_scopes)).replace("'", '"'),
        ("consent", "mode"): f'"{settings.proxy.consent_mode}"',
        ("store", "url"): f'"{settings.store_url}"',
        ("clients", "cimd"): str(settings.proxy.cimd_enabled).lower(),
        ("clients", "cimd_allow_loopback"): str(settings.proxy.cimd_allow_loopback).lower(),
        ("consent", "primary_color"): f'"{ConsentTheme().palette()["primary"]}"',
        ("consent", "background_color"): f'"{ConsentTheme().palette()["background"]}"',
    }
    for key, value in observed.items():
        assert default[key] == value, key
    for k in KEYS:
        if k.table == "limits":
            assert k.default == str(getattr(settings.proxy.bounds, k.key)), k.key
    assert settings.gateway_upstream_url is None and default[("gateway", "upstream_url")] is None


def test_reference_markdown_has_a_section_per_table_and_a_row_per_key() -> None:
    text = reference_markdown()
    for table in TABLE_DOCS:
        assert f"## `[{table}]`" in text
    for k in KEYS:
        assert f"| `{k.key}` |" in text
