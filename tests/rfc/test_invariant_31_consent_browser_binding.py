"""spec/security.md 31 over HTTP: the consent form is accepted only from the browser it was rendered for and
only from the proxy's own origin (issue 13, item 2; the confused deputy of FastMCP CVE-2026-27124).

The proxy is the real ASGI app (``OAuthProxyApp``) under uvicorn on a loopback socket, with an http
loopback issuer: the development mode in which every other port of 127.0.0.1 is *same-site* and shares
the browser's cookies (cookies ignore ports), so an attacker's page on another port can plant cookies
and make the victim's browser navigate and post. ``LoopbackBrowser`` is one browser: one cookie jar for
the host whatever the port, and the headers a browser adds (Fetch Metadata, ``Origin``) for where a
request comes from. The attacker has its own client registration, created the transaction and knows
everything derivable from its id.

Before the fix, the form token and the CSRF cookie were both an HMAC of the transaction id, so the
attacker could compute both; the POST checked neither ``Sec-Fetch-Site`` nor ``Origin``; the binding
cookie set at approval reused whatever value the browser sent; and a second consent page replaced the
first page's cookie, so approving the first one failed.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import attrs
import httpx
import pytest

from oauthproxy_adapters.asgi import OAuthProxyApp
from oauthproxy_adapters.proxy import AsyncProxy
from tests.adapters.live_servers import UvicornThread, async_proxy
from tests.harness import (
    CONSENT_FORM_HEADERS,
    UPSTREAM,
    ScriptedUpstream,
    UpstreamUser,
    make_config,
)

REDIRECT = "http://127.0.0.1:33418/callback"
#: The attacker's page: same host, another port (same-site, cross-origin).
ATTACKER_ORIGIN = "http://127.0.0.1:9"
USER = UpstreamUser(id=31, login="victim")


@attrs.define
class Proxy:
    base: str
    upstream: ScriptedUpstream
    proxy: AsyncProxy

    def dump(self) -> list[tuple[str, str, bytes]]:
        return sorted(self.proxy.store.dump())


def _serve(**config: Any) -> Iterator[Proxy]:
    made: dict[str, Any] = {}

    def build(base: str) -> OAuthProxyApp:
        cfg = make_config(issuer=base, **config)
        made["upstream"] = ScriptedUpstream(callback_url=cfg.callback_url)
        made["proxy"] = async_proxy(cfg, made["upstream"])
        return OAuthProxyApp(made["proxy"])

    server = UvicornThread(build)
    try:
        yield Proxy(server.base, made["upstream"], made["proxy"])
    finally:
        server.stop()


@pytest.fixture(scope="module")
def proxy() -> Iterator[Proxy]:
    yield from _serve()


@pytest.fixture(scope="module")
def remembering() -> Iterator[Proxy]:
    yield from _serve(consent_mode="remember")


@attrs.define(eq=False)
class LoopbackBrowser:
    """One browser: a cookie jar for the host 127.0.0.1 (any port), requests made one at a time."""

    proxy: Proxy
    http: httpx.Client = attrs.field(
        factory=lambda: httpx.Client(timeout=10.0, trust_env=False, follow_redirects=False)
    )
    cookies: dict[str, str] = attrs.Factory(dict)

    def send(
        self, method: str, url: str, *, headers: dict[str, str] | None = None, data: Any = None
    ) -> httpx.Response:
        sent = dict(headers or {})
        if self.cookies:
            sent["cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        self.http.cookies.clear()  # this class is the jar
        resp = self.http.request(method, url, headers=sent, data=data)
        for value in resp.headers.get_list("set-cookie"):
            name, _, rest = value.partition("=")
            if "max-age=0" in rest.lower().replace(" ", "").split(";"):
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = rest.split(";", 1)[0]
        return resp

    def navigate(self, url: str) -> httpx.Response:
        return self.send("GET", url, headers={"sec-fetch-site": "none"})

    def consent_page(self, consent_url: str) -> dict[str, str]:
        page = self.navigate(consent_url)
        assert page.status_code == 200, page.text
        return consent_fields_of(page)

    def submit(
        self, fields: dict[str, str], decision: str = "approve", **headers: str
    ) -> httpx.Response:
        """The consent form posted; by default from the proxy's own page, as Chromium sends it."""
        sent = headers or dict(CONSENT_FORM_HEADERS)
        return self.send(
            "POST",
            self.proxy.base + "/consent",
            headers={k.replace("_", "-"): v for k, v in sent.items()},
            data={**fields, "decision": decision},
        )

    def close(self) -> None:
        self.http.close()


