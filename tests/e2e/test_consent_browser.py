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
- Deny brings the browser to the redirect URI with ``error=access_denied``.

Chromium missing is a failure (tests/e2e/chromium.py), not a skip. Screenshots are written under
pytest's ``tmp_path`` (kept for the last few runs by pytest) for a person to look at.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
from collections.abc import Iterator
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
from tests.e2e.chromium import Browser, png_info, screenshot

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


class ProxyServer:
    """``build_app(settings)`` under uvicorn with the lifespan on, so its cleanup runs at stop."""

    def __init__(self, settings_for: Any) -> None:
        self._sock = bound_socket()
        port = self._sock.getsockname()[1]
        self.base = f"http://127.0.0.1:{port}"
        app, _proxy, _cleanup = build_app(settings_for(self.base))
        config = uvicorn.Config(app, lifespan="on", log_level="warning", http="h11", ws="none")
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

    def close(self) -> None:
        self.http.close()
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
    browser.navigate(setup.authorize_url(verifier, state))
    assert browser.evaluate("location.pathname") == "/consent"
    assert "Browser Test Client" in browser.evaluate("document.querySelector('h1').textContent")
    browser.click("button.approve")
    browser.wait_until(f"location.href.startsWith({setup.redirect_uri!r})")
    assert browser.evaluate("document.title") == "done"
    assert len(setup.hits) == before + 1
    params = {k: v[0] for k, v in parse_qs(urlsplit(setup.hits[-1]).query).items()}
    assert params["state"] == state
    assert params["iss"] == setup.proxy.base
    assert "error" not in params
    token = setup.http.post(
        "/token",
        data={
            "grant_type": "authorization_code",
            "code": params["code"],
            "redirect_uri": setup.redirect_uri,
            "code_verifier": verifier,
            "client_id": setup.client_id,
            "resource": setup.proxy.base + "/mcp",
        },
    )
    assert token.status_code == 200, token.text
    body = token.json()
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
