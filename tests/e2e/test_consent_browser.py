"""The real consent page in a real browser: headless Chromium against the standalone proxy.

Setup (module-scoped): ``build_app(settings)`` -- the app ``oauthproxy serve`` runs -- under uvicorn
on 127.0.0.1, with a themed ``[consent]`` (product name, colours, a ``data:`` logo, extra text); a
GitHub-shaped provider (``DevProvider``, which approves at once) under uvicorn as the upstream; a
loopback HTTP server playing the MCP client's redirect URI. The MCP client's side (registration,
PKCE, token exchange) is done with httpx; everything a user does happens in Chromium.

Tests:

- screenshots at phone (390x844) and desktop (1280x900) sizes are non-blank PNGs of exactly that
  size;
- the layout responds: on a phone the buttons stack full-width with no horizontal scrolling; on a
  desktop they sit side by side; the logo loads under the page's Content-Security-Policy;
- keyboard: Tab reaches Approve then Deny, with a visible focus ring;
- a mouse click on Approve submits the form, and the browser arrives at the client's redirect URI
  with a code (and the proxy's ``iss``) that the client redeems for an access token;
- Deny brings the browser to the redirect URI with ``error=access_denied``;
- spec/security.md 31 in a real browser: the consent POST Chromium sends carries exactly the headers the
  test harness sends for it (``tests.harness.CONSENT_FORM_HEADERS``); two consent pages open in two
  tabs of one browser are each approved and each reach the client with a code that redeems; a page
  on another loopback port (same-site, cross-origin: the issue 13 attacker) that auto-submits the
  consent form to the proxy, with the victim's own token or the attacker's, is refused with a 403
  page, and the transaction is still the user's to approve afterwards.

Chromium missing is a failure (tests/e2e/chromium.py), not a skip. Screenshots are written under
pytest's ``tmp_path`` (kept for the last few runs by pytest) for a person to look at.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import threading
import time
from collections.abc import Iterator
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
import uvicorn

from oauthproxy_adapters.app import build_app
from oauthproxy_adapters.config_file import parse_settings
from oauthproxy_adapters.devprovider import DevProvider
from tests.adapters.live_servers import UvicornThread, bound_socket
from tests.e2e.chromium import Browser, Page, png_info, screenshot
from tests.harness import CONSENT_FORM_HEADERS

UPSTREAM_CLIENT_ID = "browser-test-client"
UPSTREAM_CLIENT_SECRET = "browser-test-secret-0123456789"
# A 2x2 PNG (red, green / blue, white), so the logo has real pixels to load.
LOGO = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAFklEQVR4nGP4z8DAwMDwn4GB"
    "gYHhPwAa/wP9W0pM8AAAAABJRU5ErkJggg=="
)
PHONE = (390, 844)
DESKTOP = (1280, 900)


class _ClientRedirect(BaseHTTPRequestHandler):
    """The MCP client's loopback redirect URI: records every request's path and query."""

    hits: list[str]

    def do_GET(self) -> None:
        self.server.hits.append(self.path)  # type: ignore[attr-defined]
        body = b"<!doctype html><title>done</title><p>You may close this window.</p>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class ConsentPostRecorder:
    """ASGI middleware: keeps the Fetch Metadata and ``Origin`` of every POST to ``/consent``."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.posts: list[dict[str, str]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == "/consent":
            wanted = (b"sec-fetch-site", b"origin")
            self.posts.append(
                {k.decode(): v.decode() for k, v in scope["headers"] if k.lower() in wanted}
            )
        await self.app(scope, receive, send)


