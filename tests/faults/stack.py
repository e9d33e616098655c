"""The real stack for fault and abuse tests: a proxy on loopback, a browser-and-client driving it, and
a reader of the SQLite store that checks nothing half-written survives.

- ``write_config`` writes a ``proxy.toml`` for the scripted upstream (``scripted_upstream.py``).
- ``ServeProcess`` (the testing kit's, re-exported) runs ``oauthproxy serve`` (or a test wrapper
  around it) as a child process bound to 127.0.0.1, started until ``/healthz`` answers and stopped
  by its own PID.
- ``InProcessProxy`` runs ``build_app(settings)`` under uvicorn in a thread of the test process, with
  the upstream timeout shortened (the file format has no timeout key) so timeouts cost a second.
- ``Flow`` is one MCP client and one browser. It is not the kit's flow driver
  (``oauthproxy_adapters.testing.flow``), whose steps assert a conforming answer and stop at the
  first that is not: here every step returns the raw response, so a test can look at what a fault
  produced (a 502 page, a retry, a dropped connection) and go on, and each request can carry headers
  of its own (``X-Forwarded-For`` for the floods). It builds its requests from the kit's pieces
  (PKCE, the consent form's fields and headers); ``complete`` runs the whole flow, asserting each
  step.
- ``StoreView`` reads the live rows of a SQLite store file and decodes transactions and grants;
  ``problems()`` lists every record that violates the crash-consistency rules below.

Crash-consistency rules (what "nothing half-written survives" means here):

1. a ``code`` record points to a transaction that names the code (``code_hash``), and that
   transaction carries what the grant needs (``grant_id``, ``subject``) and is past the callback;
2. a ``grant`` exists only for a transaction whose code was consumed (``exchanged`` or ``revoked``);
3. an upstream ``state`` (``ustate``) points to a transaction in ``upstream_pending`` that names it;
4. a transaction in ``code_issued`` that has no ``code`` record can never be redeemed: it is
   reported separately (``orphans``), since the only way to reach it is the code nobody received.
"""

from __future__ import annotations

import secrets
import sqlite3
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import attrs
import httpx
import uvicorn

from oauthproxy_adapters.app import build_app
from oauthproxy_adapters.config_file import load_settings
from oauthproxy_adapters.testing.flow import (
    CONSENT_FORM_HEADERS,
    consent_fields,
    new_verifier,
    s256,
)
from oauthproxy_adapters.testing.provider import upstream_toml
from oauthproxy_adapters.testing.serve import ServeProcess, free_port, wait_healthy
from oauthproxy_core import codec
from oauthproxy_core.records import Grant, Transaction
from tests.e2e.test_multi_instance import make_keys
from tests.faults.scripted_upstream import CLIENT_ID, CLIENT_SECRET

__all__ = [
    "CLIENT_REDIRECT",
    "Flow",
    "InProcessProxy",
    "ServeProcess",
    "StoreView",
    "free_port",
    "make_keys",
    "write_config",
]

CLIENT_REDIRECT = "http://127.0.0.1:33418/callback"


def write_config(
    path: Path,
    *,
    port: int,
    base_url: str,
    upstream: str,
    store_url: str,
    keys_file: Path,
    limits: Mapping[str, int] | None = None,
    forwarded_allow_ips: list[str] | None = None,
) -> Path:
    server_extra = ""
    if forwarded_allow_ips is not None:
        items = ", ".join(f'"{ip}"' for ip in forwarded_allow_ips)
        server_extra = f"forwarded_allow_ips = [{items}]\n"
    limits_table = ""
    if limits:
        limits_table = "[limits]\n" + "".join(f"{k} = {v}\n" for k, v in limits.items())
    path.write_text(
        f"""\
[server]
host = "127.0.0.1"
port = {port}
base_url = "{base_url}"
mcp_path = "/mcp"
{server_extra}
{upstream_toml(upstream, client_id=CLIENT_ID, client_secret=CLIENT_SECRET)}
[store]
url = "{store_url}"

[keys]
file = "{keys_file}"

{limits_table}"""
    )
    return path


