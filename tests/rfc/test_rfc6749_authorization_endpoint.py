"""The authorization endpoint, RFC 6749 §4.1.1-4.1.2.1 as profiled by OAuth 2.1 §4.1.1, with
RFC 7636 §4.3-4.4, RFC 8707 §2, RFC 9207 §2 and RFC 8252 §7.3.

spec/security.md 2: client first, then redirect URI, both answered by a rendered page when wrong; only
then may an error travel to the redirect URI, carrying the client's ``state`` byte for byte and
exactly one ``iss`` (4). A request without an S256 challenge never creates a transaction (6)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest

from oauthproxy_core import codec
from oauthproxy_core.http import Response
from oauthproxy_core.records import Transaction
from tests.harness import (
    ISSUER,
    UPSTREAM,
    VERIFIER,
    Browser,
    Harness,
    UpstreamUser,
    consent_fields,
    redirect_params,
)

REDIRECT = "http://127.0.0.1:33418/callback"


def _assert_page(resp: Response, status: int = 400) -> None:
    assert resp.status == status, (resp.status, resp.body)
    assert resp.header("location") is None
    assert (resp.header("content-type") or "").startswith("text/html")
    assert resp.header("x-frame-options") == "DENY"


def _tx_records(h: Harness) -> list[Any]:
    return [r for r in h.store.dump() if r[0] == "tx"]


def _query_pairs(resp: Response) -> list[tuple[str, str]]:
    loc = resp.header("location")
    assert loc is not None
    return parse_qsl(urlsplit(loc).query, keep_blank_values=True)


def _assert_error_redirect(
    resp: Response, error: str, *, state: str | None = "client-state-1", to: str = REDIRECT
) -> dict[str, str]:
    assert resp.status == 302, (resp.status, resp.body)
    loc = resp.header("location") or ""
    assert loc.startswith(to + "?"), loc
    pairs = _query_pairs(resp)
    assert [k for k, _ in pairs].count("iss") == 1
    params = redirect_params(resp)
    assert params["error"] == error
    assert params["iss"] == ISSUER
    assert "code" not in params
    if state is None:
        assert "state" not in params
    else:
        assert params["state"] == state
    assert resp.header("cache-control") == "no-store"
    return params


def _url(**params: str | None) -> str:
    return "/authorize?" + urlencode({k: v for k, v in params.items() if v is not None})


# -- spec/security.md 2: order of validation --------------------------------------------------------


def test_unknown_client_gets_a_page_never_a_redirect() -> None:
    h = Harness()
    client = h.register()
    resp = h.request("GET", h.authorize_url(client, VERIFIER, client_id="no-such-client"))
    _assert_page(resp)
    assert b"invalid_client" in resp.body
    assert not _tx_records(h)


def test_missing_client_id_gets_a_page() -> None:
    h = Harness()
    client = h.register()
    resp = h.request("GET", h.authorize_url(client, VERIFIER, client_id=None))  # type: ignore[arg-type]
    _assert_page(resp)


def test_unknown_client_with_every_other_error_still_gets_a_page() -> None:
    h = Harness()
    resp = h.request(
        "GET",
        _url(client_id="ghost", redirect_uri="https://evil.example/cb", response_type="token"),
    )
    _assert_page(resp)


@pytest.mark.parametrize(
    "redirect_uri",
    [
        "https://evil.example/callback",
        "http://127.0.0.1:33418/callback/",
        "http://127.0.0.1:33418/Callback",
        "http://127.0.0.1:33418/callback?x=1",
        "http://127.0.0.1:33418/callback/../callback",
        "http://localhost:33418/callback",
        "http://127.0.0.1:33418@evil.example/callback",
        "javascript:alert(1)",
        "",
    ],
)
def test_unregistered_redirect_uri_gets_a_page_even_with_other_errors(redirect_uri: str) -> None:
    h = Harness()
    client = h.register()
    # Other errors present too (response_type, no PKCE, bad scope): the redirect URI wins.
    resp = h.request(
        "GET",
        _url(
            client_id=client["client_id"],
            redirect_uri=redirect_uri,
            response_type="token",
            scope="admin",
            state="s",
        ),
    )
    _assert_page(resp)
    assert not _tx_records(h)


def test_missing_redirect_uri_with_two_registered_gets_a_page() -> None:
    h = Harness()
    client = h.register(redirect_uris=[REDIRECT, "http://127.0.0.1:1/other"])
    resp = h.request("GET", h.authorize_url(client, VERIFIER, redirect_uri=None))  # type: ignore[arg-type]
    _assert_page(resp)


def test_missing_redirect_uri_with_one_registered_uses_it() -> None:
    h = Harness()
    client = h.register()
    resp = h.request(
        "GET",
        h.authorize_url(client, VERIFIER, redirect_uri=None, response_type="token"),  # type: ignore[arg-type]
    )
    _assert_error_redirect(resp, "unsupported_response_type")


@pytest.mark.parametrize(
    "state",
    ["client-state-1", "a b+c&d=e/f?g#h%20", "ünïcødé-☃", "'\"<>", "x" * 500, ""],
)
def test_invariant_4_error_redirect_carries_state_byte_for_byte_and_one_iss(state: str) -> None:
    h = Harness()
    client = h.register()
    resp = h.request("GET", h.authorize_url(client, VERIFIER, response_type="token", state=state))
    _assert_error_redirect(resp, "unsupported_response_type", state=state)


def test_invariant_4_no_state_sent_means_no_state_returned() -> None:
    h = Harness()
    client = h.register()
    resp = h.request("GET", h.authorize_url(client, VERIFIER, response_type="token", state=None))  # type: ignore[arg-type]
    _assert_error_redirect(resp, "unsupported_response_type", state=None)


def test_invariant_4_registered_query_is_kept_and_iss_appears_once() -> None:
    h = Harness()
    uri = "http://127.0.0.1:33418/callback?tenant=a"
    client = h.register(redirect_uris=[uri])
    resp = h.request("GET", h.authorize_url(client, VERIFIER, response_type="token"))
    assert resp.status == 302
    loc = resp.header("location") or ""
    assert loc.startswith(uri + "&")
    pairs = _query_pairs(resp)
    assert [k for k, _ in pairs].count("iss") == 1
    assert ("tenant", "a") in pairs


# -- PKCE (spec/security.md 6) -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {"code_challenge": None},
        {"code_challenge": ""},
        {"code_challenge_method": None},
        {"code_challenge_method": "plain"},
        {"code_challenge_method": "s256"},
        {"code_challenge_method": "S512"},
        {"code_challenge": "too-short"},
        {"code_challenge": VERIFIER, "code_challenge_method": "plain"},
    ],
)
def test_invariant_6_missing_plain_or_unknown_challenge_creates_no_transaction(
    overrides: dict[str, str | None],
) -> None:
    h = Harness()
    client = h.register()
    resp = h.request("GET", h.authorize_url(client, VERIFIER, **overrides))  # type: ignore[arg-type]
    _assert_error_redirect(resp, "invalid_request")
    assert not _tx_records(h)
    assert not h.upstream.calls


def test_unsupported_response_type() -> None:
    h = Harness()
    client = h.register()
    for response_type in ("token", "code token", "id_token", ""):
        resp = h.request("GET", h.authorize_url(client, VERIFIER, response_type=response_type))
        _assert_error_redirect(resp, "unsupported_response_type")
    resp = h.request("GET", h.authorize_url(client, VERIFIER, response_type=None))  # type: ignore[arg-type]
    _assert_error_redirect(resp, "unsupported_response_type")
    assert not _tx_records(h)


@pytest.mark.parametrize("scope", ["admin", "mcp admin", "mcp\tread", 'mcp "x"'])
def test_invalid_scope(scope: str) -> None:
    h = Harness()
    client = h.register()
    resp = h.request("GET", h.authorize_url(client, VERIFIER, scope=scope))
    _assert_error_redirect(resp, "invalid_scope")
    assert not _tx_records(h)


def test_a_registration_may_ask_for_more_than_its_registered_scope_to_step_up() -> None:
    """MCP step-up: the client registered with its first challenge's scope asks the same
    registration for a wider one; only what the server supports is accepted."""
    h = Harness()
    client = h.register(scope="mcp")
    resp = h.request("GET", h.authorize_url(client, VERIFIER, scope="mcp offline_access"))
    assert resp.status == 302
    assert (resp.header("location") or "").startswith(ISSUER + "/consent?txn=")
    (record,) = _tx_records(h)
    assert codec.decode(record[2], Transaction).scopes == ("mcp", "offline_access")
    unsupported = h.request("GET", h.authorize_url(client, VERIFIER, scope="mcp admin"))
    _assert_error_redirect(unsupported, "invalid_scope")


@pytest.mark.parametrize(
    "resource",
    [
        "https://evil.example/mcp",
        "https://proxy.example/other",
        "https://proxy.example/mcp#frag",
        "http://proxy.example/mcp",
        "not a uri",
    ],
)
def test_rfc8707_foreign_resource_is_invalid_target(resource: str) -> None:
    h = Harness()
    client = h.register()
    resp = h.request("GET", h.authorize_url(client, VERIFIER, resource=resource))
    _assert_error_redirect(resp, "invalid_target")
    assert not _tx_records(h)


def test_rfc8707_canonical_spelling_of_own_resource_is_accepted() -> None:
    h = Harness()
    client = h.register()
    resp = h.request(
        "GET", h.authorize_url(client, VERIFIER, resource="https://PROXY.example/mcp/")
    )
    assert resp.status == 302
    assert (resp.header("location") or "").startswith(ISSUER + "/consent?txn=")


def test_request_objects_are_refused() -> None:
    h = Harness()
    client = h.register()
    resp = h.request("GET", h.authorize_url(client, VERIFIER, request_uri="https://evil/x"))
    _assert_error_redirect(resp, "invalid_request")


def test_request_without_scope_uses_the_defaults() -> None:
    h = Harness()
    client = h.register()
    browser = Browser()
    resp = h.request("GET", h.authorize_url(client, VERIFIER), browser=browser)
    assert resp.status == 302
    page = h.request("GET", (resp.header("location") or "").removeprefix(ISSUER), browser=browser)
    assert page.status == 200
    assert b"<code>mcp</code>" in page.body
    assert b"offline_access" not in page.body
    code = h.full_code(client, VERIFIER)
    tok = h.token(
        {
            "grant_type": "authorization_code",
            "code": code,
            "client_id": client["client_id"],
            "redirect_uri": REDIRECT,
            "code_verifier": VERIFIER,
        }
    )
    assert tok.status == 200
    assert json.loads(tok.body)["scope"] == "mcp"


@pytest.mark.parametrize("name", ["state", "client_id", "redirect_uri", "code_challenge", "scope"])
def test_rfc6749_3_1_repeated_parameters_are_rejected(name: str) -> None:
    h = Harness()
    client = h.register()
    url = h.authorize_url(client, VERIFIER, scope="mcp")
    value = dict(parse_qsl(urlsplit(url).query))[name]
    resp = h.request("GET", url + "&" + urlencode({name: value}))
    # Detected while parsing, before the client is validated: a page, never a redirect.
    _assert_page(resp)
    assert not _tx_records(h)


def test_authorize_post_form_is_equivalent_to_get() -> None:
    h = Harness()
    client = h.register()
    query = urlsplit(h.authorize_url(client, VERIFIER)).query
    resp = h.form("/authorize", dict(parse_qsl(query)))
    assert resp.status == 302
    assert (resp.header("location") or "").startswith(ISSUER + "/consent?txn=")


def _consent_and_callback(h: Harness, consent_url: str, browser: Browser) -> Response:
    page = h.request("GET", consent_url.removeprefix(ISSUER), browser=browser)
    assert page.status == 200, page.body
    resp = h.form("/consent", {**consent_fields(page), "decision": "approve"}, browser=browser)
    assert resp.status == 303
    callback = h.upstream.login(resp.header("location") or "", UpstreamUser(id=5, login="dup"))
    return h.request("GET", callback.removeprefix(ISSUER), browser=browser)


def test_duplicate_get_of_authorize_is_tolerated_and_both_are_usable() -> None:
    h = Harness()
    client = h.register()
    browser = Browser()
    url = h.authorize_url(client, VERIFIER)
    first = h.request("GET", url, browser=browser)
    second = h.request("GET", url, browser=browser)
    assert first.status == second.status == 302
    loc1, loc2 = first.header("location") or "", second.header("location") or ""
    assert loc1.startswith(ISSUER + "/consent?txn=") and loc2.startswith(ISSUER + "/consent?txn=")
    assert loc1 != loc2
    # Finish the second first, then the first: each yields its own working code.
    codes = []
    for loc in (loc2, loc1):
        resp = _consent_and_callback(h, loc, browser)
        assert resp.status == 302, resp.body
        params = redirect_params(resp)
        assert params["state"] == "client-state-1"
        codes.append(params["code"])
    assert codes[0] != codes[1]
    for code in codes:
        tok = h.token(
            {
                "grant_type": "authorization_code",
                "code": code,
                "client_id": client["client_id"],
                "redirect_uri": REDIRECT,
                "code_verifier": VERIFIER,
            }
        )
        assert tok.status == 200, tok.body


# -- RFC 8252 §7.3 loopback port variance (spec/security.md 1) ---------------------------------------


@pytest.mark.parametrize(
    ("registered", "requested"),
    [
        ("http://127.0.0.1:33418/callback", "http://127.0.0.1:40000/callback"),
        ("http://127.0.0.1/callback", "http://127.0.0.1:40000/callback"),
        ("http://[::1]:33418/callback", "http://[::1]:1234/callback"),
        ("http://localhost:33418/callback", "http://localhost:5555/callback"),
    ],
)
def test_rfc8252_7_3_loopback_port_may_vary(registered: str, requested: str) -> None:
    h = Harness()
    client = h.register(redirect_uris=[registered])
    browser = Browser()
    resp = h.request(
        "GET", h.authorize_url(client, VERIFIER, redirect_uri=requested), browser=browser
    )
    assert resp.status == 302, resp.body
    resp = _consent_and_callback(h, resp.header("location") or "", browser)
    assert resp.status == 302
    assert (resp.header("location") or "").startswith(requested + "?")
    code = redirect_params(resp)["code"]
    base = {
        "grant_type": "authorization_code",
        "code": code,
        "client_id": client["client_id"],
        "code_verifier": VERIFIER,
    }
    tok = h.token({**base, "redirect_uri": requested})
    assert tok.status == 200, tok.body


def test_rfc8252_7_3_port_variant_must_be_redeemed_with_the_requested_uri() -> None:
    h = Harness()
    client = h.register()
    browser = Browser()
    requested = "http://127.0.0.1:40000/callback"
    resp = h.request(
        "GET", h.authorize_url(client, VERIFIER, redirect_uri=requested), browser=browser
    )
    resp = _consent_and_callback(h, resp.header("location") or "", browser)
    code = redirect_params(resp)["code"]
    tok = h.token(
        {
            "grant_type": "authorization_code",
            "code": code,
            "client_id": client["client_id"],
            "code_verifier": VERIFIER,
            "redirect_uri": REDIRECT,
        }
    )
    assert tok.status == 400
    assert json.loads(tok.body)["error"] == "invalid_grant"


@pytest.mark.parametrize(
    ("registered", "requested"),
    [
        ("https://app.example/cb", "https://app.example:8443/cb"),
        ("https://app.example:8443/cb", "https://app.example/cb"),
        ("https://127.0.0.1:8443/cb", "https://127.0.0.1:9443/cb"),
        ("http://127.0.0.1:33418/callback", "http://127.0.0.1:40000/other"),
        ("http://127.0.0.1:33418/callback", "http://[::1]:33418/callback"),
        ("http://127.0.0.1:33418/callback", "http://127.0.0.1:40000/callback?x=1"),
    ],
)
def test_rfc8252_only_http_loopback_ports_are_tolerated(registered: str, requested: str) -> None:
    h = Harness()
    client = h.register(redirect_uris=[registered])
    resp = h.request("GET", h.authorize_url(client, VERIFIER, redirect_uri=requested))
    _assert_page(resp)
    assert not _tx_records(h)


def test_valid_request_goes_to_consent_without_contacting_upstream() -> None:
    h = Harness()
    client = h.register()
    resp = h.request("GET", h.authorize_url(client, VERIFIER))
    assert resp.status == 302
    loc = resp.header("location") or ""
    assert loc.startswith(ISSUER + "/consent?txn=")
    assert not loc.startswith(UPSTREAM)
    assert not h.upstream.calls
    assert len(_tx_records(h)) == 1
    assert not [r for r in h.store.dump() if r[0] == "ustate"]
