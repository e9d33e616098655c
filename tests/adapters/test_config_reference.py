"""The configuration schema (config_schema.KEYS) is what the parser checks and what the reference shows.

Every key is declared once, in ``adapters/oauthproxy_adapters/config_schema.py``; the parser's generic
checks and the documentation's reference page (spec/docs_hooks.py) are generated from it. These
tests keep the declaration honest: the defaults it shows are the ones a loaded file gets, every bound
of the core is a declared key, every declared default says why, and the generated checks refuse a
wrong value of every key, all of them in one run."""

from __future__ import annotations

from typing import Any

import attrs
import httpx
from hypothesis import given, settings
from hypothesis import strategies as st

from oauthproxy_adapters import config_file
from oauthproxy_adapters.config_reference import KEYS, TABLE_DOCS, reference_markdown
from oauthproxy_adapters.config_schema import REQUIRED, TABLES, Type, check, keys_of
from oauthproxy_core.bounds import Bounds
from oauthproxy_core.consent_theme import ConsentTheme


def test_every_key_is_declared_once_with_help_and_a_reason_for_its_default() -> None:
    declared = [(k.table, k.name) for k in KEYS]
    assert len(set(declared)) == len(declared), "a key is declared twice"
    assert {t for t, _ in declared} <= set(TABLE_DOCS)
    for k in KEYS:
        assert k.doc.strip(), f"{k.path} has no help text"
        if k.shown_default() is not None:
            assert k.why.strip(), f"{k.path} has a default but no reason for it"


def test_every_core_bound_is_a_documented_limits_key() -> None:
    """spec/security.md 28: every bound is configurable and documented with its default."""
    limits = keys_of("limits")
    for name, field in attrs.fields_dict(Bounds).items():
        assert name in limits, f"Bounds.{name} has no [limits] key in config_schema.py"
        assert limits[name].default == field.default
        assert limits[name].minimum is not None and limits[name].minimum >= 1


def test_required_keys_are_the_ones_the_parser_requires() -> None:
    required = {(k.table, k.name) for k in KEYS if k.required}
    assert required == {
        ("server", "base_url"),
        ("upstream", "provider"),
        ("upstream", "client_id"),
        ("clients.static", "client_id"),
        ("gateway.tools", "name"),
        ("resources", "path"),
        ("resources", "upstream_url"),
        ("resources.tools", "name"),
        ("trusted_issuers", "issuer"),
        ("trusted_issuers", "jwks_uri"),
        ("trusted_issuers", "subject_prefix"),
        ("enterprise_issuers", "issuer"),
        ("enterprise_issuers", "jwks_uri"),
        ("enterprise_issuers", "subject_prefix"),
        ("enterprise_issuers", "clients"),
    }
    problems = {str(p) for p in check({"server": {}, "upstream": {}}).problems}
    assert problems == {
        "[server].base_url: required",
        "[upstream].provider: required",
        "[upstream].client_id: required",
    }


def _minimal() -> dict[str, Any]:
    return {
        "server": {"base_url": "https://mcp.example"},
        "upstream": {"provider": "github", "client_id": "Iv1.abc", "client_secret": "s3cret"},
    }


_ISSUER = {
    "issuer": "https://login.example.com/",
    "jwks_uri": "https://login.example.com/keys",
    "subject_prefix": "corp",
}
_CONFIDENTIAL = {
    "client_id": "agent",
    "client_secret": "agent-secret-0123456789",
    "redirect_uris": ["https://agent.example/cb"],
}


def test_documented_defaults_are_the_parsers_defaults() -> None:
    settings = config_file.parse_settings(_minimal(), environ={})
    default = {(k.table, k.name): k.shown_default() for k in KEYS}
    observed = {
        ("server", "host"): f'"{settings.host}"',
        ("server", "port"): str(settings.port),
        ("server", "mcp_path"): f'"{settings.proxy.mcp_path}"',
        ("server", "service_name"): f'"{settings.proxy.service_name}"',
        ("server", "scopes_supported"): str(list(settings.proxy.scopes_supported)).replace(
            "'", '"'
        ),
        ("server", "default_scopes"): str(list(settings.proxy.default_scopes)).replace("'", '"'),
        ("upstream", "api_base_url"): f'"{settings.upstream.userinfo_url.removesuffix("/user")}"',
        ("upstream", "allow_insecure_http"): "false",
        ("upstream", "forward_resource"): str(settings.upstream.forward_resource).lower(),
        ("consent", "mode"): f'"{settings.proxy.consent_mode}"',
        ("store", "url"): f'"{settings.store_url}"',
        ("clients", "cimd"): str(settings.proxy.cimd_enabled).lower(),
        ("clients", "cimd_allow_loopback"): str(settings.proxy.cimd_allow_loopback).lower(),
        ("consent", "primary_color"): f'"{ConsentTheme().palette()["primary"]}"',
        ("consent", "background_color"): f'"{ConsentTheme().palette()["background"]}"',
        ("metrics", "enabled"): str(settings.metrics_enabled).lower(),
    }
    for key, value in observed.items():
        assert default[key] == value, key
    for k in keys_of("limits").values():
        assert k.shown_default() == str(getattr(settings.proxy.bounds, k.name)), k.name
    issuers = config_file.parse_settings(
        {
            **_minimal(),
            "clients": {"static": [_CONFIDENTIAL]},
            "trusted_issuers": [_ISSUER],
            "enterprise_issuers": [{**_ISSUER, "clients": ["agent"]}],
        },
        environ={},
    )
    trusted, enterprise = issuers.proxy.trusted_issuers[0], issuers.proxy.enterprise_issuers[0]
    assert default[("trusted_issuers", "scopes_claim")] == f'"{trusted.scopes_claim}"'
    for table, entry in (("trusted_issuers", trusted), ("enterprise_issuers", enterprise)):
        shown = str(list(entry.algorithms)).replace("'", '"')
        assert default[(table, "algorithms")] == shown, table
    assert trusted.audience == issuers.proxy.resource  # the documented default
    assert settings.gateway_upstream_url is None and default[("gateway", "upstream_url")] is None
    entra = config_file.parse_settings(
        {**_minimal(), "upstream": {**_minimal()["upstream"], "provider": "entra"}}, environ={}
    )
    assert default[("upstream", "tenant")] == f'"{entra.upstream.tenant}"'
    assert entra.upstream.group_overage_url is not None
    graph = entra.upstream.group_overage_url.removesuffix("/v1.0/me/getMemberObjects")
    assert default[("upstream", "graph_url")] == f'"{graph}"'