def consent_fields_of(page: httpx.Response) -> dict[str, str]:
    """The consent form's hidden fields."""
    found = dict(re.findall(r'name="(txn|csrf)" value="([^"]*)"', page.text))
    assert set(found) == {"txn", "csrf"}, page.text[:300]
    return found


def _register(proxy: Proxy) -> dict[str, Any]:
    resp = httpx.post(
        proxy.base + "/register",
        json={
            "redirect_uris": [REDIRECT],
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
            "client_name": "Client",
        },
        timeout=10.0,
        trust_env=False,
    )
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def _authorize_url(proxy: Proxy, client: dict[str, Any], verifier: str) -> str:
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return (
        proxy.base
        + "/authorize?"
        + urlencode(
            {
                "response_type": "code",
                "client_id": client["client_id"],
                "redirect_uri": REDIRECT,
                "state": "client-state",
                "code_challenge": challenge.rstrip(b"=").decode(),
                "code_challenge_method": "S256",
                "resource": proxy.base + "/mcp",
            }
        )
    )


def _transaction(proxy: Proxy, browser: LoopbackBrowser, client: dict[str, Any]) -> str:
    """The consent URL of a new transaction, started by ``browser``."""
    resp = browser.navigate(_authorize_url(proxy, client, secrets.token_urlsafe(48)))
    assert resp.status_code == 302, resp.text
    location = resp.headers["location"]
    assert location.startswith(proxy.base + "/consent?txn=")
    return str(location)


def _refused(resp: httpx.Response) -> None:
    assert resp.status_code == 403, (resp.status_code, resp.text[:300])
    assert "location" not in resp.headers
    assert not resp.headers.get_list("set-cookie")


def _upstream_state(approved: httpx.Response) -> str:
    return dict(parse_qsl(urlsplit(approved.headers["location"]).query))["state"]


def _callback(proxy: Proxy, browser: LoopbackBrowser, approved: httpx.Response) -> httpx.Response:
    """The provider signs the user in at once and sends the browser back to the proxy."""
    assert approved.status_code == 303, approved.text
    assert approved.headers["location"].startswith(UPSTREAM + "/authorize?")
    return browser.navigate(proxy.upstream.login(approved.headers["location"], USER))


def _code(resp: httpx.Response) -> str:
    assert resp.status_code == 302, resp.text
    location = resp.headers["location"]
    assert location.startswith(REDIRECT + "?"), location
    return dict(parse_qsl(urlsplit(location).query))["code"]


@pytest.fixture
def victim(proxy: Proxy) -> Iterator[LoopbackBrowser]:
    b = LoopbackBrowser(proxy)
    yield b
    b.close()


@pytest.fixture
def attacker(proxy: Proxy) -> Iterator[LoopbackBrowser]:
    b = LoopbackBrowser(proxy)
    yield b
    b.close()


# -- the attack of issue 13 ----------------------------------------------------------------------