class ProxyServer:
    """``build_app(settings)`` under uvicorn with the lifespan on, so its cleanup runs at stop."""

    def __init__(self, settings_for: Any) -> None:
        self._sock = bound_socket()
        port = self._sock.getsockname()[1]
        self.base = f"http://127.0.0.1:{port}"
        app, _proxy, _cleanup = build_app(settings_for(self.base))
        self.recorder = ConsentPostRecorder(app)
        config = uvicorn.Config(
            self.recorder, lifespan="on", log_level="warning", http="h11", ws="none"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the proxy did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        self._sock.close()


class _AttackerPage(BaseHTTPRequestHandler):
    """A page on another loopback port: ``/attack?<form fields>`` auto-submits them to the proxy's
    consent endpoint (the attack of issue 13; this page has no CSP, so its script runs)."""

    def do_GET(self) -> None:
        fields = parse_qs(urlsplit(self.path).query)
        # ``toss``: a CSRF cookie to plant for the whole host (cookies ignore ports).
        toss = fields.pop("toss", [None])[0]
        target = self.server.consent_endpoint  # type: ignore[attr-defined]
        inputs = "".join(
            f'<input type="hidden" name="{escape(k)}" value="{escape(v[0])}">'
            for k, v in fields.items()
        )
        body = (
            "<!doctype html><title>cute cats</title>"
            f'<form id="f" method="post" action="{escape(target)}">{inputs}'
            '<input type="hidden" name="decision" value="approve"></form>'
            '<script>document.getElementById("f").submit()</script>'
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        if toss:
            self.send_header("Set-Cookie", f"oauthproxy_csrf={toss}; Path=/; SameSite=Lax")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Setup:
    def __init__(self, tmp: Path) -> None:
        self.provider = DevProvider(
            client_id=UPSTREAM_CLIENT_ID, client_secret=UPSTREAM_CLIENT_SECRET, redirect_uri=""
        )
        self.upstream = UvicornThread(lambda _base: self.provider.app)
        self.tmp = tmp

        def settings_for(base: str) -> Any:
            self.provider.redirect_uri = base + "/auth/callback"
            return parse_settings(
                {
                    "server": {"base_url": base, "service_name": "Browser test server"},
                    "upstream": {
                        "provider": "oauth2",
                        "client_id": UPSTREAM_CLIENT_ID,
                        "client_secret": UPSTREAM_CLIENT_SECRET,
                        "authorize_url": f"{self.upstream.base}/login/oauth/authorize",
                        "token_url": f"{self.upstream.base}/login/oauth/access_token",
                        "userinfo_url": f"{self.upstream.base}/user",
                        "userinfo_subject_field": "id",
                        "scopes": ["read:user"],
                        "allow_insecure_http": True,
                    },
                    "consent": {
                        "product_name": "Acme Tools",
                        "primary_color": "#0b6e4f",
                        "background_color": "#fbfbf7",
                        "logo_url": LOGO,
                        "extra_text": "Questions? Ask the platform team.",
                    },
                    "store": {"url": "memory://"},
                    "keys": {"file": str(tmp / "keys.json")},
                },
                environ={},
            )

        self.proxy = ProxyServer(settings_for)
        self.redirect_server = ThreadingHTTPServer(("127.0.0.1", 0), _ClientRedirect)
        self.redirect_server.hits = []  # type: ignore[attr-defined]
        self.redirect_thread = threading.Thread(
            target=self.redirect_server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.redirect_thread.start()
        self.redirect_uri = f"http://127.0.0.1:{self.redirect_server.server_port}/callback"
        self.attacker_server = ThreadingHTTPServer(("127.0.0.1", 0), _AttackerPage)
        self.attacker_server.consent_endpoint = self.proxy.base + "/consent"  # type: ignore[attr-defined]
        self.attacker_thread = threading.Thread(
            target=self.attacker_server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.attacker_thread.start()
        self.attacker_base = f"http://127.0.0.1:{self.attacker_server.server_port}"
        self.http = httpx.Client(base_url=self.proxy.base, timeout=15, trust_env=False)
        resp = self.http.post(
            "/register",
            json={
                "client_name": "Browser Test Client",
                "redirect_uris": [self.redirect_uri],
                "token_endpoint_auth_method": "none",
                "grant_types": ["authorization_code", "refresh_token"],
            },
        )
        assert resp.status_code == 201, resp.text
        self.client_id = resp.json()["client_id"]

    @property
    def hits(self) -> list[str]:
        """Requests to the redirect URI's path (the browser may also ask for /favicon.ico)."""
        recorded: list[str] = self.redirect_server.hits  # type: ignore[attr-defined]
        return [h for h in recorded if urlsplit(h).path == "/callback"]

    def authorize_url(self, verifier: str, state: str) -> str:
        challenge = (
            base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
            .rstrip(b"=")
            .decode()
        )
        query = urlencode(
            {
                "response_type": "code",
                "client_id": self.client_id,
                "redirect_uri": self.redirect_uri,
                "state": state,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
                "resource": self.proxy.base + "/mcp",
            }
        )
        return f"{self.proxy.base}/authorize?{query}"

    def consent_url(self) -> str:
        """A fresh transaction's consent page URL (the redirect of /authorize)."""
        resp = self.http.get(self.authorize_url(secrets.token_urlsafe(48), "s"))
        assert resp.status_code == 302, resp.text
        location = resp.headers["location"]
        assert location.startswith(self.proxy.base + "/consent?txn=")
        return location

    def redeem(self, code: str, verifier: str) -> dict[str, Any]:
        """The MCP client's token request for ``code``: must succeed."""
        token = self.http.post(
            "/token",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": self.redirect_uri,
                "code_verifier": verifier,
                "client_id": self.client_id,
                "resource": self.proxy.base + "/mcp",
            },
        )
        assert token.status_code == 200, token.text
        return dict(token.json())

    def arrival_count(self, state: str) -> int:
        return sum(1 for h in self.hits if parse_qs(urlsplit(h).query).get("state") == [state])

    def arrival(self, state: str) -> dict[str, str]:
        """The query of the one request that reached the redirect URI with this client ``state``."""
        found = [{k: v[0] for k, v in parse_qs(urlsplit(h).query).items()} for h in self.hits]
        mine = [p for p in found if p.get("state") == state]
        assert len(mine) == 1, found
        return mine[0]

    def close(self) -> None:
        self.http.close()
        self.attacker_server.shutdown()
        self.attacker_server.server_close()
        self.attacker_thread.join(10)
        self.redirect_server.shutdown()
        self.redirect_server.server_close()
        self.redirect_thread.join(10)
        self.proxy.stop()
        self.upstream.stop()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    s = Setup(tmp_path_factory.mktemp("consent-browser"))
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def browser() -> Iterator[Browser]:
    b = Browser(*DESKTOP)
    try:
        b.send("Page.enable")
        b.send("Runtime.enable")
        yield b
    finally:
        b.close()


# -- rendering ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("width", "height"), [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_consent_page_screenshot_is_a_rendered_png_of_the_right_size(
    setup: Setup, tmp_path: Path, width: int, height: int
) -> None:
    path = screenshot(
        setup.consent_url(), tmp_path / f"consent-{width}x{height}.png", width, height
    )
    data = path.read_bytes()
    got_width, got_height, distinct_rows = png_info(data)
    assert (got_width, got_height) == (width, height)
    # A blank page compresses to a few hundred bytes with one distinct row; text, a heading, a
    # logo and two buttons give many different rows.
    assert len(data) > 5_000, len(data)
    assert distinct_rows > 50, distinct_rows


def test_layout_stacks_buttons_on_a_phone_and_not_on_a_desktop(
    setup: Setup, browser: Browser
) -> None:
    browser.navigate(setup.consent_url())
    assert browser.evaluate("document.documentElement.lang") == "en"
    assert browser.evaluate("document.title").startswith("Authorize Browser Test Client")
    # The data: logo is admitted by the page's CSP (img-src 'self' data:) and decodes.
    assert browser.evaluate("document.querySelector('header img').naturalWidth") == 2
    assert browser.evaluate("document.querySelector('header .product').textContent") == (
        "Acme Tools"
    )
    assert browser.evaluate("getComputedStyle(document.body).backgroundColor") == (
        "rgb(251, 251, 247)"
    )
    assert browser.evaluate(
        "getComputedStyle(document.querySelector('button.approve')).backgroundColor"
    ) == ("rgb(11, 110, 79)")
    desktop = browser.evaluate(
        "(() => { const a = document.querySelector('button.approve').getBoundingClientRect();"
        " const d = document.querySelector('button.deny').getBoundingClientRect();"
        " return [getComputedStyle(document.querySelector('.actions')).flexDirection,"
        " a.top === d.top, a.width]; })()"
    )
    assert desktop[0] == "row" and desktop[1] is True and desktop[2] < 400

    browser.send(
        "Emulation.setDeviceMetricsOverride",
        width=PHONE[0],
        height=PHONE[1],
        deviceScaleFactor=1,
        mobile=True,
    )
    browser.navigate(setup.consent_url())
    phone = browser.evaluate(
        "(() => { const a = document.querySelector('button.approve').getBoundingClientRect();"
        " const d = document.querySelector('button.deny').getBoundingClientRect();"
        " const main = document.querySelector('main').getBoundingClientRect();"
        " return {dir: getComputedStyle(document.querySelector('.actions')).flexDirection,"
        " stacked: d.top >= a.bottom, approve: a.width, main: main.width, height: a.height,"
        " scroll: document.documentElement.scrollWidth, view: innerWidth}; })()"
    )
    assert phone["view"] == PHONE[0]
    assert phone["dir"] == "column" and phone["stacked"]
    assert phone["approve"] >= phone["main"] - 1  # full width
    assert phone["height"] >= 44  # a comfortable touch target
    assert phone["scroll"] <= PHONE[0], "the page scrolls sideways on a phone"


def test_keyboard_reaches_approve_then_deny_with_a_visible_focus_ring(
    setup: Setup, browser: Browser
) -> None:
    browser.navigate(setup.consent_url())
    browser.press_tab()
    first = browser.evaluate(
        "(() => { const e = document.activeElement; const s = getComputedStyle(e);"
        " return [e.tagName, e.value, s.outlineStyle, s.outlineWidth]; })()"
    )
    assert first == ["BUTTON", "approve", "solid", "3px"]
    browser.press_tab()
    assert browser.evaluate("[document.activeElement.tagName, document.activeElement.value]") == [
        "BUTTON",
        "deny",
    ]


# -- it works ---------------------------------------------------------------------------------


def test_clicking_approve_reaches_the_client_with_a_code_that_redeems(
    setup: Setup, browser: Browser
) -> None:
    verifier = secrets.token_urlsafe(48)
    state = secrets.token_urlsafe(16)
    before = len(setup.hits)
    posts = len(setup.proxy.recorder.posts)
    browser.navigate(setup.authorize_url(verifier, state))
    assert browser.evaluate("location.pathname") == "/consent"
    assert "Browser Test Client" in browser.evaluate("document.querySelector('h1').textContent")
    browser.click("button.approve")
    browser.wait_until(f"location.href.startsWith({setup.redirect_uri!r})")
    # spec/security.md 31: what Chromium sent with the form is what the test harness sends for it.
    assert setup.proxy.recorder.posts[posts:] == [dict(CONSENT_FORM_HEADERS)]
    # The browser holds its secret (HttpOnly, minted by the proxy: secret.tag), and the binding
    # cookie set at approval was cleared by the callback that used it.
    cookies = browser.send("Network.getCookies", urls=[setup.proxy.base])["cookies"]
    assert [(c["name"], c["httpOnly"], c["sameSite"]) for c in cookies] == [
        ("oauthproxy_csrf", True, "Lax")
    ]
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}\.[A-Za-z0-9_-]{43}", cookies[0]["value"])
    assert browser.evaluate("document.title") == "done"
    assert len(setup.hits) == before + 1
    params = {k: v[0] for k, v in parse_qs(urlsplit(setup.hits[-1]).query).items()}
    assert params["state"] == state
    assert params["iss"] == setup.proxy.base
    assert "error" not in params
    body = setup.redeem(params["code"], verifier)
    assert body["token_type"] == "Bearer" and body["access_token"]
    # The token is the proxy's: the protected path accepts it (404: no gateway configured).
    mcp = setup.http.get("/mcp", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert mcp.status_code == 404
    unauthenticated = setup.http.get("/mcp")
    assert unauthenticated.status_code == 401


def test_clicking_deny_reaches_the_client_with_access_denied(
    setup: Setup, browser: Browser
) -> None:
    state = secrets.token_urlsafe(16)
    before = len(setup.hits)
    browser.navigate(setup.authorize_url(secrets.token_urlsafe(48), state))
    browser.click("button.deny")
    browser.wait_until(f"location.href.startsWith({setup.redirect_uri!r})")
    assert len(setup.hits) == before + 1
    params = {k: v[0] for k, v in parse_qs(urlsplit(setup.hits[-1]).query).items()}
    assert params["error"] == "access_denied"
    assert params["state"] == state
    assert params["iss"] == setup.proxy.base
    assert "code" not in params


# -- spec/security.md 31 in a real browser --------------------------------------------------------------


def _consent_fields(page: Page) -> dict[str, str]:
    return dict(
        page.evaluate(
            "Object.fromEntries([...document.querySelectorAll('form input[type=hidden]')]"
            ".map(i => [i.name, i.value]))"
        )
    )


def _approve(setup: Setup, page: Page) -> None:
    page.send("Page.bringToFront")
    page.click("button.approve")
    page.wait_until(f"location.href.startsWith({setup.redirect_uri!r})")


def test_invariant_31_two_tabs_of_one_browser_each_approve(setup: Setup, browser: Browser) -> None:
    """Two authorizations started at once (an MCP host with two servers): both consent pages are
    open in one browser before either is approved; the first, then the second, is approved."""
    flows = [(secrets.token_urlsafe(48), secrets.token_urlsafe(16)) for _ in range(2)]
    second = browser.open_tab()
    browser.navigate(setup.authorize_url(*flows[0]))
    second.navigate(setup.authorize_url(*flows[1]))
    tabs: list[Page] = [browser, second]
    fields = [_consent_fields(tab) for tab in tabs]
    assert [tab.evaluate("location.pathname") for tab in tabs] == ["/consent", "/consent"]
    assert fields[0]["txn"] != fields[1]["txn"]
    for tab in tabs:
        _approve(setup, tab)
    for verifier, state in flows:
        params = setup.arrival(state)
        assert "error" not in params and params["iss"] == setup.proxy.base
        assert setup.redeem(params["code"], verifier)["access_token"]


def test_invariant_31_consent_post_from_a_page_on_another_loopback_port_is_refused(
    setup: Setup, browser: Browser
) -> None:
    """The issue 13 attacker: a page on 127.0.0.1 at another port (same-site, cross-origin) that
    auto-submits the consent form of a transaction the victim's browser has open. It is refused
    with the victim's own token (an attacker that knows it), and with the attacker's own token and
    the attacker's own genuine cookie planted for the whole host first; only the victim's click on
    the proxy's page approves."""
    verifier, state = secrets.token_urlsafe(48), secrets.token_urlsafe(16)
    browser.navigate(setup.authorize_url(verifier, state))
    victims = _consent_fields(browser)
    with httpx.Client(base_url=setup.proxy.base, timeout=15, trust_env=False) as attacker:
        page = attacker.get("/consent", params={"txn": victims["txn"]})
        assert page.status_code == 200
        theirs = dict(re.findall(r'name="(txn|csrf)" value="([^"]*)"', page.text))
        tossed = page.cookies["oauthproxy_csrf"]
    assert theirs["txn"] == victims["txn"] and theirs["csrf"] != victims["csrf"]

    attack_tab = browser.open_tab()
    posts = len(setup.proxy.recorder.posts)
    for query in (victims, {**theirs, "toss": tossed}):
        attack_tab.navigate(f"{setup.attacker_base}/attack?{urlencode(query)}")
        attack_tab.wait_until(
            f"location.href.startsWith({setup.proxy.base + '/consent'!r})"
            " && document.title === 'Authorization error'"
        )
        status = attack_tab.evaluate("performance.getEntriesByType('navigation')[0].responseStatus")
        assert status == 403
        assert "not sent from this sign-in page" in attack_tab.evaluate("document.body.innerText")
    # What the browser said about those posts: same-site, from the attacker's origin.
    expected = {"sec-fetch-site": "same-site", "origin": setup.attacker_base}
    assert setup.proxy.recorder.posts[posts:] == [expected, expected]
    assert setup.arrival_count(state) == 0

    # The transaction is untouched and still the user's: the victim's tab (reloaded, since the
    # attacker replaced the host's cookie) approves it.
    browser.send("Page.bringToFront")
    browser.navigate(browser.evaluate("location.href"))
    _approve(setup, browser)
    params = setup.arrival(state)
    assert setup.redeem(params["code"], verifier)["access_token"]
