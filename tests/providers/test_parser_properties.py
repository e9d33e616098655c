"""Hypothesis: the provider parsers accept every valid shape and reject everything else with a typed
``UpstreamError`` (never another exception, never upstream text in the message)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from oauthproxy_core.effects import HttpResponse
from oauthproxy_core.providers import (
    entra_profile,
    github_profile,
    parse_jwks_response,
    verify_id_token,
)
from oauthproxy_core.upstream import (
    UpstreamError,
    parse_identity,
    parse_token_response,
    unprefix_scopes,
)

from .idp import RSA_KEY, jwks_of, sign

NOW = 1_800_000_000
SCOPE = st.text(alphabet="abcdefghijklmnopqrstuvwxyz:._-/", min_size=1, max_size=12)
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
ENTRA = entra_profile(client_id="app", client_secret="s", app_id_uri="api://app")
GH = github_profile(client_id="c", client_secret="s")


def resp(body: bytes, status: int = 200, **headers: str) -> HttpResponse:
    return HttpResponse(
        status=status, headers=(("Content-Type", "application/json"), *headers.items()), body=body
    )


@given(
    scopes=st.lists(SCOPE, max_size=5),
    expires=st.none() | st.integers(0, 10**6),
    refresh=st.none() | st.text(alphabet="abcXYZ019-_.", min_size=1, max_size=30),
    refresh_expires=st.none() | st.integers(0, 10**8),
)
def test_valid_token_shapes_parse(
    scopes: list[str], expires: int | None, refresh: str | None, refresh_expires: int | None
) -> None:
    body: dict[str, Any] = {"access_token": "at", "token_type": "bearer", "scope": " ".join(scopes)}
    if expires is not None:
        body["expires_in"] = expires
    if refresh is not None:
        body["refresh_token"] = refresh
    if refresh_expires is not None:
        body["refresh_token_expires_in"] = refresh_expires
    t = parse_token_response(resp(json.dumps(body).encode()), now=NOW, profile=ENTRA)
    assert t.expires_at == (None if expires is None else NOW + expires)
    assert t.refresh_expires_at == (
        None if refresh is None or refresh_expires is None else NOW + refresh_expires
    )
    assert all(not s.startswith("api://app/") or s == "api://app/" for s in t.scope)


@settings(max_examples=300)
@given(
    body=st.dictionaries(
        st.sampled_from(
            [
                "access_token",
                "token_type",
                "expires_in",
                "refresh_token",
                "refresh_token_expires_in",
                "scope",
                "id_token",
                "error",
            ]
        ),
        JSONISH,
    ),
    status=st.sampled_from([200, 400, 401, 403, 429, 500, 503]),
)
def test_token_parser_is_total(body: dict[str, Any], status: int) -> None:
    try:
        parse_token_response(resp(json.dumps(body).encode(), status), now=NOW, profile=ENTRA)
    except UpstreamError as exc:
        assert exc.error in ("invalid_grant", "temporarily_unavailable", "server_error")


@settings(max_examples=300)
@given(
    body=st.dictionaries(st.sampled_from(["id", "login", "name", "email", "sub"]), JSONISH),
    header=st.none() | st.text(max_size=40),
    status=st.sampled_from([200, 401, 403, 404, 500]),
)
def test_identity_parser_is_total(body: dict[str, Any], header: str | None, status: int) -> None:
    headers = (
        {} if header is None or any(c in header for c in "\r\n") else {"X-OAuth-Scopes": header}
    )
    try:
        ident = parse_identity(GH, resp(json.dumps(body).encode(), status, **headers))
    except UpstreamError:
        return
    assert ident.subject == str(body["id"])
    assert ident.scopes is None or all(" " not in s and "," not in s for s in ident.scopes)


@settings(max_examples=200)
@given(body=st.binary(max_size=200) | JSONISH.map(lambda v: json.dumps(v).encode()))
def test_jwks_parser_is_total(body: bytes) -> None:
    try:
        doc = parse_jwks_response(resp(body))
    except UpstreamError:
        return
    assert isinstance(doc["keys"], list)


@settings(max_examples=200)
@given(
    token=st.text(max_size=300)
    | st.builds(
        sign,
        st.dictionaries(
            st.sampled_from(["iss", "aud", "sub", "exp", "iat", "nonce", "tid", "azp"]), JSONISH
        ),
    )
)
def test_id_token_verification_is_total(token: str) -> None:
    try:
        verify_id_token(ENTRA, token, jwks_of(RSA_KEY), now=NOW, nonce="n")
    except UpstreamError:
        return
    raise AssertionError("a garbage ID token verified")


@given(st.lists(SCOPE, max_size=6))
def test_unprefix_round_trip(scopes: list[str]) -> None:
    prefixed = ["api://app/" + s for s in scopes]
    assert unprefix_scopes(ENTRA, prefixed) == tuple(dict.fromkeys(scopes))