_WRONG = {
    Type.STRING: 7,
    Type.INTEGER: "7",
    Type.BOOLEAN: "yes",
    Type.STRINGS: "mcp",
    Type.STRING_TABLE: ["a"],
    Type.TABLE: "keys",
    Type.TABLES: {"client_id": "x"},
}


def test_generated_checks_refuse_a_wrong_type_of_every_key_all_in_one_run() -> None:
    """One document, every key of every table wrong: one problem per key, each naming it."""
    document: dict[str, Any] = {}
    arrays = [t.name for t in TABLES if t.array]

    def label(table: str) -> str:
        """How problems name ``table``'s one entry: ``gateway.tools[0]``, ``resources[0].access``."""
        parent, _, key = table.rpartition(".")
        own = f"{key}[0]" if table in arrays else key
        return f"{label(parent)}.{own}" if parent else own

    for table in TABLES:
        if "." not in table.name:
            wrong = {k.name: _WRONG[k.type] for k in keys_of(table.name).values()}
            document[table.name] = [wrong] if table.array else wrong
    nested = [t.name for t in TABLES if "." in t.name]
    for name in nested:  # [[clients.static]], [resources.access]: inside their parent (entry)
        parent, _, key = name.rpartition(".")
        holder = document[parent][0] if parent in arrays else document[parent]
        wrong = {k.name: _WRONG[k.type] for k in keys_of(name).values()}
        holder[key] = [wrong] if name in arrays else wrong
    problems = [str(p) for p in check(document).problems]
    expected = [f"[{label(k.table)}].{k.name}: must be" for k in KEYS]
    # A nested table's key itself ("static", "tools", "access") is well-typed in the document
    # (an array of tables, a table), so only its entries fail.
    for name in nested:
        parent, _, key = name.rpartition(".")
        expected.remove(f"[{label(parent)}].{key}: must be")
    assert len(problems) == len(expected), problems
    for prefix in expected:
        assert sum(p.startswith(prefix) for p in problems) == 1, prefix


def test_reference_markdown_has_a_section_per_table_and_a_row_per_key() -> None:
    text = reference_markdown()
    for table in TABLES:
        title = f"[[{table.name}]]" if table.array else f"[{table.name}]"
        assert f"## `{title}`" in text
        rows = text.split(f"## `{title}`", 1)[1].split("\n## ", 1)[0]
        for k in keys_of(table.name).values():
            assert f"| `{k.name}` |" in rows, k.path
            if k.why:
                assert k.why in rows
            if k.default is REQUIRED:
                assert f"| `{k.name}` | {k.type.value} | **required** |" in rows


_VALUES = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["https://idp.example/x", "http://127.0.0.1:1/x", "github", "oidc", "mcp"]),
    st.integers(-5, 70_000),
    st.booleans(),
    st.lists(st.text(max_size=6), max_size=3),
    st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=2),
)


@st.composite
def _documents(draw: st.DrawFn) -> dict[str, Any]:
    """Documents near the schema: declared tables and keys (and a few unknown ones), any values."""
    document: dict[str, Any] = {}
    for table in TABLES:
        if "." in table.name or not draw(st.booleans()):
            continue
        names = [*keys_of(table.name), "typo"]
        chosen = draw(st.lists(st.sampled_from(names), unique=True, max_size=6))
        entry = {name: draw(_VALUES) for name in chosen}
        # A top-level [[table]] is a list of tables; sometimes written wrongly as one table.
        document[table.name] = [entry] if table.array and draw(st.booleans()) else entry
    if draw(st.booleans()):
        document["sever"] = {}
    return document


@settings(max_examples=300, deadline=None)
@given(_documents())
def test_any_document_gives_settings_or_problems_that_each_name_a_key(
    document: dict[str, Any],
) -> None:
    """Whatever the file holds, loading it yields settings or a ConfigError whose every line is
    `[table]...: why` (never another exception, which would be a traceback for `check-config`)."""
    secret = "never-in-a-message-0123456789"
    upstream = document.get("upstream")
    if isinstance(upstream, dict) and "client_secret" in upstream:
        upstream["client_secret"] = secret
    # Discovery, if the document asks for it, is answered by a stand-in: nothing leaves the process.
    http = httpx.Client(transport=httpx.MockTransport(lambda _request: httpx.Response(404)))
    try:
        config_file.parse_settings(document, environ={}, http=http)
    except config_file.ConfigError as exc:
        assert exc.problems
        for line in exc.problems:
            assert line.startswith("[") and "]" in line and ": " in line, line
            assert secret not in line
    finally:
        http.close()
