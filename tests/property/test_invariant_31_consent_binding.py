"""spec/security.md 31 as Hypothesis properties: the consent form is accepted only from the browser it was
rendered for and only from the proxy's own origin.

- Any consent POST is decided by exactly this rule, over arbitrary ``Sec-Fetch-Site`` and ``Origin``
  values, cookies (the browser's own, another browser's, a planted one of the right shape, the token
  itself, none) and tokens (the browser's own, one rendered for the same transaction in another
  browser, one of another transaction, made up), on an https and an http loopback issuer: accepted
  iff Fetch Metadata says ``same-origin`` or ``none`` (or, without it, ``Origin`` is the issuer's)
  *and* the token is the one rendered for the browser whose cookie comes with it. A
  refusal is a 403 page that sets no cookie and leaves the store as it was.
- Any number of consent pages opened in one browser, approved in any order, with the provider's
  answers coming back in any order, all complete with a code.

Driven through the core's real sync driver (``tests.harness``); the same rule over HTTP through the
ASGI app is tests/rfc/test_invariant_31_consent_browser_binding.py.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.harness import (
    VERIFIER,
    Browser,
    Harness,
    UpstreamUser,
    consent_fields,
    make_config,
    redirect_params,
)

ISSUERS = ("https://proxy.example", "http://127.0.0.1:8080")
SITES = st.one_of(
    st.none(),
    st.sampled_from(["same-origin", "none", "same-site", "cross-site", "Same-Origin", ""]),
    st.text(max_size=12),
)
ORIGINS = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "ISSUER",
            "null",
            "https://proxy.example.evil",
            "http://127.0.0.1:9",
            "http://localhost:8080",
            "https://PROXY.example",
        ]
    ),
    st.text(max_size=20),
)
COOKIES = st.sampled_from(["own", "other_browser", "planted", "token_as_cookie", "none"])
TOKENS = st.sampled_from(["own", "rendered_elsewhere", "other_txn", "made_up"])


def _start(h: Harness, browser: Browser, client: dict[str, Any]) -> tuple[str, dict[str, str]]:
    resp = h.request("GET", h.authorize_url(client, VERIFIER), browser=browser)
    location = resp.header("location") or ""
    assert resp.status == 302 and "/consent?txn=" in location, resp.body
    page = h.request("GET", location.removeprefix(h.config.issuer), browser=browser)
    assert page.status == 200, page.body
    return location.removeprefix(h.config.issuer), consent_fields(page)


@settings(max_examples=200, deadline=None)
@given(
    issuer=st.sampled_from(ISSUERS),
    site=SITES,
    origin=ORIGINS,
    cookie=COOKIES,
    token=TOKENS,
    decision=st.sampled_from(["approve", "deny"]),
)
def test_invariant_31_consent_post_accepted_only_from_its_browser_and_own_origin(
    issuer: str, site: str | None, origin: str | None, cookie: str, token: str, decision: str
) -> None:
    h = Harness(make_config(issuer=issuer))
    client = h.register()
    victim, other = Browser(), Browser()
    consent_url, fields = _start(h, victim, client)
    _other_url, other_fields = _start(h, victim, client)
    elsewhere = consent_fields(h.request("GET", consent_url, browser=other))
    (csrf_name,) = [n for n in victim.cookies if n.endswith("oauthproxy_csrf")]

    sender = Browser()
    sender.cookies = {
        "own": dict(victim.cookies),
        "other_browser": dict(other.cookies),
        "planted": {csrf_name: "P" * 43 + "." + "Q" * 43},
        "token_as_cookie": {csrf_name: fields["csrf"]},
        "none": {},
    }[cookie]
    submitted = {
        "own": fields["csrf"],
        "rendered_elsewhere": elsewhere["csrf"],
        "other_txn": other_fields["csrf"],
        "made_up": "A" * 43,
    }[token]
    headers = []
    if site is not None:
        headers.append(("sec-fetch-site", site))
    if origin is not None:
        headers.append(("origin", h.config.issuer_origin if origin == "ISSUER" else origin))
    before = sorted(h.store.dump())

    resp = h.request(
        "POST",
        "/consent",
        body=f"txn={fields['txn']}&csrf={submitted}&decision={decision}".encode(),
        headers=(("content-type", "application/x-www-form-urlencoded"), *headers),
        browser=sender,
    )

    own_origin = (
        site in ("same-origin", "none")
        if site is not None
        else origin == "ISSUER"  # only the issuer's exact origin stands in for Fetch Metadata
    )
    # The browser the form was rendered for: the victim's cookie with the victim's token, or the
    # other browser's cookie with the token of the page that browser rendered.
    rendered_for_sender = (cookie, token) in {
        ("own", "own"),
        ("other_browser", "rendered_elsewhere"),
    }
    accepted = own_origin and rendered_for_sender
    if accepted:
        assert resp.status == 303, resp.body
    else:
        assert resp.status == 403, (resp.status, headers, cookie, token)
        assert resp.header("location") is None
        assert not resp.header_values("set-cookie")
        assert sorted(h.store.dump()) == before
        assert not h.upstream.calls


@settings(max_examples=40, deadline=None)
@given(
    issuer=st.sampled_from(ISSUERS),
    pages=st.integers(min_value=2, max_value=5),
    data=st.data(),
)
def test_invariant_31_every_consent_page_open_in_one_browser_completes(
    issuer: str, pages: int, data: st.DataObject
) -> None:
    h = Harness(make_config(issuer=issuer))
    client = h.register()
    browser = Browser()
    opened = [_start(h, browser, client)[1] for _ in range(pages)]
    approve_order = data.draw(st.permutations(range(pages)))
    upstream_urls: dict[int, str] = {}
    for i in approve_order:
        resp = h.form("/consent", {**opened[i], "decision": "approve"}, browser=browser)
        assert resp.status == 303, (i, resp.body)
        upstream_urls[i] = resp.header("location") or ""
    codes = set()
    for i in data.draw(st.permutations(range(pages))):
        callback = h.upstream.login(upstream_urls[i], UpstreamUser(id=7, login="user"))
        done = h.request("GET", callback.removeprefix(h.config.issuer), browser=browser)
        assert done.status == 302, (i, done.body)
        codes.add(redirect_params(done)["code"])
    assert len(codes) == pages
    # Every binding was used once and cleared; the per-browser secret stays.
    assert [n.removeprefix("__Host-") for n in browser.cookies] == ["oauthproxy_csrf"]