def test_invariant_31_transaction_creator_cannot_get_approval_from_victim_browser(
    proxy: Proxy, victim: LoopbackBrowser, attacker: LoopbackBrowser
) -> None:
    """The attacker creates the transaction for its own client, renders its consent page in its own
    browser (so it holds every value the proxy derives for that transaction), plants that page's
    cookie in the victim's browser and makes the victim's browser post the form: from its page on
    another port, and, should it find a way to post same-origin, from the proxy's origin too."""
    client = _register(proxy)
    consent_url = _transaction(proxy, attacker, client)
    theirs = attacker.consent_page(consent_url)
    csrf_cookie = next(n for n in attacker.cookies if n.endswith("oauthproxy_csrf"))
    before = proxy.dump()
    calls = len(proxy.upstream.calls)

    # 1. A planted copy of the attacker's cookie, the attacker's token, posted by its page.
    victim.cookies[csrf_cookie] = attacker.cookies[csrf_cookie]
    _refused(victim.submit(theirs, sec_fetch_site="same-site", origin=ATTACKER_ORIGIN))
    # 2. The victim's browser opens the consent page (a top-level navigation the attacker caused):
    # it now holds a cookie of its own; the attacker's token, even posted same-origin, is refused.
    victim.cookies.clear()
    mine = victim.consent_page(consent_url)
    assert mine["txn"] == theirs["txn"] and mine["csrf"] != theirs["csrf"]
    _refused(victim.submit(theirs))
    # 3. And the victim's own form, posted by the attacker's page, is refused as well.
    _refused(victim.submit(mine, sec_fetch_site="same-site", origin=ATTACKER_ORIGIN))
    assert proxy.dump() == before, "a refused consent POST changed the store"
    assert len(proxy.upstream.calls) == calls

    # The victim's own click, from the proxy's page, is what approves.
    approved = victim.submit(mine)
    assert _code(_callback(proxy, victim, approved))


@pytest.mark.parametrize(
    "headers",
    [
        {"sec-fetch-site": "cross-site", "origin": "https://evil.example"},
        {"sec-fetch-site": "same-site", "origin": ATTACKER_ORIGIN},
        {"sec-fetch-site": "same-site", "origin": "null"},
        {"sec-fetch-site": "bogus"},
        {"origin": ATTACKER_ORIGIN},
        {"origin": "null"},
        {"origin": "http://localhost:1"},
        {"referer": "http://127.0.0.1/consent"},
        {},
    ],
    ids=[
        "cross-site",
        "same-site-other-port",
        "same-site-null-origin",
        "unknown-fetch-site",
        "no-fetch-metadata-other-port",
        "no-fetch-metadata-null-origin",
        "no-fetch-metadata-localhost",
        "no-fetch-metadata-only-referer",
        "neither-header",
    ],
)
def test_invariant_31_consent_post_not_from_own_origin_is_refused(
    proxy: Proxy, victim: LoopbackBrowser, headers: dict[str, str]
) -> None:
    """The victim's own cookie and form, so only where the POST comes from decides. Without Fetch
    Metadata only an ``Origin`` equal to the issuer's is accepted; with neither header: refused."""
    client = _register(proxy)
    fields = victim.consent_page(_transaction(proxy, victim, client))
    before = proxy.dump()
    for decision in ("approve", "deny"):
        resp = victim.send(
            "POST", proxy.base + "/consent", headers=headers, data={**fields, "decision": decision}
        )
        _refused(resp)
    assert proxy.dump() == before
    # Still pending: the genuine form still approves.
    assert victim.submit(fields).status_code == 303


@pytest.mark.parametrize(
    "headers",
    [
        dict(CONSENT_FORM_HEADERS),
        {"sec-fetch-site": "same-origin"},
        {"sec-fetch-site": "none"},
        {"origin": "ISSUER"},
    ],
    ids=["chromium", "same-origin", "user-initiated", "origin-fallback"],
)
def test_invariant_31_consent_post_from_own_origin_is_accepted(
    proxy: Proxy, victim: LoopbackBrowser, headers: dict[str, str]
) -> None:
    client = _register(proxy)
    fields = victim.consent_page(_transaction(proxy, victim, client))
    sent = {k: (proxy.base if v == "ISSUER" else v) for k, v in headers.items()}
    resp = victim.send(
        "POST", proxy.base + "/consent", headers=sent, data={**fields, "decision": "approve"}
    )
    assert _code(_callback(proxy, victim, resp))


# -- the cookies are the server's own -------------------------------------------------------------


