"""Shared pieces of the integration tests: real servers on loopback, the development provider as the
upstream, and headless OAuth clients (the `mcp` SDK's and FastMCP's) that drive the consent form.

Everything binds 127.0.0.1 and is stopped through the object that started it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import uvicorn
from fastmcp.client.auth import OAuth
from mcp.shared.auth import OAuthClientMetadata

from oauthproxy_adapters.devprovider import DevProvider
from oauthproxy_core import ProxyConfig, UpstreamProfile
from tests.adapters.live_servers import WsgirefThread, base_url, bound_socket
from tests.e2e.mcp_client import (
    HeadlessBrowser,
    InMemoryTokenStorage,
    _Recorder,
    _StorageExpiryAwareProvider,
    free_loopback_port,
)
from tests.harness import make_config, make_profile

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "adapters" / "examples"
DEV_CLIENT_ID = "gh-app"
DEV_CLIENT_SECRET = "gh-secret"


class Uvicorn:
    """An ASGI app under uvicorn in a thread, on a socket bound before the app is built."""

    def __init__(self, app: Any, sock: socket.socket, *, lifespan: str = "on") -> None:
        self.base = base_url(sock)
        self._sock = sock
        config = uvicorn.Config(app, log_level="warning", lifespan=lifespan, http="h11", ws="none")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self._sock.close()


class Upstream:
    """The development provider (GitHub-shaped, PKCE and client secret checked) on loopback."""

    def __init__(self, proxy_base: str) -> None:
        self.provider = DevProvider(
            client_id=DEV_CLIENT_ID,
            client_secret=DEV_CLIENT_SECRET,
            redirect_uri=proxy_base + "/auth/callback",
        )
        self.served = Uvicorn(self.provider.app, bound_socket(), lifespan="off")
        self.base = self.served.base

    def profile(self) -> UpstreamProfile:
        return make_profile(
            name="github",
            authorize_url=self.base + "/login/oauth/authorize",
            token_url=self.base + "/login/oauth/access_token",
            userinfo_url=self.base + "/user",
            client_id=DEV_CLIENT_ID,
            client_secret=DEV_CLIENT_SECRET,
            issuer=None,
        )

    def config(self, issuer: str, **overrides: Any) -> ProxyConfig:
        return make_config(issuer=issuer, upstream=self.profile(), **overrides)

    def toml(self, base: str, *, keys_file: Path, mcp_path: str = "/mcp") -> str:
        """A ``proxy.toml`` for an example served at ``base`` with this provider upstream."""
        port = base.rsplit(":", 1)[1]
        return f"""
[server]
host = "127.0.0.1"
port = {port}
base_url = "{base}"
mcp_path = "{mcp_path}"

[upstream]
provider = "github"
client_id = "{DEV_CLIENT_ID}"
client_secret = "{DEV_CLIENT_SECRET}"
authorize_url = "{self.base}/login/oauth/authorize"
token_url = "{self.base}/login/oauth/access_token"
api_base_url = "{self.base}"
allow_insecure_http = true

[store]
url = "memory://"