class InProcessProxy:
    """``build_app`` under uvicorn in a daemon thread, with ``upstream_timeout`` seconds upstream."""

    def __init__(self, config: Path, port: int, *, upstream_timeout: float = 1.0) -> None:
        settings = load_settings(config)
        upstream = attrs.evolve(settings.proxy.upstream, timeout=upstream_timeout)
        settings = attrs.evolve(settings, proxy=attrs.evolve(settings.proxy, upstream=upstream))
        self.app, self.proxy, _cleanup = build_app(settings)
        self.netloc = f"127.0.0.1:{port}"
        self.name = "in-process proxy"
        self.server = uvicorn.Server(
            uvicorn.Config(
                self.app, host="127.0.0.1", port=port, lifespan="on", log_level="warning"
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_healthy("http://" + self.netloc, self.thread.is_alive, self.name)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)

    def output(self) -> str:
        return ""


def pkce_pair() -> tuple[str, str]:
    verifier = new_verifier()
    return verifier, s256(verifier)


class FlowError(AssertionError):
    pass


class Flow:
    """One MCP client and one browser against the proxy at ``base_url`` (issuer = ``base_url``)."""

    def __init__(self, base_url: str, *, timeout: float = 15.0, headers: Mapping[str, str] = {}):
        self.base = base_url
        self.http = httpx.Client(follow_redirects=False, timeout=timeout, trust_env=False)
        self.extra = dict(headers)
        self.cookies: dict[str, str] = {}
        self.client: dict[str, Any] = {}
        self.verifier, self.challenge = pkce_pair()

    def close(self) -> None:
        self.http.close()

    def send(self, method: str, url: str, *, browser: bool = False, **kw: Any) -> httpx.Response:
        headers = {**self.extra, **kw.pop("headers", {})}
        if browser and self.cookies:
            headers["cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        resp = self.http.request(method, url, headers=headers, **kw)
        if browser:
            for value in resp.headers.get_list("set-cookie"):
                name, _, rest = value.partition("=")
                if "max-age=0" in rest.lower().replace(" ", "").split(";"):
                    self.cookies.pop(name.strip(), None)  # the proxy clears a used binding cookie
                else:
                    self.cookies[name.strip()] = rest.split(";", 1)[0]
        return resp

    # -- steps, each returning the raw response --------------------------------------------------

    def register(self) -> httpx.Response:
        body = {
            "redirect_uris": [CLIENT_REDIRECT],
            "client_name": "fault client",
            "token_endpoint_auth_method": "client_secret_post",
            "grant_types": ["authorization_code", "refresh_token"],
        }
        resp = self.send("POST", self.base + "/register", json=body)
        if resp.status_code == 201:
            self.client = resp.json()
        return resp

    def authorize(self) -> httpx.Response:
        self.verifier, self.challenge = pkce_pair()
        self.state = "st-" + secrets.token_hex(4)
        query = urlencode(
            {
                "response_type": "code",
                "client_id": self.client["client_id"],
                "redirect_uri": CLIENT_REDIRECT,
                "state": self.state,
                "code_challenge": self.challenge,
                "code_challenge_method": "S256",
                "resource": self.base + "/mcp",
            }
        )
        return self.send("GET", f"{self.base}/authorize?{query}", browser=True)

    def consent_page(self, url: str) -> httpx.Response:
        return self.send("GET", url, browser=True)

    def approve(self, page: httpx.Response) -> httpx.Response:
        form = {**consent_fields(page.text), "decision": "approve"}
        return self.send(
            "POST",
            self.base + "/consent",
            data=form,
            browser=True,
            headers=dict(CONSENT_FORM_HEADERS),  # a form post from the proxy's own page
        )

    def upstream_login(self, url: str) -> str:
        resp = self.http.get(url)
        self.expect(resp, 302, "upstream authorize")
        return resp.headers["location"]

    def callback(self, url: str) -> httpx.Response:
        return self.send("GET", url, browser=True)

    def token(self, code: str) -> httpx.Response:
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "client_id": self.client["client_id"],
            "client_secret": self.client["client_secret"],
            "redirect_uri": CLIENT_REDIRECT,
            "code_verifier": self.verifier,
            "resource": self.base + "/mcp",
        }
        return self.send("POST", self.base + "/token", data=form)

    def refresh(self, refresh_token: str) -> httpx.Response:
        form = {
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": self.client["client_id"],
            "client_secret": self.client["client_secret"],
        }
        return self.send("POST", self.base + "/token", data=form)

    def bearer(self, access_token: str) -> int:
        """404: authenticated (no gateway behind the proxy); 401: refused."""
        resp = self.send(
            "GET", self.base + "/mcp", headers={"authorization": f"Bearer {access_token}"}
        )
        return resp.status_code

    # -- helpers ---------------------------------------------------------------------------------

    @staticmethod
    def expect(resp: httpx.Response, status: int, where: str) -> httpx.Response:
        if resp.status_code != status:
            raise FlowError(f"{where}: {resp.status_code} {resp.text[:300]}")
        return resp

    @staticmethod
    def redirect_params(resp: httpx.Response) -> dict[str, str]:
        location = resp.headers["location"]
        if not location.startswith(CLIENT_REDIRECT + "?"):
            raise FlowError(f"not a redirect to the client: {location}")
        return dict(parse_qsl(urlsplit(location).query))

    def to_callback(self) -> str:
        """authorize -> consent page -> approve -> upstream; returns the proxy's callback URL."""
        consent = self.expect(self.authorize(), 302, "authorize").headers["location"]
        if not consent.startswith(self.base + "/consent?"):
            raise FlowError(f"authorize: redirected to {consent}")
        page = self.expect(self.consent_page(consent), 200, "consent page")
        upstream = self.expect(self.approve(page), 303, "consent approve").headers["location"]
        return self.upstream_login(upstream)

    def code(self) -> str:
        resp = self.expect(self.callback(self.to_callback()), 302, "callback")
        params = self.redirect_params(resp)
        if "code" not in params:
            raise FlowError(f"callback: {params}")
        return params["code"]

    def complete(self) -> dict[str, Any]:
        """register (if needed), authorize ... token, a protected request and a refresh."""
        if not self.client:
            self.expect(self.register(), 201, "register")
        tokens: dict[str, Any] = self.expect(self.token(self.code()), 200, "token").json()
        if self.bearer(tokens["access_token"]) != 404:
            raise FlowError("the fresh access token was refused")
        refreshed = self.expect(self.refresh(tokens["refresh_token"]), 200, "refresh").json()
        if self.bearer(refreshed["access_token"]) != 404:
            raise FlowError("the refreshed access token was refused")
        return dict(refreshed)


# -- the store, read from outside the proxy --------------------------------------------------------


class StoreView:
    """The live records of a store (a SQLite file, or a Redis database through ``redis_url``),
    decoded where the rules need it."""

    def __init__(
        self,
        path: Path | None = None,
        *,
        redis_url: str | None = None,
        store_url: str | None = None,
    ) -> None:
        rows: list[tuple[str, str, bytes, int | None]] = []
        if path is not None:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
            try:
                rows = db.execute(
                    "SELECT kind, key, value, version FROM records WHERE expires_at > ?",
                    (time.time(),),
                ).fetchall()
            finally:
                db.close()
        if redis_url is not None:
            from oauthproxy_adapters.stores.redis import RedisStore  # noqa: PLC0415

            store = RedisStore(redis_url)
            try:
                rows = [(kind, key, value, None) for kind, key, value in store.dump()]
            finally:
                store.close()
        if store_url is not None:  # any other store, through its dump() (no versions)
            from oauthproxy_adapters.stores import open_store  # noqa: PLC0415

            opened: Any = open_store(store_url)
            try:
                rows = [(kind, key, value, None) for kind, key, value in opened.dump()]
            finally:
                opened.close()
        self.rows: dict[tuple[str, str], tuple[bytes, int | None]] = {
            (kind, key): (bytes(value), version) for kind, key, value, version in rows
        }
        self.tx: dict[str, Transaction] = {}
        self.grants: dict[str, Grant] = {}
        for (kind, key), (value, version) in self.rows.items():
            if kind == "tx":
                self.tx[key] = codec.decode(value, Transaction, version)
            elif kind == "grant":
                self.grants[key] = codec.decode(value, Grant, version)

    def count(self, kind: str) -> int:
        return sum(1 for k, _ in self.rows if k == kind)

    def kinds(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for kind, _ in self.rows:
            out[kind] = out.get(kind, 0) + 1
        return out

    def problems(self) -> list[str]:
        found: list[str] = []
        by_grant = {t.grant_id: t for t in self.tx.values() if t.grant_id}
        for (kind, key), (value, _version) in self.rows.items():
            if kind == "code":
                tx = self.tx.get(value.decode())
                if tx is None:
                    found.append(f"code {key[:8]} without its transaction")
                elif tx.code_hash != key or not tx.grant_id or not tx.subject:
                    found.append(f"code {key[:8]} whose transaction does not name it")
                elif tx.state not in ("code_issued", "exchanged", "revoked", "failed"):
                    found.append(f"code {key[:8]} on a transaction in {tx.state}")
            elif kind == "ustate":
                tx = self.tx.get(value.decode())
                if tx is None or tx.state != "upstream_pending" or tx.upstream_state_hash != key:
                    state = tx.state if tx is not None else "none"
                    found.append(f"upstream state {key[:8]} on a transaction in {state}")
        for grant_id in self.grants:
            tx = by_grant.get(grant_id)
            if tx is None or tx.state not in ("exchanged", "revoked"):
                state = tx.state if tx is not None else "none"
                found.append(f"grant {grant_id[:8]} whose code was not consumed ({state})")
        return found

    def orphans(self) -> list[str]:
        """Transactions in ``code_issued`` without their ``code`` record (unreachable)."""
        codes = {key for kind, key in self.rows if kind == "code"}
        return [
            t.id for t in self.tx.values() if t.state == "code_issued" and t.code_hash not in codes
        ]
