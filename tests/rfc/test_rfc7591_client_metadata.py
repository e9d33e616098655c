"""Dynamic client registration metadata: RFC 7591 §2, §3.2.1 (echo), §3.2.2 (errors),
RFC 8252 §8.4 and the MCP 2026-07-28 ``application_type``. Invariant 3 at registration."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oauthproxy_core.client_metadata import ClientMetadata, validate_client_metadata
from oauthproxy_core.errors import InvalidClientMetadataError, InvalidRedirectUriError

LOOPBACK = "http://127.0.0.1:33418/callback"


def test_rfc7591_2_defaults() -> None:
    md = validate_client_metadata({"redirect_uris": ["https://client.example/cb"]})
    assert md.token_endpoint_auth_method == "client_secret_basic"
    assert md.grant_types == ("authorization_code",)
    assert md.response_types == ("code",)
    assert md.application_type == "web"
    assert md.client_name is None
    assert md.scope == ()
    assert md.extra == ()


def test_typical_mcp_client_registration_is_echoed() -> None:
    raw: dict[str, Any] = {
        "redirect_uris": [LOOPBACK, "http://localhost:6274/oauth/callback"],
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "client_name": "MCP Inspector",
        "client_uri": "https://github.com/modelcontextprotocol/inspector",
        "scope": "mcp:read offline_access",
        "software_id": "inspector",
        "software_version": "1.0",
        "contacts": ["ops@example.com"],
        "x_vendor": {"b": [1, 2], "a": None},
        "client_id": "chosen-by-client",
    }
    md = validate_client_metadata(raw)
    assert md.application_type == "native"  # derived: loopback http, type omitted
    echo = md.to_json_dict()
    for name, value in raw.items():
        if name != "client_id":
            assert echo[name] == value, name
    # Server-assigned fields are the server's to set; the client's guess is not echoed.
    assert "client_id" not in echo
    assert echo["application_type"] == "native"
    assert json.loads(json.dumps(echo)) == echo
    # Records are hashable and equal by value.
    assert hash(md) == hash(validate_client_metadata(dict(raw)))
    assert isinstance(md.redirect_uris, tuple)


def test_record_converts_lists_to_tuples() -> None:
    md = ClientMetadata(
        redirect_uris=["https://a.example/cb"],
        token_endpoint_auth_method="none",
        grant_types=["authorization_code"],
        response_types=["code"],
        application_type="web",
        client_name=None,
        scope=[],
        extra=[("k", '"v"')],
    )
    assert md.redirect_uris == ("https://a.example/cb",)
    assert md.extra == (("k", '"v"'),)
    assert md.to_json_dict()["k"] == "v"


@pytest.mark.parametrize(
    ("uris", "application_type", "expected"),
    [
        (["https://client.example/cb"], None, "web"),
        ([LOOPBACK], None, "native"),
        (["com.example.app:/cb"], None, "native"),
        (["https://client.example/cb", "com.example.app:/cb"], None, "native"),
        ([LOOPBACK], "web", "web"),
        (["https://client.example/cb"], "native", "native"),
    ],
)
def test_application_type_effective_value(
    uris: list[str], application_type: str | None, expected: str
) -> None:
    raw: dict[str, Any] = {"redirect_uris": uris}
    if application_type is not None:
        raw["application_type"] = application_type
    md = validate_client_metadata(raw)
    assert md.application_type == expected
    assert md.to_json_dict()["application_type"] == expected


def test_private_use_scheme_rejected_for_declared_web_client() -> None:
    with pytest.raises(InvalidRedirectUriError):
        validate_client_metadata(
            {"redirect_uris": ["com.example.app:/cb"], "application_type": "web"}
        )


@pytest.mark.parametrize(
    "uris",
    [
        None,
        [],
        "https://client.example/cb",
        [1],
        [None],
        [f"https://c.example/{i}" for i in range(21)],
        ["javascript:alert(1)//"],
        ["http://localhost@evil.com/cb"],
        ["https://client.example/cb#x"],
        ["https://client.example/cb", "data:text/html,x"],
        ["http://evil.example/cb"],
        ["file:///etc/passwd"],
    ],
)
def test_invariant_3_bad_redirect_uris_rejected_at_registration(uris: object) -> None:
    raw: dict[str, Any] = {} if uris is None else {"redirect_uris": uris}
    with pytest.raises(InvalidRedirectUriError):
        validate_client_metadata(raw)


@given(
    st.sampled_from(
        [
            "http://localhost@evil.com/cb",
            "http://127.0.0.1\\@evil.com",
            "https://good.example/cb/../evil",
            "https://good.example/cb/%2e%2e/x",
            "javascript:alert(1)//",
            "http://127.0.0.1:80#@evil.com",
            "https://good.example/cb\n",
            "vbscript:x",
        ]
    ),
    st.lists(st.sampled_from(["https://good.example/cb", LOOPBACK]), max_size=3),
    st.sampled_from([None, "web", "native"]),
    st.integers(min_value=0, max_value=3),
)
def test_invariant_3_registration_rejects_dangerous_uris(
    bad: str, good: list[str], application_type: str | None, position: int
) -> None:
    uris = [*good]
    uris.insert(min(position, len(uris)), bad)
    raw: dict[str, Any] = {"redirect_uris": uris}
    if application_type is not None:
        raw["application_type"] = application_type
    with pytest.raises(InvalidRedirectUriError):
        validate_client_metadata(raw)


BASE: dict[str, Any] = {"redirect_uris": ["https://client.example/cb"]}


@pytest.mark.parametrize(
    "extra",
    [
        {"token_endpoint_auth_method": "private_key_jwt"},
        {"token_endpoint_auth_method": ""},
        {"token_endpoint_auth_method": 1},
        {"grant_types": ["implicit"]},
        {"grant_types": ["authorization_code", "client_credentials"]},
        {"grant_types": ["refresh_token"]},
        {"grant_types": []},
        {"grant_types": "authorization_code"},
        {"response_types": ["token"]},
        {"response_types": ["code", "id_token"]},
        {"response_types": []},
        {"application_type": "browser"},
        {"application_type": 1},
        {"client_name": 5},
        {"client_name": "x" * 201},
        {"client_name": "Good\u202eevil"},
        {"client_name": "a\nb"},
        {"client_name": "a\x00b"},
        {"client_uri": "javascript:alert(1)"},
        {"logo_uri": "http://evil.example/logo.png"},
        {"tos_uri": "data:text/html,x"},
        {"policy_uri": 7},
        {"contacts": "ops@example.com"},
        {"contacts": [1]},
        {"software_id": ["x"]},
        {"scope": ["read"]},
        {"scope": "read\twrite"},
        {"jwks": {"keys": []}},
        {"jwks_uri": "https://client.example/jwks"},
        {"client_secret": "chosen"},
        {"x": "a" * 5000},
        {"x": float("nan")},
        {"x": {1, 2}},
    ],
)
def test_rfc7591_3_2_2_invalid_client_metadata(extra: dict[str, Any]) -> None:
    with pytest.raises(InvalidClientMetadataError):
        validate_client_metadata({**BASE, **extra})


def test_auth_method_policy() -> None:
    with pytest.raises(InvalidClientMetadataError):
        validate_client_metadata(BASE, auth_methods=("none",))
    md = validate_client_metadata(
        {**BASE, "token_endpoint_auth_method": "none"}, auth_methods=("none",)
    )
    assert md.token_endpoint_auth_method == "none"


def test_supported_scopes_policy() -> None:
    raw = {**BASE, "scope": "mcp:read admin"}
    assert validate_client_metadata(raw).scope == ("mcp:read", "admin")
    with pytest.raises(InvalidClientMetadataError):
        validate_client_metadata(raw, supported_scopes=("mcp:read",))
    assert validate_client_metadata(raw, supported_scopes=("admin", "mcp:read")).scope == (
        "mcp:read",
        "admin",
    )


def test_bounds() -> None:
    fields = {f"x{i}": i for i in range(49)}
    assert len(validate_client_metadata({**BASE, **fields}).extra) == 49
    with pytest.raises(InvalidClientMetadataError):
        validate_client_metadata({**BASE, **fields, "x49": 0})
    with pytest.raises(InvalidClientMetadataError):
        validate_client_metadata({**BASE, "k" * 129: 1})
    nested: Any = []
    for _ in range(100_000):
        nested = [nested]
    with pytest.raises(InvalidClientMetadataError):
        validate_client_metadata({**BASE, "deep": nested})
    with pytest.raises(InvalidClientMetadataError):
        validate_client_metadata(["redirect_uris"])  # type: ignore[arg-type]


def test_client_name_empty_is_absent_and_unicode_allowed() -> None:
    assert validate_client_metadata({**BASE, "client_name": ""}).client_name is None
    assert validate_client_metadata({**BASE, "client_name": "Café ☕"}).client_name == "Café ☕"


def test_duplicates_collapse_in_order() -> None:
    md = validate_client_metadata(
        {
            "redirect_uris": [LOOPBACK, "https://c.example/cb", LOOPBACK],
            "grant_types": ["refresh_token", "authorization_code", "refresh_token"],
        }
    )
    assert md.redirect_uris == (LOOPBACK, "https://c.example/cb")
    assert md.grant_types == ("refresh_token", "authorization_code")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)


@given(st.dictionaries(st.from_regex(r"x_[a-z]{1,8}", fullmatch=True), json_values, max_size=5))
def test_unknown_fields_are_kept_and_echoed(unknown: dict[str, Any]) -> None:
    md = validate_client_metadata({**BASE, **unknown})
    echo = md.to_json_dict()
    for name, value in unknown.items():
        assert echo[name] == value
    assert echo["redirect_uris"] == BASE["redirect_uris"]
    assert set(echo) == set(unknown) | {
        "redirect_uris",
        "token_endpoint_auth_method",
        "grant_types",
        "response_types",
        "application_type",
    }


@given(st.dictionaries(st.text(max_size=12), json_values, max_size=8))
def test_arbitrary_metadata_yields_record_or_typed_error(raw: dict[str, Any]) -> None:
    try:
        md = validate_client_metadata({**BASE, **raw})
    except (InvalidClientMetadataError, InvalidRedirectUriError):
        return
    assert md.redirect_uris
    assert "authorization_code" in md.grant_types
    assert md.response_types == ("code",)
