"""The proxy's own consent page: spec/security.md 15-17 (MCP Security Best Practices, "confused deputy";
FastMCP CVE-2026-27124).

The page names the client as self-asserted, shows where the answer goes, what is asked and for which
resource; it cannot be framed; its POST is CSRF-protected by a double-submit token that is stable for
one transaction; a forged POST changes nothing; denial never reaches the upstream; approval binds the
browser with hardened cookies; remembered consent covers exactly one (client, redirect URI, scopes,
resource) on same-site navigations only."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

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
    make_config,
    redirect_params,
)

REDIRECT = "http://127.0.0.1:33418/callback"


def _start(
    h: Harness, client: dict[str, Any], browser: Browser, **params: str
) -> tuple[str, Response]:
    """authorize -> consent GET; returns (txn, page)."""
    resp = h.request("GET", h.authorize_url(client, VERIFIER, **params), browser=browser)
    assert resp.status == 302, resp.body
    loc = resp.header("location") or ""
    assert loc.startswith(h.config.issuer + "/consent?txn=")
    page = h.request("GET", loc.removeprefix(h.config.issuer), browser=browser)
    assert page.status == 200, page.body
    return loc.split("txn=", 1)[1], page


def _tx_snapshot(h: Harness, txn: str) -> tuple[bytes, int]:
    stored = h.store.get("tx", txn)
    assert stored is not None
    return stored.value, stored.version


def _cookie_attrs(set_cookie: str) -> tuple[str, str, set[str]]:
    """(name, value, lower-cased attributes such as "secure" or "samesite=lax")."""
    first, *rest = (p.strip() for p in set_cookie.split(";"))
    name, _, value = first.partition("=")
    return name, value, {p.lower() for p in rest}


def _upstream_state(approved: Response) -> str:
    return dict(parse_qsl(urlsplit(approved.header("location") or "").query))["state"]


def _set_cookie(resp: Response, base: str) -> str:
    found = [v for v in resp.header_values("set-cookie") if base in v.split("=", 1)[0]]
    assert len(found) == 1, resp.header_values("set-cookie")
    return found[0]


# -- what the page shows, and how it is served (17) ---------------------------------------------


def test_invariant_17_page_shows_client_as_self_asserted_host_scopes_resource() -> None:
    h = Harness()
    client = h.register(
        client_name="Acme <script>alert(1)</script>",
        redirect_uris=["http://127.0.0.1:33418/callback"],
    )
    _, page = _start(h, client, Browser(), scope="mcp offline_access")
    html = page.body.decode()
    assert "Acme &lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>" not in html
    assert "not verified" in html
    assert client["client_id"] in html
    assert "127.0.0.1:33418" in html
    assert "<code>mcp</code>" in html and "<code>offline_access</code>" in html
    assert "https://proxy.example/mcp" in html
    assert 'name="csrf"' in html and 'name="txn"' in html
    assert 'method="post"' in html
    assert f'action="{ISSUER}/consent"' in html


def test_invariant_17_page_without_client_name_names_the_client_id() -> None:
    h = Harness()
    client = h.register(client_name="")
    _, page = _start(h, client, Browser())
    assert client["client_id"] in page.body.decode()
    assert "not verified" in page.body.decode()


def test_invariant_17_page_shows_https_redirect_host() -> None:
    h = Harness()
    client = h.register(redirect_uris=["https://App.Example:8443/oauth/cb"])
    _, page = _start(h, client, Browser())
    assert "<code>app.example:8443</code>" in page.body.decode()


def test_invariant_17_anti_framing_and_referrer_headers() -> None:
    h = Harness()
    client = h.register()
    _, page = _start(h, client, Browser())
    assert page.header("x-frame-options") == "DENY"
    csp = page.header("content-security-policy") or ""
    assert "frame-ancestors 'none'" in [d.strip() for d in csp.split(";")]
    assert page.header("referrer-policy") == "no-referrer"
    assert page.header("cache-control") == "no-store"
    assert (page.header("content-type") or "").startswith("text/html")
    assert page.header("access-control-allow-origin") is None


def test_invariant_17_csrf_token_idempotent_per_transaction_distinct_across() -> None:
    h = Harness()
    client = h.register()
    browser = Browser()
    txn_a, page_a1 = _start(h, client, browser)
    before = _tx_snapshot(h, txn_a)
    page_a2 = h.request("GET", f"/consent?txn={txn_a}", browser=browser)
    assert page_a2.status == 200
    assert consent_fields(page_a1) == consent_fields(page_a2)
    # Rendering writes nothing.
    assert _tx_snapshot(h, txn_a) == before
    txn_b, page_b = _start(h, client, browser)
    assert txn_b != txn_a
    assert consent_fields(page_b)["csrf"] != consent_fields(page_a1)["csrf"]
    assert len(consent_fields(page_a1)["csrf"]) >= 22


def test_consent_get_for_unknown_or_malformed_txn_is_a_page() -> None:
    h = Harness()
    for target in (
        "/consent",
        "/consent?txn=",
        "/consent?txn=unknownunknownunknown12",
        "/consent?txn=<x>",
    ):
        resp = h.request("GET", target)
        assert resp.status == 400
        assert resp.header("location") is None


# -- CSRF (17) and forged POSTs change nothing ---------------------------------------------------


def test_invariant_17_forged_posts_are_403_and_leave_the_transaction_unchanged() -> None:
    h = Harness()
    client = h.register()
    browser = Browser()
    txn_a, page_a = _start(h, client, browser)
    fields_a = consent_fields(page_a)
    csrf_name = next(n for n in browser.cookies if n.endswith("oauthproxy_csrf"))
    _txn_b, page_b = _start(h, client, browser)
    fields_b = consent_fields(page_b)
    # Another browser with a secret of its own, minted by the proxy for it.
    other = Browser()
    _start(h, client, other)
    assert other.cookies[csrf_name] != browser.cookies[csrf_name]
    snapshot = _tx_snapshot(h, txn_a)

    def holding(value: str) -> Browser:
        b = Browser()
        b.cookies[csrf_name] = value
        return b

    attempts: list[tuple[dict[str, str], Browser]] = [
        # 1. No cookie at all.
        ({**fields_a, "decision": "approve"}, Browser()),
        # 2. The browser's own cookie, a wrong token in the form.
        (
            {"txn": txn_a, "csrf": "A" * 43, "decision": "approve"},
            holding(browser.cookies[csrf_name]),
        ),
        # 3. The browser's own cookie, the token of its other transaction.
        (
            {"txn": txn_a, "csrf": fields_b["csrf"], "decision": "approve"},
            holding(browser.cookies[csrf_name]),
        ),
        # 4. The right token, from another browser (its own genuine cookie).
        ({**fields_a, "decision": "approve"}, other),
        # 5. The token copied into the cookie (the old double-submit shape).
        ({**fields_a, "decision": "approve"}, holding(fields_a["csrf"])),
        # 6. Empty token with empty cookie.
        ({"txn": txn_a, "csrf": "", "decision": "approve"}, holding("")),
        # 7. A forged deny is refused the same way.
        ({**fields_a, "decision": "deny"}, Browser()),
    ]

    for form, b in attempts:
        resp = h.form("/consent", form, browser=b)
        assert resp.status == 403, (form, resp.status)
        assert resp.header("location") is None
        assert not resp.header_values("set-cookie")
        assert _tx_snapshot(h, txn_a) == snapshot
    assert not h.upstream.calls
    assert not [r for r in h.store.dump() if r[0] == "ustate"]

    # The genuine user can still approve.
    page = h.request("GET", f"/consent?txn={txn_a}", browser=browser)
    resp = h.form("/consent", {**consent_fields(page), "decision": "approve"}, browser=browser)
    assert resp.status == 303
    assert (resp.header("location") or "").startswith(UPSTREAM + "/authorize?")


def test_consent_post_with_unknown_decision_changes_nothing() -> None:
    h = Harness()
    client = h.register()
    browser = Browser()
    txn, page = _start(h, client, browser)
    snapshot = _tx_snapshot(h, txn)
    resp = h.form("/consent", {**consent_fields(page), "decision": "maybe"}, browser=browser)
    assert resp.status == 400
    assert resp.header("location") is None
    assert _tx_snapshot(h, txn) == snapshot


# -- deny (16) -------------------------------------------------------------------------------


def test_invariant_16_deny_redirects_access_denied_and_never_contacts_upstream() -> None:
    h = Harness()
    client = h.register()
    browser = Browser()
    _txn, page = _start(h, client, browser, state="st&te/ü")
    resp = h.form("/consent", {**consent_fields(page), "decision": "deny"}, browser=browser)
    assert resp.status == 303
    loc = resp.header("location") or ""
    assert loc.startswith(REDIRECT + "?")
    params = redirect_params(resp)
    assert params["error"] == "access_denied"
    assert params["state"] == "st&te/ü"
    assert params["iss"] == ISSUER
    assert "code" not in params
    assert h.upstream.calls == []
    assert not [r for r in h.store.dump() if r[0] == "ustate"]
    # No browser binding was created either.
    assert not any("oauthproxy_browser" in v for v in resp.header_values("set-cookie"))
    # And the decision is final.
    again = h.form("/consent", {**consent_fields(page), "decision": "approve"}, browser=browser)
    assert again.status == 400
    assert again.header("location") is None
    assert h.upstream.calls == []


# -- approve: 303, cookies (11, 17) ------------------------------------------------------------


def test_invariant_17_approve_is_303_with_hardened_cookies_on_https() -> None:
    h = Harness()
    assert h.config.issuer.startswith("https://")
    client = h.register()
    browser = Browser()
    _txn, page = _start(h, client, browser)
    csrf_cookie = _set_cookie(page, "oauthproxy_csrf")
    resp = h.form("/consent", {**consent_fields(page), "decision": "approve"}, browser=browser)
    assert resp.status == 303
    assert (resp.header("location") or "").startswith(UPSTREAM + "/authorize?")
    assert resp.header("cache-control") == "no-store"
    browser_cookie = _set_cookie(resp, "oauthproxy_browser")
    binding = binding_cookie(_upstream_state(resp))
    for raw, base in ((csrf_cookie, "oauthproxy_csrf"), (browser_cookie, binding)):
        name, value, attrs = _cookie_attrs(raw)
        assert name == f"__Host-{base}"
        assert value
        assert {"secure", "httponly", "samesite=lax", "path=/"} <= attrs, raw
        assert not any(a.startswith("domain") for a in attrs)
    assert browser.cookies[f"__Host-{binding}"]


def test_invariant_17_plain_cookie_names_on_http_loopback_issuer() -> None:
    h = Harness(make_config(issuer="http://127.0.0.1:8080"))
    client = h.register()
    browser = Browser()
    _txn, page = _start(h, client, browser)
    resp = h.form("/consent", {**consent_fields(page), "decision": "approve"}, browser=browser)
    assert resp.status == 303
    for raw, base in (
        (_set_cookie(page, "oauthproxy_csrf"), "oauthproxy_csrf"),
        (_set_cookie(resp, "oauthproxy_browser"), binding_cookie(_upstream_state(resp))),
    ):
        name, _value, attrs = _cookie_attrs(raw)
        assert name == base
        assert "secure" not in attrs
        assert {"httponly", "samesite=lax", "path=/"} <= attrs
    # The flow completes on the http issuer too.
    cb = h.upstream.login(resp.header("location") or "", UpstreamUser(id=3, login="dev"))
    done = h.request("GET", cb.removeprefix(h.config.issuer), browser=browser)
    assert done.status == 302
    assert redirect_params(done)["iss"] == "http://127.0.0.1:8080"


def test_invariant_11_upstream_state_created_only_at_approval() -> None:
    h = Harness()
    client = h.register()
    browser = Browser()
    txn, page = _start(h, client, browser)
    assert not [r for r in h.store.dump() if r[0] == "ustate"]
    resp = h.form("/consent", {**consent_fields(page), "decision": "approve"}, browser=browser)
    ustates = [r for r in h.store.dump() if r[0] == "ustate"]
    assert len(ustates) == 1
    loc = resp.header("location") or ""
    q = dict(parse_qsl(urlsplit(loc).query))
    assert len(q["state"]) >= 22  # >= 128 bits of base64url
    assert q["state"] not in {txn, consent_fields(page)["csrf"]}
    assert q["redirect_uri"] == h.config.callback_url
    assert q["code_challenge_method"] == "S256"
    # The proxy's own PKCE, not the client's (spec/security.md 7).
    client_challenge = dict(parse_qsl(urlsplit(h.authorize_url(client, VERIFIER)).query))[
        "code_challenge"
    ]
    assert q["code_challenge"] != client_challenge


def test_second_post_after_approval_is_a_page() -> None:
    h = Harness()
    client = h.register()
    browser = Browser()
    txn, page = _start(h, client, browser)
    first = h.form("/consent", {**consent_fields(page), "decision": "approve"}, browser=browser)
    assert first.status == 303
    snapshot = _tx_snapshot(h, txn)
    for decision in ("approve", "deny"):
        again = h.form("/consent", {**consent_fields(page), "decision": decision}, browser=browser)
        assert again.status == 400
        assert again.header("location") is None
        assert _tx_snapshot(h, txn) == snapshot
    assert len([r for r in h.store.dump() if r[0] == "ustate"]) == 1
    # Rendering the page again is refused too.
    assert h.request("GET", f"/consent?txn={txn}", browser=browser).status == 400


def test_consent_after_transaction_expiry_is_refused() -> None:
    h = Harness()
    client = h.register()
    browser = Browser()
    _txn, page = _start(h, client, browser)
    h.clock.advance(601)
    resp = h.form("/consent", {**consent_fields(page), "decision": "approve"}, browser=browser)
    assert resp.status == 400
    assert resp.header("location") is None
    assert not h.upstream.calls


# -- remembered consent (15) ---------------------------------------------------------------------

SAME = (("sec-fetch-site", "none"),)


def _remember_harness(approvals: int = 2) -> tuple[Harness, dict[str, Any], Browser]:
    """A remember-mode proxy where ``browser`` approved ``client`` ``approvals`` times.

    Two approvals by default so that a consent decision is certainly stored for this browser: the
    tests of what must *not* be covered are then meaningful on their own. That a single approval
    is remembered is tested separately.
    """
    h = Harness(make_config(consent_mode="remember"))
    client = h.register()
    browser = Browser()
    for _ in range(approvals):
        resp = h.run_to_callback(client, VERIFIER, browser)
        assert resp.status == 302
        assert "code" in redirect_params(resp)
    if approvals >= 2:
        assert [r for r in h.store.dump() if r[0] == "consent"]
    return h, client, browser


def _authorize(
    h: Harness,
    client: dict[str, Any],
    browser: Browser,
    headers: tuple[tuple[str, str], ...],
    **params: str,
) -> Response:
    return h.request(
        "GET", h.authorize_url(client, VERIFIER, **params), headers=headers, browser=browser
    )


def test_invariant_15_remembered_consent_skips_the_page_for_identical_request() -> None:
    # One approval by a browser that had never been here is remembered: the first consent is
    # exactly the one a user expects to be remembered.
    h, client, browser = _remember_harness(approvals=1)
    resp = _authorize(h, client, browser, SAME)
    assert resp.status == 302, resp.body
    loc = resp.header("location") or ""
    assert loc.startswith(UPSTREAM + "/authorize?"), loc
    # It is a real approval: the flow completes with a code.
    cb = h.upstream.login(loc, UpstreamUser(id=42, login="octocat"))
    done = h.request("GET", cb.removeprefix(ISSUER), browser=browser)
    assert done.status == 302
    assert "code" in redirect_params(done)


@pytest.mark.parametrize("site", ["same-origin", "same-site"])
def test_invariant_15_remembered_consent_on_same_site_navigation(site: str) -> None:
    h, client, browser = _remember_harness()
    resp = _authorize(h, client, browser, (("sec-fetch-site", site),))
    assert (resp.header("location") or "").startswith(UPSTREAM + "/authorize?")


@pytest.mark.parametrize(
    ("headers", "params", "fresh_browser"),
    [
        ((("sec-fetch-site", "cross-site"),), {}, False),
        ((), {}, False),
        ((("sec-fetch-site", "bogus"),), {}, False),
        (SAME, {"scope": "mcp offline_access"}, False),
        (SAME, {"redirect_uri": "http://127.0.0.1:40000/callback"}, False),
        (SAME, {}, True),
    ],
    ids=[
        "cross-site",
        "no-fetch-metadata",
        "unknown-site",
        "wider-scopes",
        "other-port",
        "other-browser",
    ],
)
def test_invariant_15_anything_different_asks_again(
    headers: tuple[tuple[str, str], ...], params: dict[str, str], fresh_browser: bool
) -> None:
    h, client, browser = _remember_harness()
    resp = _authorize(h, client, Browser() if fresh_browser else browser, headers, **params)
    assert resp.status == 302
    assert (resp.header("location") or "").startswith(ISSUER + "/consent?txn="), resp.header(
        "location"
    )


def test_invariant_15_newly_registered_client_always_asks() -> None:
    h, _client, browser = _remember_harness()
    newcomer = h.register()  # same metadata, new registration
    resp = _authorize(h, newcomer, browser, SAME)
    assert (resp.header("location") or "").startswith(ISSUER + "/consent?txn=")


def test_invariant_15_always_mode_never_remembers() -> None:
    h = Harness()
    client = h.register()
    browser = Browser()
    h.run_to_callback(client, VERIFIER, browser)
    resp = _authorize(h, client, browser, SAME)
    assert (resp.header("location") or "").startswith(ISSUER + "/consent?txn=")