[keys]
file = "{keys_file}"
"""

    def stop(self) -> None:
        self.served.stop()


@contextlib.contextmanager
def asgi_behind_proxy(
    build: Callable[[str, Upstream], Any], *, lifespan: str = "on"
) -> Iterator[tuple[str, Upstream]]:
    """``build(base, upstream) -> app`` served on loopback, with a development provider upstream."""
    sock = bound_socket()
    base = base_url(sock)
    upstream = Upstream(base)
    try:
        server = Uvicorn(build(base, upstream), sock, lifespan=lifespan)
    except BaseException:
        upstream.stop()
        sock.close()
        raise
    try:
        yield base, upstream
    finally:
        server.stop()
        upstream.stop()


@contextlib.contextmanager
def wsgi_behind_proxy(build: Callable[[str, Upstream], Any]) -> Iterator[tuple[str, Upstream]]:
    """Like ``asgi_behind_proxy`` for a WSGI app (a threading ``wsgiref`` server)."""
    holder: dict[str, Upstream] = {}

    def make(base: str) -> Any:
        holder["upstream"] = Upstream(base)
        return build(base, holder["upstream"])

    server = WsgirefThread(make)
    try:
        yield server.base, holder["upstream"]
    finally:
        server.stop()
        holder["upstream"].stop()


# ------------------------------------------------------------------------------------------------
# Clients


class OAuthGet:
    """The `mcp` SDK's ``OAuthClientProvider`` as the auth of a plain HTTP client.

    The first request to a protected URL gets the 401 challenge; the SDK then discovers the
    metadata, registers (DCR), authorizes with PKCE through the headless browser (which approves
    the consent page) and redeems the code, and repeats the request with the access token.
    """

    def __init__(self, resource: str, *, scope: str | None = None) -> None:
        self.recorder = _Recorder(None)
        redirect_uri = f"http://127.0.0.1:{free_loopback_port()}/callback"
        self.browser = HeadlessBrowser(redirect_uri, self.recorder)
        self.storage = InMemoryTokenStorage()
        metadata = OAuthClientMetadata.model_validate(
            {
                "client_name": "integration-test",
                "redirect_uris": [redirect_uri],
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
                "token_endpoint_auth_method": "none",
                "scope": scope,
            }
        )
        self.provider = _StorageExpiryAwareProvider(
            server_url=resource,
            client_metadata=metadata,
            storage=self.storage,
            redirect_handler=self.browser.redirect_handler,
            callback_handler=self.browser.callback_handler,
        )

    async def get(self, url: str) -> httpx2.Response:
        async with httpx2.AsyncClient(
            auth=self.provider,
            timeout=20,
            event_hooks={"response": [self.recorder.on_mcp_response]},
        ) as client:
            response = await client.get(url)
            await response.aread()
            return response

    @property
    def access_token(self) -> str:
        assert self.storage.tokens is not None
        return self.storage.tokens.access_token


class HeadlessFastMCPOAuth(OAuth):
    """FastMCP's own ``OAuth`` client helper with the browser replaced by ``HeadlessBrowser``.

    FastMCP opens a browser in ``redirect_handler`` and then runs its callback server in
    ``callback_handler``. Here the headless browser walks the authorization URL (consent approved,
    upstream followed) up to the redirect to FastMCP's callback, and that last hop is delivered to
    FastMCP's real callback server once it listens.
    """

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)  # FastMCP's default redirect URI: http://localhost:<port>/callback
        self.recorder = _Recorder(None)
        self.deliveries: list[asyncio.Task[None]] = []
        self.consents = 0

    async def redirect_handler(self, authorization_url: str) -> None:
        redirect_uri = str(self.context.client_metadata.redirect_uris[0])  # type: ignore[index]
        browser = HeadlessBrowser(redirect_uri, self.recorder)
        await browser.redirect_handler(authorization_url)
        self.consents += browser.consent_pages
        assert browser.callback_url is not None
        self.deliveries.append(asyncio.create_task(_deliver(browser.callback_url)))


async def _deliver(url: str) -> None:
    async with httpx.AsyncClient(timeout=5) as client:
        for _ in range(200):
            try:
                await client.get(url)
                return
            except httpx.TransportError:
                await asyncio.sleep(0.02)
    raise AssertionError("FastMCP's callback server never listened")


# ------------------------------------------------------------------------------------------------
# Example applications, run as their own processes


class ExampleProcess:
    """``python adapters/examples/<name>/app.py`` with ``OAUTHPROXY_CONFIG`` set, stopped by PID."""

    def __init__(self, name: str, config_path: Path, base: str) -> None:
        env = dict(os.environ, OAUTHPROXY_CONFIG=str(config_path), PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        self.log = config_path.with_suffix(".log")
        self._log_file = open(self.log, "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, str(EXAMPLES / name / "app.py")],
            env=env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            cwd=config_path.parent,
        )
        self.base = base
        deadline = time.monotonic() + 30
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"example {name} exited: {self.output()}")
            try:
                httpx.get(base + "/.well-known/oauth-authorization-server", timeout=1)
                return
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"example {name} did not start: {self.output()}") from None
                time.sleep(0.05)

    def output(self) -> str:
        self._log_file.flush()
        return self.log.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log_file.close()
