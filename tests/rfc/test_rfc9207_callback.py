"""The upstream provider's redirect back to the proxy: RFC 6749 §4.1.2 from the proxy's side as a
client, RFC 9207 §2.4 (``iss`` checked against the upstream issuer) and spec/security.md 11-14: a callback
is honoured once, from the browser that approved consent, before expiry, for the upstream code of its
own transaction; anything else issues nothing and, where the browser is wrong, causes no upstream
traffic."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest

from oauthproxy_core import HttpFailure, HttpResponse
from oauthproxy_core.browser_binding import binding_cookie
from oauthproxy_core.http import Response
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
USER = UpstreamUser(id=42, login="octocat")


def _approve(h: Harness, client: dict[str, Any], browser: Browser, **params: str) -> str:
    """authorize -> consent -> approve; returns the upstream authorize URL."""
    resp = h.request("GET", h.authorize_url(client, VERIFIER, **params), browser=browser)
    assert resp.status == 302
    page = h.request("GET", (resp.header("location") or "").removeprefix(ISSUER), browser=browser)
    resp = h.form("/consent", {**consent_fields(page), "decision": "approve"}, browser=browser)
    assert resp.status == 303
    loc = resp.header("location") or ""
    assert loc.startswith(UPSTREAM + "/authorize?")
    return loc


def _callback(h: Harness, url: str, browser: Browser | None) -> Response:
    return h.request("GET", url.removeprefix(ISSUER), browser=browser)


def _token_calls(h: Harness) -> list[Any]:
    return [c for c in h.upstream.calls if urlsplit(c.url).path == "/token"]


def _issued_nothing(h: Harness, resp: Response) -> None:
    loc = resp.header("location")
    if loc is not None:
        assert "code" not in dict(parse_qsl(urlsplit(loc).query))
        assert loc.startswith(REDIRECT + "?")
    assert not [r for r in h.store.dump() if r[0] in ("code", "grant")]


def _with(url: str, **changes: str | None) -> str:
    parts = urlsplit(url)
    q = dict(parse_qsl(parts.query))
    for k, v in changes.items():
        if v is None:
            q.pop(k, None)
        else:
            q[k] = v
    return parts._replace(query=urlencode(q)).geturl()


def test_successful_callback_issues_one_code_with_state_and_iss() -> None:
    h = Harness()
    client = h.register()
    browser = Browser()
    callback = h.upstream.login(_approve(h, client, browser), USER)
    resp = _callback(h, callback, browser)
    assert resp.status == 302
    assert (resp.header("location") or "").startswith(REDIRECT + "?")
    params = redirect_params(resp)
    assert set(params) == {"code", "state", "iss"}
    assert params["state"] == "client-state-1"
    assert params["iss"] == ISSUER
    assert len(params["code"]) >= 22
    assert resp.header("cache-control") == "no-store"
    assert resp.header("referrer-policy") == "no-referrer"
    # The upstream token request carried the proxy's own verifier (spec/security.md 7).
    form = dict(parse_qsl(_token_calls(h)[0].body.decode()))
    assert form["code_verifier"] != VERIFIER
    assert form["redirect_uri"] == h.config.callback_url


@pytest.mark.parametrize("who", ["no-cookie", "other-browser-cookie", "forged-cookie"])
def test_invariant_13_callback_from_another_browser_issues_nothing(who: str) -> None:
    h = Harness()
    client = h.register()
    victim = Browser()
    callback = h.upstream.login(_approve(h, client, victim), USER)
    attacker = Browser()
    if who == "other-browser-cookie":
        # The attacker has a perfectly valid binding cookie of its own.
        _approve(h, client, attacker)
        assert attacker.cookies
    elif who == "forged-cookie":
        # The right cookie name for this flow (it follows from the state), a value of the shape.
        state = dict(parse_qsl(urlsplit(callback).query))["state"]
        attacker.cookies[f"__Host-{binding_cookie(state)}"] = "A" * 43
    calls_before = len(h.upstream.calls)
    resp = _callback(h, callback, attacker)
    assert resp.status == 400
    assert resp.header("location") is None
    assert len(h.upstream.calls) == calls_before
    assert not _token_calls(h)
    _issued_nothing(h, resp)
    # The transaction is burnt: not even the victim's own browser can use it afterwards.
    later = _callback(h, callback, victim)
    assert later.status == 400
    _issued_nothing(h, later)
    assert not _token_calls(h)


def test_invariant_12_second_callback_with_same_state_issues_nothing() -> None:
    h = Harness()
    client = h.register()
    browser = Browser()
    callback = h.upstream.login(_approve(h, client, browser), USER)
    first = _callback(h, callback, browser)
    assert first.status == 302
    codes_before = [r for r in h.store.dump() if r[0] == "code"]
    calls_before = len(h.upstream.calls)
    second = _callback(h, callback, browser)
    assert second.status == 400
    assert second.header("location") is None
    assert (second.header("content-type") or "").startswith("text/html")
    assert [r for r in h.store.dump() if r[0] == "code"] == codes_before
    assert len(h.upstream.calls) == calls_before


@pytest.mark.parametrize("iss", ["https://evil.example", UPSTREAM + "/", "", ISSUER])
def test_invariant_14_foreign_iss_yields_no_code(iss: str) -> None:
    h = Harness()
    client = h.register()
    browser = Browser()
    callback = h.upstream.login(_approve(h, client, browser), USER)
    resp = _callback(h, _with(callback, iss=iss), browser)
    _issued_nothing(h, resp)
    assert not _token_calls(h)
    if resp.status == 302:
        params = redirect_params(resp)
        assert params["error"] == "access_denied"
        assert params["state"] == "client-state-1"
        assert params["iss"] == ISSUER
    else:
        assert resp.status == 400
    # And the real callback cannot be replayed afterwards.
    assert _callback(h, callback, browser).status == 400


def test_invariant_14_upstream_code_of_another_transaction_yields_no_code() -> None:
    h = Harness()
    client = h.register()
    browser = Browser()
    cb_a = h.upstream.login(_approve(h, client, browser, state="A"), USER)
    cb_b = h.upstream.login(_approve(h, client, browser, state="B"), USER)
    code_b = dict(parse_qsl(urlsplit(cb_b).query))["code"]
    resp = _callback(h, _with(cb_a, code=code_b), browser)
    _issued_nothing(h, resp)
    assert resp.status == 302
    params = redirect_params(resp)
    assert params["error"] == "access_denied"
    assert params["state"] == "A"


def test_callback_without_code_yields_no_code() -> None:
    h = Harness()
    client = h.register()
    browser = Browser()
    callback = h.upstream.login(_approve(h, client, browser), USER)
    resp = _callback(h, _with(callback, code=None), browser)
    _issued_nothing(h, resp)
    assert not _token_calls(h)


@pytest.mark.parametrize(
    "target", ["/auth/callback", "/auth/callback?state=", "/auth/callback?state=guess&code=x"]
)
def test_callback_with_unknown_state_is_a_page(target: str) -> None:
    h = Harness()
    resp = h.request("GET", target, browser=Browser())
    assert resp.status == 400
    assert resp.header("location") is None
    assert not h.upstream.calls


def test_upstream_access_denied_reaches_the_client() -> None:
    h = Harness()
    client = h.register()
    browser = Browser()
    callback = h.upstream.login(_approve(h, client, browser), USER, deny=True)
    resp = _callback(h, callback, browser)
    assert resp.status == 302
    assert (resp.header("location") or "").startswith(REDIRECT + "?")
    params = redirect_params(resp)
    assert params["error"] == "access_denied"
    assert params["state"] == "client-state-1"
    assert params["iss"] == ISSUER
    _issued_nothing(h, resp)
    assert not h.upstream.calls


def test_upstream_error_text_is_not_relayed() -> None:
    h = Harness()
    client = h.register()
    browser = Browser()
    callback = h.upstream.login(_approve(h, client, browser), USER, deny=True)
    crafted = _with(callback, error="server_error", error_description="<phish> call 555")
    resp = _callback(h, crafted, browser)
    assert resp.status == 302
    params = redirect_params(resp)
    assert params["error"] == "temporarily_unavailable"
    assert "phish" not in (resp.header("location") or "")


def test_upstream_denial_from_another_browser_is_not_relayed() -> None:
    h = Harness()
    client = h.register()
    victim = Browser()
    callback = h.upstream.login(_approve(h, client, victim), USER, deny=True)
    resp = _callback(h, callback, Browser())
    assert resp.status == 400
    assert resp.header("location") is None


@pytest.mark.parametrize(
    "failure",
    [
        HttpFailure(reason="timeout"),
        HttpFailure(reason="connect"),
        HttpResponse(
            status=503,
            headers=(("Content-Type", "application/json"),),
            body=json.dumps({"error": "unavailable"}).encode(),
        ),
        HttpResponse(status=429, headers=(("Retry-After", "5"),), body=b""),
    ],
    ids=["timeout", "connect", "503", "429"],
)
def test_upstream_outage_gives_temporarily_unavailable_and_recovers(
    failure: HttpFailure | HttpResponse,
) -> None:
    h = Harness()
    client = h.register()
    browser = Browser()
    callback = h.upstream.login(_approve(h, client, browser), USER)
    h.upstream.fail_token_with = failure
    resp = _callback(h, callback, browser)
    assert resp.status == 302
    assert (resp.header("location") or "").startswith(REDIRECT + "?")
    params = redirect_params(resp)
    assert params["error"] == "temporarily_unavailable"
    assert params["state"] == "client-state-1"
    assert params["iss"] == ISSUER
    _issued_nothing(h, resp)
    # The outage ends; a new flow succeeds.
    h.upstream.fail_token_with = None
    code = h.full_code(client, VERIFIER, browser)
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


def test_upstream_bad_verification_code_gives_access_denied() -> None:
    h = Harness()
    client = h.register()
    browser = Browser()
    callback = h.upstream.login(_approve(h, client, browser), USER)
    resp = _callback(h, _with(callback, code="upcode-never-issued"), browser)
    assert resp.status == 302
    assert redirect_params(resp)["error"] == "access_denied"
    _issued_nothing(h, resp)


def test_expired_transaction_yields_no_code() -> None:
    h = Harness()
    client = h.register()
    browser = Browser()
    callback = h.upstream.login(_approve(h, client, browser), USER)
    h.clock.advance(601)
    resp = _callback(h, callback, browser)
    assert resp.status in (302, 400)
    _issued_nothing(h, resp)
    assert not _token_calls(h)


def test_callback_just_before_expiry_still_works() -> None:
    h = Harness()
    client = h.register()
    browser = Browser()
    callback = h.upstream.login(_approve(h, client, browser), USER)
    h.clock.advance(590)
    resp = _callback(h, callback, browser)
    assert resp.status == 302
    assert "code" in redirect_params(resp)


def test_invariant_24_no_plaintext_upstream_token_or_state_at_rest() -> None:
    h = Harness()
    client = h.register()
    browser = Browser()
    upstream_url = _approve(h, client, browser)
    upstream_state = dict(parse_qsl(urlsplit(upstream_url).query))["state"]
    resp = _callback(h, h.upstream.login(upstream_url, USER), browser)
    code = redirect_params(resp)["code"]
    blob = b"".join(k.encode() + v for _, k, v in h.store.dump())
    for secret in (code, upstream_state, *h.upstream.tokens, *browser.cookies.values()):
        assert secret.encode() not in blob, secret
    assert b"gho_" not in blob
