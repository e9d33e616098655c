"""The consent page lets the user decline optional scopes (RFC 6749 §3.3: the server may grant less
than asked; issue 17, section 4): the resource's baseline (``default_scopes``) and ``offline_access``
are fixed, every other requested scope has a ticked checkbox. The granted set is what the token
carries and what remembered consent keys on (spec/security.md 15); nothing outside the request is
ever granted, whatever the form says."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from oauthproxy_core.http import Response
from oauthproxy_core.scopes import fixed_scopes, granted_scopes
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

SUPPORTED = ("mcp", "mcp:admin", "mcp:write", "offline_access")
ASKED = "mcp mcp:admin mcp:write offline_access"


def harness(**overrides: Any) -> Harness:
    return Harness(make_config(scopes_supported=SUPPORTED, default_scopes=("mcp",), **overrides))


def consent(h: Harness, client: dict[str, Any], browser: Browser, scope: str) -> tuple[str, str]:
    """authorize -> the consent page; ``(page html, its consent path)``."""
    resp = h.request("GET", h.authorize_url(client, VERIFIER, scope=scope), browser=browser)
    location = resp.header("location") or ""
    assert location.startswith(ISSUER + "/consent?txn="), (resp.status, resp.body)
    page = h.request("GET", location.removeprefix(ISSUER), browser=browser)
    assert page.status == 200
    return page.body.decode(), location


def approve(
    h: Harness, client: dict[str, Any], browser: Browser, html: str, fields: dict[str, str]
) -> dict[str, Any]:
    """Submit the consent form with ``fields`` besides txn and csrf, sign in, redeem the code."""
    page = Response(status=200, headers=(), body=html.encode())
    form = {**consent_fields(page), **fields, "decision": "approve"}
    approved = h.form("/consent", form, browser=browser)
    assert approved.status == 303, approved.body
    callback = h.upstream.login(approved.header("location") or "", UpstreamUser(id=42, login="o"))
    done = h.request("GET", callback.removeprefix(ISSUER), browser=browser)
    code = redirect_params(done)["code"]
    token = h.token(
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": client["redirect_uris"][0],
            "client_id": client["client_id"],
            "code_verifier": VERIFIER,
            "resource": h.config.resource,
        }
    )
    assert token.status == 200, token.body
    body: dict[str, Any] = json.loads(token.body)
    return body


def test_the_page_offers_optional_scopes_and_fixes_the_baseline() -> None:
    h = harness()
    client = h.register()
    html, _ = consent(h, client, Browser(), ASKED)
    assert '<input type="hidden" name="scope_choice" value="1">' in html
    assert 'name="scope_1" value="1" checked> <code>mcp:admin</code>' in html
    assert 'name="scope_2" value="1" checked> <code>mcp:write</code>' in html
    assert 'checked disabled> <code>mcp</code> <span class="note">(required)' in html
    assert "checked disabled> <code>offline_access</code>" in html
    assert 'name="scope_0"' not in html and 'name="scope_3"' not in html
    # Nothing to choose when every requested scope is fixed.
    plain, _ = consent(h, client, Browser(), "mcp offline_access")
    assert "scope_choice" not in plain and "checkbox" not in plain


def test_an_untick_is_what_the_token_carries() -> None:
    h = harness()
    client = h.register()
    browser = Browser()
    html, _ = consent(h, client, browser, ASKED)
    tokens = approve(h, client, browser, html, {"scope_choice": "1", "scope_2": "1"})
    assert tokens["scope"] == "mcp mcp:write offline_access"
    principal = h.bearer(tokens["access_token"])
    assert principal.scopes == ("mcp", "mcp:write", "offline_access")  # type: ignore[union-attr]


def test_all_ticked_or_no_choice_in_the_form_grants_the_request() -> None:
    h = harness()
    client = h.register()
    for fields in ({"scope_choice": "1", "scope_1": "1", "scope_2": "1"}, {}):
        browser = Browser()
        html, _ = consent(h, client, browser, ASKED)
        assert approve(h, client, browser, html, fields)["scope"] == ASKED


def test_the_form_cannot_grant_outside_the_request_or_drop_a_fixed_scope() -> None:
    h = harness()
    client = h.register()
    browser = Browser()
    html, _ = consent(h, client, browser, "mcp mcp:write")
    fields = {"scope_choice": "1", "scope_0": "0", "scope_5": "1", "scope_mcp:admin": "1"}
    assert approve(h, client, browser, html, fields)["scope"] == "mcp"


def test_remember_keys_on_what_was_granted() -> None:
    h = harness(consent_mode="remember")
    client = h.register()
    browser = Browser()
    html, _ = consent(h, client, browser, "mcp mcp:admin")
    assert approve(h, client, browser, html, {"scope_choice": "1"})["scope"] == "mcp"
    same_site = (("sec-fetch-site", "none"),)

    def authorize(scope: str) -> str:
        resp = h.request(
            "GET",
            h.authorize_url(client, VERIFIER, scope=scope),
            headers=same_site,
            browser=browser,
        )
        return resp.header("location") or ""

    # Asking again for what was declined shows the page; asking for what was granted does not.
    assert authorize("mcp mcp:admin").startswith(ISSUER + "/consent?txn=")
    assert authorize("mcp").startswith(UPSTREAM + "/authorize?")


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from(SUPPORTED), unique=True),
    st.lists(st.sampled_from(SUPPORTED), max_size=2),
    st.sets(st.integers(-1, 6)),
)
def test_granted_is_a_subset_holding_every_fixed_scope(
    requested: list[str], baseline: list[str], kept: set[int]
) -> None:
    fixed = fixed_scopes(requested, baseline)
    granted = granted_scopes(requested, fixed, kept)
    assert set(granted) <= set(requested)
    assert set(fixed) <= set(granted)
    assert list(granted) == [s for s in requested if s in granted]  # the request's order
    assert all(s in fixed or requested.index(s) in kept for s in granted)
