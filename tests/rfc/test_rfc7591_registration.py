"""Dynamic Client Registration through the registration endpoint, RFC 7591 §3.

201 with every registered value echoed (§3.2.1; spec/interop.md), a secret only for secret-based methods,
identifiers and secrets of unreserved characters with at least 128 bits (spec/security.md 22, 25),
``Cache-Control: no-store`` (26), §3.2.2 errors as 4xx JSON and never a 5xx (28, 29), and only the
secret's digest at rest (24)."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oauthproxy_core.http import Response
from tests.harness import Harness

UNRESERVED = re.compile(r"[A-Za-z0-9\-._~]+")
JSON_CT = (("content-type", "application/json"),)


def _post(h: Harness, body: bytes, headers: tuple[tuple[str, str], ...] = JSON_CT) -> Response:
    return h.request("POST", "/register", body=body, headers=headers)


def _register(h: Harness, meta: dict[str, Any]) -> Response:
    return _post(h, json.dumps(meta).encode())


def _error(resp: Response, status: int, code: str) -> None:
    assert resp.status == status, (resp.status, resp.body)
    assert resp.header("content-type") == "application/json"
    assert resp.header("cache-control") == "no-store"
    body = json.loads(resp.body)
    assert body["error"] == code, body
    assert isinstance(body["error"], str)


def test_rfc7591_3_2_1_echoes_all_metadata_with_201() -> None:
    h = Harness()
    meta = {
        "redirect_uris": ["http://127.0.0.1:33418/callback", "http://localhost:9999/cb"],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "client_secret_post",
        "client_name": "Claude",
        "application_type": "native",
        "software_id": "com.example.claude",
        "software_version": "1.2.3",
        "scope": "mcp",
        "x_vendor_extension": {"nested": [1, 2, 3]},
    }
    resp = _register(h, meta)
    assert resp.status == 201, resp.body
    assert resp.header("content-type") == "application/json"
    assert resp.header("cache-control") == "no-store"
    assert resp.header("access-control-allow-origin") == "*"
    body = json.loads(resp.body)
    for name, value in meta.items():
        assert body[name] == value, name
    assert body["client_id"]
    assert isinstance(body["client_id_issued_at"], int)
    assert body["client_id_issued_at"] == h.clock.now
    assert body["client_secret"]
    assert body["client_secret_expires_at"] == 0


def test_rfc7591_2_defaults_are_echoed() -> None:
    h = Harness()
    resp = _register(h, {"redirect_uris": ["https://app.example/cb"]})
    assert resp.status == 201
    body = json.loads(resp.body)
    # RFC 7591 §2: the default method is client_secret_basic, the default grant authorization_code.
    assert body["token_endpoint_auth_method"] == "client_secret_basic"
    assert body["grant_types"] == ["authorization_code"]
    assert body["response_types"] == ["code"]
    assert body["redirect_uris"] == ["https://app.example/cb"]
    assert body["client_secret"]


def test_rfc7591_server_assigned_fields_are_not_taken_from_the_client() -> None:
    h = Harness()
    resp = _register(
        h,
        {
            "redirect_uris": ["https://app.example/cb"],
            "token_endpoint_auth_method": "none",
            "client_id": "chosen-by-attacker",
            "client_id_issued_at": 1,
        },
    )
    assert resp.status == 201
    body = json.loads(resp.body)
    assert body["client_id"] != "chosen-by-attacker"
    assert body["client_id_issued_at"] == h.clock.now


def test_rfc7591_3_2_1_public_client_gets_no_secret() -> None:
    h = Harness()
    resp = _register(
        h, {"redirect_uris": ["http://127.0.0.1:1/cb"], "token_endpoint_auth_method": "none"}
    )
    assert resp.status == 201
    body = json.loads(resp.body)
    assert "client_secret" not in body
    assert "client_secret_expires_at" not in body
    assert body["token_endpoint_auth_method"] == "none"


@pytest.mark.parametrize("method", ["client_secret_post", "client_secret_basic"])
def test_rfc7591_secret_methods_get_a_secret(method: str) -> None:
    h = Harness()
    resp = _register(
        h, {"redirect_uris": ["http://127.0.0.1:1/cb"], "token_endpoint_auth_method": method}
    )
    body = json.loads(resp.body)
    assert resp.status == 201
    assert body["token_endpoint_auth_method"] == method
    assert UNRESERVED.fullmatch(body["client_secret"])


@settings(max_examples=25, deadline=None)
@given(st.integers(min_value=0, max_value=2**32))
def test_invariants_22_25_ids_and_secrets_unreserved_and_at_least_128_bits(seed: int) -> None:
    h = Harness(seed=seed)
    seen: set[str] = set()
    for _ in range(3):
        resp = _register(
            h,
            {
                "redirect_uris": ["http://127.0.0.1:1/cb"],
                "token_endpoint_auth_method": "client_secret_basic",
            },
        )
        body = json.loads(resp.body)
        for value in (body["client_id"], body["client_secret"]):
            assert UNRESERVED.fullmatch(value), value
            # base64url carries 6 bits per character: 22 characters are >= 128 bits.
            assert len(value) >= 22
            assert value not in seen
            seen.add(value)
        # The secret is not derived from the id.
        assert body["client_secret"][:22] != body["client_id"][:22]


def test_invariant_24_store_holds_only_a_digest_of_the_secret() -> None:
    h = Harness()
    body = json.loads(
        _register(
            h,
            {
                "redirect_uris": ["http://127.0.0.1:1/cb"],
                "token_endpoint_auth_method": "client_secret_post",
            },
        ).body
    )
    secret = body["client_secret"]
    dump = h.store.dump()
    assert dump
    blob = b"".join(k.encode() + v for _, k, v in dump)
    assert secret.encode() not in blob
    assert hashlib.sha256(secret.encode()).hexdigest().encode() in blob


@pytest.mark.parametrize(
    "uri",
    [
        "javascript:alert(1)",
        "javascript://example.com/%0Aalert(1)",
        "data:text/html,<script>alert(1)</script>",
        "file:///etc/passwd",
        "vbscript:msgbox(1)",
        "https://app.example/cb#frag",
        "http://localhost@evil.com/cb",
        "https://user:pass@app.example/cb",
        "http://127.0.0.1\\@evil.com/cb",
        "https://app.example/cb/../evil",
        "https://app.example/cb/%2e%2e/evil",
        "https://app.example/c b",
        "https://app.example/cb\n",
        "http://evil.example/cb",
        "/relative/cb",
        "",
    ],
)
def test_rfc7591_3_2_2_invalid_redirect_uri(uri: str) -> None:
    h = Harness()
    _error(_register(h, {"redirect_uris": [uri]}), 400, "invalid_redirect_uri")
    assert not [r for r in h.store.dump() if r[0] == "client"]


@pytest.mark.parametrize(
    "meta",
    [
        {"redirect_uris": []},
        {"redirect_uris": "https://app.example/cb"},
        {},
    ],
)
def test_rfc7591_3_2_2_missing_or_malformed_redirect_uris(meta: dict[str, Any]) -> None:
    _error(_register(Harness(), meta), 400, "invalid_redirect_uri")


@pytest.mark.parametrize(
    "extra",
    [
        {"token_endpoint_auth_method": "private_key_jwt"},
        {"token_endpoint_auth_method": 7},
        {"grant_types": ["implicit"]},
        {"grant_types": ["refresh_token"]},
        {"grant_types": ["authorization_code", "client_credentials"]},
        {"response_types": ["token"]},
        {"client_secret": "i-chose-my-own"},
        {"jwks_uri": "https://app.example/jwks"},
        {"scope": "admin"},
        {"application_type": "service"},
        {"client_name": "evil\u202egnp.exe"},
        {"client_name": 42},
        {"logo_uri": "javascript:alert(1)"},
    ],
)
def test_rfc7591_3_2_2_invalid_client_metadata(extra: dict[str, Any]) -> None:
    h = Harness()
    meta = {"redirect_uris": ["https://app.example/cb"], **extra}
    _error(_register(h, meta), 400, "invalid_client_metadata")
    assert not [r for r in h.store.dump() if r[0] == "client"]


def test_private_use_scheme_needs_native_application_type() -> None:
    h = Harness()
    ok = _register(h, {"redirect_uris": ["com.example.app:/oauth/cb"]})
    assert ok.status == 201
    assert json.loads(ok.body)["application_type"] == "native"
    web = _register(h, {"redirect_uris": ["com.example.app:/cb"], "application_type": "web"})
    _error(web, 400, "invalid_redirect_uri")


@pytest.mark.parametrize(
    "ctype", [None, "text/plain", "application/x-www-form-urlencoded", "application/jsonx"]
)
def test_wrong_content_type_is_invalid_request(ctype: str | None) -> None:
    h = Harness()
    headers = () if ctype is None else (("content-type", ctype),)
    body = json.dumps({"redirect_uris": ["https://app.example/cb"]}).encode()
    _error(_post(h, body, headers), 400, "invalid_request")


def test_content_type_with_charset_is_accepted() -> None:
    h = Harness()
    body = json.dumps({"redirect_uris": ["https://app.example/cb"]}).encode()
    resp = _post(h, body, (("content-type", "application/json; charset=utf-8"),))
    assert resp.status == 201


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{",
        b"{'redirect_uris': []}",
        b"[]",
        b'"string"',
        b"null",
        b"\xff\xfe\x00{",
        b'{"redirect_uris": ["https://app.example/cb"]} trailing',
        b'{"redirect_uris": ["https://app.example/cb"], "x": NaN}',
    ],
)
def test_malformed_json_is_a_4xx_json_error(body: bytes) -> None:
    resp = _post(Harness(), body)
    assert 400 <= resp.status < 500, resp.status
    assert resp.header("cache-control") == "no-store"
    err = json.loads(resp.body)
    assert err["error"] in ("invalid_request", "invalid_client_metadata")


@pytest.mark.parametrize(
    "body",
    [
        b'{"redirect_uris": ["https://app.example/cb"], "x": ' + b"[" * 17 + b"]" * 17 + b"}",
        b'{"redirect_uris": ["https://app.example/cb"], "x": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        b"[" * 60_000,
        b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
    ],
    ids=["depth-18", "depth-5001", "unclosed-60000", "objects-10000"],
)
def test_json_depth_bomb_is_rejected_without_5xx(body: bytes) -> None:
    assert len(body) <= 64 * 1024
    resp = _post(Harness(), body)
    _error(resp, 400, "invalid_request")


def test_huge_body_is_413_json() -> None:
    h = Harness()
    meta = {"redirect_uris": ["https://app.example/cb"], "client_name": "A", "pad": "x" * 70_000}
    resp = _register(h, meta)
    _error(resp, 413, "invalid_request")
    assert not h.store.dump()


def test_too_many_fields_is_invalid_client_metadata() -> None:
    meta: dict[str, Any] = {"redirect_uris": ["https://app.example/cb"]}
    meta.update({f"f{i}": i for i in range(60)})
    _error(_register(Harness(), meta), 400, "invalid_client_metadata")


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_registration_other_methods_are_405(method: str) -> None:
    resp = Harness().request(method, "/register")
    assert resp.status == 405
    assert resp.header("allow") == "POST"
    assert json.loads(resp.body)["error"] == "method_not_allowed"


@settings(max_examples=150, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
        max_leaves=20,
    )
)
def test_invariant_29_arbitrary_json_metadata_never_5xx(value: Any) -> None:
    h = Harness()
    body = {"redirect_uris": ["https://app.example/cb"], "x": value}
    if isinstance(value, dict):
        body = {**value, "redirect_uris": ["https://app.example/cb"]}
    resp = _post(h, json.dumps(body).encode())
    assert resp.status in (201, 400, 413), resp.status
    parsed = json.loads(resp.body)
    if resp.status != 201:
        assert isinstance(parsed["error"], str)