def test_invariant_31_planted_cookies_are_never_adopted(
    proxy: Proxy, victim: LoopbackBrowser, attacker: LoopbackBrowser
) -> None:
    """Cookies another page set in the victim's browser before the flow: a CSRF cookie of the
    proxy's shape it never minted, and binding cookies under every name they could have. None is
    used: the page mints its own secret, approval mints a fresh binding, and a browser holding
    only the planted values completes nothing."""
    planted = {
        "oauthproxy_csrf": "P" * 43 + "." + "Q" * 43,
        "oauthproxy_browser": "B" * 43,
        "oauthproxy_browser_0123456789abcdef": "C" * 43,
    }
    victim.cookies.update(planted)
    attacker.cookies.update(planted)
    client = _register(proxy)
    consent_url = _transaction(proxy, victim, client)
    fields = victim.consent_page(consent_url)
    assert victim.cookies["oauthproxy_csrf"] != planted["oauthproxy_csrf"]
    # The planted secret is refused even with a token the proxy made for another secret.
    _refused(attacker.submit(fields))
    approved = victim.submit(fields)
    assert approved.status_code == 303
    binding = [
        v.split(";", 1)[0].split("=", 1)
        for v in approved.headers.get_list("set-cookie")
        if v.startswith("oauthproxy_browser")
    ]
    assert len(binding) == 1
    name, value = binding[0]
    assert value not in planted.values() and name not in planted
    # A browser with every planted cookie but not the minted one: the callback issues nothing.
    resp = attacker.navigate(proxy.upstream.login(approved.headers["location"], USER))
    assert resp.status_code == 400 and "location" not in resp.headers


def test_invariant_31_binding_cookie_is_rotated_at_every_approval(
    proxy: Proxy, victim: LoopbackBrowser
) -> None:
    client = _register(proxy)
    values = []
    for _ in range(3):
        fields = victim.consent_page(_transaction(proxy, victim, client))
        approved = victim.submit(fields)
        assert approved.status_code == 303
        state = _upstream_state(approved)
        (cookie,) = [
            c for c in approved.headers.get_list("set-cookie") if "oauthproxy_browser" in c
        ]
        values.append(cookie.split(";", 1)[0].split("=", 1)[1])
        assert state not in values
        assert _code(_callback(proxy, victim, approved))
    assert len(set(values)) == 3
    # Each callback cleared its used binding: the browser keeps only the per-browser secret.
    assert [n for n in victim.cookies if n.startswith("oauthproxy_browser")] == []


# -- several consent pages in one browser -----------------------------------------------------


def test_invariant_31_two_consent_pages_in_one_browser_both_approve(
    proxy: Proxy, victim: LoopbackBrowser
) -> None:
    """An MCP host starts two authorizations at once: both pages are open, the first is approved
    after the second was opened, and the provider's answers come back in the other order."""
    client = _register(proxy)
    first = victim.consent_page(_transaction(proxy, victim, client))
    second = victim.consent_page(_transaction(proxy, victim, client))
    assert first["txn"] != second["txn"] and first["csrf"] != second["csrf"]
    approved_first = victim.submit(first)
    assert approved_first.status_code == 303, approved_first.text
    approved_second = victim.submit(second)
    assert approved_second.status_code == 303, approved_second.text
    # Both flows in flight: each binding is its own cookie.
    assert len([n for n in victim.cookies if n.startswith("oauthproxy_browser_")]) == 2
    code_second = _code(_callback(proxy, victim, approved_second))
    code_first = _code(_callback(proxy, victim, approved_first))
    assert code_first != code_second


# -- remembered consent on http loopback --------------------------------------------------------


def test_invariant_31_remembered_consent_is_not_replayed_from_another_loopback_port(
    remembering: Proxy,
) -> None:
    """On an http loopback issuer every port is same-site and sees the browser's cookies, so a
    page on another port must not be able to trigger a silent approval by navigating the browser
    to ``/authorize``: remembered consent there needs a navigation the user started (``none``) or
    one from the proxy's own origin."""
    proxy = remembering
    browser = LoopbackBrowser(proxy)
    try:
        client = _register(proxy)
        approved = browser.submit(browser.consent_page(_transaction(proxy, browser, client)))
        assert _code(_callback(proxy, browser, approved))
        url = _authorize_url(proxy, client, secrets.token_urlsafe(48))
        from_attacker = browser.send("GET", url, headers={"sec-fetch-site": "same-site"})
        assert from_attacker.status_code == 302
        assert from_attacker.headers["location"].startswith(proxy.base + "/consent?txn=")
        from_user = browser.navigate(url)
        assert from_user.headers["location"].startswith(UPSTREAM + "/authorize?")
    finally:
        browser.close()
