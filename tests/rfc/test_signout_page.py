"""The sign-out page of the upstream session (handlers/signout.py, spec/security.md 40 and 31).

What the page shows and what a sign-out answers whatever the browser sends: a button only while
the browser holds a session cookie, the same headers as every page of ours (spec/security.md 17),
a 200 that clears the cookie even when there was nothing to delete, and no error for a malformed
or made-up cookie, with one resource (sessions off) as with several. That a signed-out session
never signs anyone in again is the Hypothesis property
``test_invariant_40_a_session_the_browser_signed_out_of_never_signs_anyone_in``.
"""

from __future__ import annotations

import pytest

from oauthproxy_adapters.testing.flow import VERIFIER
from oauthproxy_core.cookies import SESSION, cookie_name
from oauthproxy_core.crypto import digest
from oauthproxy_core.resource_servers import ResourceServer
from oauthproxy_core.upstream_session import SESSION_KIND
from tests.harness import Browser, Harness, make_config

OWN_PAGE = (("sec-fetch-site", "same-origin"),)


def _harness(resources: int) -> Harness:
    servers = [
        ResourceServer(path=f"/srv{n}", name=f"server {n}", scopes=("mcp",))
        for n in range(resources)
    ]
    return Harness(make_config(resources=servers) if resources else make_config())


def _session_cookie(h: Harness) -> str:
    return cookie_name(SESSION, h.config.secure_cookies)


@pytest.mark.parametrize("resources", [0, 2])
def test_the_page_offers_the_button_only_to_a_browser_holding_a_session(resources: int) -> None:
    h = _harness(resources)
    empty = h.request("GET", "/signout", browser=Browser())
    assert empty.status == 200
    assert b"holds no sign-in" in empty.body and b"<form" not in empty.body
    holder = Browser()
    holder.cookies[_session_cookie(h)] = "A" * 43
    page = h.request("GET", "/signout", browser=holder)
    assert page.status == 200 and b'<form method="post" action=""' in page.body
    assert page.header("content-security-policy") and page.header("x-frame-options") == "DENY"
    assert page.header("cache-control") == "no-store"


@pytest.mark.parametrize("resources", [0, 2])
@pytest.mark.parametrize("cookie", [None, "", "A" * 43, "not a secret", "%00" * 10, "B" * 500])
def test_a_sign_out_clears_the_cookie_whatever_it_was(resources: int, cookie: str | None) -> None:
    h = _harness(resources)
    browser = Browser()
    if cookie is not None:
        browser.cookies[_session_cookie(h)] = cookie
    before = h.store.dump()
    resp = h.request("POST", "/signout", headers=OWN_PAGE, browser=browser)
    assert resp.status == 200 and b"You are signed out" in resp.body
    cleared = [v for v in resp.header_values("set-cookie") if v.startswith(_session_cookie(h))]
    assert cleared and "Max-Age=0" in cleared[0] and "HttpOnly" in cleared[0]
    assert _session_cookie(h) not in browser.cookies
    assert h.store.dump() == before  # no session named by it: nothing else is touched


def test_a_cross_site_sign_out_is_refused_before_anything_is_deleted() -> None:
    """spec/security.md 31: another site's form cannot sign a visitor out."""
    h = _harness(2)
    browser = Browser()
    h.store.put(SESSION_KIND, "k" * 64, b"sealed", 1, 60)  # stands for any live session record
    browser.cookies[_session_cookie(h)] = "A" * 43
    for headers in (
        (("sec-fetch-site", "cross-site"),),
        (("origin", "https://evil.example"),),
        (),
    ):
        resp = h.request("POST", "/signout", headers=headers, browser=browser)
        assert resp.status == 403, resp.body
        assert not resp.header_values("set-cookie")
    assert [k for k, _, _ in h.store.dump() if k == SESSION_KIND]
    assert _session_cookie(h) in browser.cookies


@pytest.mark.parametrize(
    ("resources", "cookie", "shown"), [(2, True, True), (2, False, False), (0, True, False)]
)
def test_the_consent_page_links_to_the_sign_out_page_when_a_session_would_be_used(
    resources: int, cookie: bool, shown: bool
) -> None:
    """With several servers, a browser sending a session cookie is told it is signed in already
    and where to sign out; with one server there are no sessions, and nothing is said."""
    h = _harness(resources)
    browser = Browser()
    if cookie:
        browser.cookies[_session_cookie(h)] = "A" * 43
    client = h.register()
    resource = h.config.resource_urls[-1]
    resp = h.request("GET", h.authorize_url(client, VERIFIER, resource=resource), browser=browser)
    consent = (resp.header("location") or "").removeprefix(h.config.issuer_origin)
    page = h.request("GET", consent, browser=browser)
    assert page.status == 200
    link = f'href="{h.config.issuer}/signout"'.encode()
    assert (link in page.body) is shown


def test_a_planted_cookie_of_the_same_name_does_not_shield_the_real_session() -> None:
    """On an http loopback issuer any port of the host can set a cookie of our name, for a longer
    path, which the browser then sends first: a sign-out deletes the session of every value sent,
    not only the first one's (else the real record would live on while its cookie is cleared)."""
    h = Harness(
        make_config(
            issuer="http://127.0.0.1:8080",
            resources=[
                ResourceServer(path=f"/srv{n}", name=f"server {n}", scopes=("mcp",))
                for n in range(2)
            ],
        )
    )
    assert not h.config.secure_cookies
    planted, real = "P" * 43, "R" * 43
    for secret in (planted, real):
        h.store.put(SESSION_KIND, digest(secret), b"sealed", 1, 60)
    name = _session_cookie(h)
    headers = (*OWN_PAGE, ("cookie", f"{name}={planted}; {name}={real}"))
    resp = h.request("POST", "/signout", headers=headers)
    assert resp.status == 200, resp.body
    assert not [key for kind, key, _ in h.store.dump() if kind == SESSION_KIND]
