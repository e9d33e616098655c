"""Three upstream shapes, each played by a real ``oidc-provider`` on loopback, each driven end to end
through ``oauthproxy serve`` (a process with a TOML config, the gateway in front of a real `mcp`
SDK server) by the real `mcp` SDK client: discovery (RFC 9728, RFC 8414), DCR (RFC 7591), PKCE
(RFC 7636), consent, the token exchange, a tool call through the gateway and a refresh.

- GitHub-shaped (``IDP_PROFILE=github``, ``provider = "github"``): GitHub's authorize and token paths,
  RFC 9207 ``iss=<host>/login/oauth`` on the callback as github.com sends it since 2026 (or none, like
  older Enterprise servers), token answers that are JSON only with ``Accept: application/json`` (and
  form-encoded otherwise, which the proxy must read too), errors as HTTP 200, opaque tokens, no
  refresh token, identity from ``GET /api/v3/user`` with ``X-OAuth-Scopes``. As a GitHub App
  (``IDP_GITHUB_APP=1``, expiring user tokens) behind an `mcp` SDK server that embeds the proxy: the
  tool's upstream token is refreshed, and when the provider has forgotten the grant its
  ``bad_refresh_token`` (HTTP 200) revokes the proxy's grant, after which the client signs in again.
- Google-shaped (``provider = "oidc"`` with discovery): identity from the ID token verified against
  the JWKS with the nonce, ``access_type=offline&prompt=consent``. The same provider also proves
  upstream denial (``access_denied`` reaches the client's redirect URI, nothing is issued) and
  upstream token expiry: with a 3-second upstream access token, a tool of an `mcp` SDK server that
  embeds the proxy (``mcp_sdk.upstream_token``) gets a refreshed token that the provider accepts,
  while the expired one is refused.
- JWT access tokens (``IDP_PROFILE=jwt``: RFC 8707 resource indicators, RFC 9068 JWTs): the provider
  stops in the middle of a sign-in (the client gets ``temporarily_unavailable`` at its redirect URI,
  ``/healthz`` stays 200, no traceback), comes back on the same port with a new signing key, and the
  next sign-in succeeds because the proxy refetches the JWK Set for the unknown ``kid``.

One provider process per shape and one ``oauthproxy serve`` per shape, shared by the module.

spec/security.md 32 against the real provider: an account whose ``email_verified`` is ``false`` (or
absent), or whose GitHub address is unverified, signs in through ``oauthproxy serve``, and the MCP
server behind the gateway (an echo server here) receives no ``X-OAuthProxy-Claim-email``; the same
account with a verified address does.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import pytest
import uvicorn
from mcp.server.mcpserver import MCPServer

from oauthproxy_adapters.app import load_or_create_keyring
from oauthproxy_adapters.config_file import load_settings
from oauthproxy_adapters.demo_mcp import build_demo_mcp_app
from oauthproxy_adapters.http_clients import AsyncHttpClient
from oauthproxy_adapters.mcp_sdk import mcp_auth, upstream_token, with_authorization_server
from oauthproxy_adapters.proxy import AsyncProxy
from oauthproxy_adapters.stores import open_async_store
from oauthproxy_adapters.testing.serve import ServeProcess
from oauthproxy_core.effects import HttpResponse
from oauthproxy_core.upstream import UpstreamDeniedError, parse_token_response
from tests.e2e import conftest_idp as idp_support
from tests.e2e.mcp_client import (
    HeadlessBrowser,
    ToolCallOutcome,
    _Recorder,
    _run,
    free_loopback_port,
    refresh_and_call,
    run_mcp_session,
)

SECRET_ENV = "E2E_PROFILE_UPSTREAM_SECRET"
#: Upstream access token lifetime of the Google-shaped provider: short, so expiry is observable.
SHORT_TTL = 3


# --------------------------------------------------------------------------------------------------
# Processes and servers


class Served:
    """An ASGI app under uvicorn in a thread, on 127.0.0.1."""

    def __init__(self, app: Any, port: int) -> None:
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def proxy_toml(base: str, tmp: Path, upstream: str, gateway: str | None) -> str:
    port = urlsplit(base).port
    gateway_table = f'[gateway]\nupstream_url = "{gateway}"\n' if gateway else ""
    return f"""
[server]
host = "127.0.0.1"
port = {port}
base_url = "{base}"
mcp_path = "/mcp"

[upstream]
client_id = "{idp_support.CLIENT_ID}"
client_secret_env = "{SECRET_ENV}"
allow_insecure_http = true
{upstream}

[consent]
mode = "always"

[store]
url = "sqlite:///{tmp / "state.db"}"

[keys]
file = "{tmp / "keys.json"}"

[lifetimes]
# An upstream revocation is seen at the very next request (the default bound of 5 seconds is
# proved in tests/adapters/test_token_cache.py).
revocation_staleness = 0

{gateway_table}"""


@dataclass
class Stack:
    base: str
    idp: idp_support.IdpProcess
    serve: ServeProcess
    tmp: Path
    idp_env: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def idp_log(self) -> list[dict[str, Any]]:
        response = httpx.get(self.idp.issuer + "/_test/log", timeout=5)
        assert response.status_code == 200, response.text
        seen: list[dict[str, Any]] = response.json()["seen"]
        return seen

    def seen(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.idp_log() if e["kind"] == kind]

    def idp_settings(self, **values: str) -> None:
        response = httpx.post(self.idp.issuer + "/_test/settings?" + urlencode(values), timeout=5)
        assert response.status_code == 200, response.text

    def records(self, kind: str) -> int:
        """How many live records of ``kind`` the proxy's SQLite store holds."""
        with sqlite3.connect(self.tmp / "state.db") as db:
            row = db.execute(
                "SELECT count(*) FROM records WHERE kind = ? AND expires_at > ?",
                (kind, time.time()),
            ).fetchone()
        return int(row[0])


@pytest.fixture(scope="module")
def mcp_backend() -> Iterator[str]:
    """The demo MCP server (identity from the gateway's headers), shared by every serve process."""
    port = free_loopback_port()
    served = Served(build_demo_mcp_app(), port)
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        served.stop()


def _start_stack(
    tmp: Path,
    mcp_backend: str,
    upstream: Callable[[idp_support.IdpProcess], str],
    *,
    idp_env: dict[str, str],
    access_ttl: int = 3600,
    more_redirect_uris: tuple[str, ...] = (),
) -> Stack:
    idp_support.ensure_idp_installed()
    base = f"http://127.0.0.1:{free_loopback_port()}"
    idp = idp_support.start_idp(
        0,
        [base + "/auth/callback", *more_redirect_uris],
        access_ttl=access_ttl,
        extra_env=idp_env,
    )
    try:
        config = tmp / "proxy.toml"
        config.write_text(proxy_toml(base, tmp, upstream(idp), mcp_backend))
        serve = ServeProcess(config, port_of(base), tmp).start(
            env={"PYTHONUNBUFFERED": "1", SECRET_ENV: idp_support.CLIENT_SECRET}
        )
    except BaseException:
        idp.stop()
        raise
    return Stack(base=base, idp=idp, serve=serve, tmp=tmp, idp_env=idp_env)


def _stop_stack(stack: Stack) -> None:
    output = stack.serve.output(tail=None)
    stack.serve.stop()
    stack.idp.stop()
    # Every failure the tests provoked was answered, never crashed through.
    assert "Traceback" not in output, output


def github_upstream(idp: idp_support.IdpProcess) -> str:
    """``[upstream]`` for the GitHub shim of ``idp``, asking for the user's verified address."""
    return f"""provider = "github"
authorize_url = "{idp.issuer}/login/oauth/authorize"
token_url = "{idp.issuer}/login/oauth/access_token"
api_base_url = "{idp.issuer}/api/v3"
scopes = ["read:user", "user:email"]"""


@pytest.fixture(scope="module")
def github_stack(tmp_path_factory: pytest.TempPathFactory, mcp_backend: str) -> Iterator[Stack]:
    stack = _start_stack(
        tmp_path_factory.mktemp("github"),
        mcp_backend,
        github_upstream,
        idp_env={"IDP_PROFILE": "github"},
    )
    yield stack
    _stop_stack(stack)


@pytest.fixture(scope="module")
def google_stack(tmp_path_factory: pytest.TempPathFactory, mcp_backend: str) -> Iterator[Stack]:
    """The Google-shaped provider (3-second access tokens) behind ``oauthproxy serve``; the same
    provider also knows the callback of the embedded proxy of ``test_upstream_token_...``."""
    embedded_base = f"http://127.0.0.1:{free_loopback_port()}"

    def upstream(idp: idp_support.IdpProcess) -> str:
        return f"""provider = "oidc"
issuer = "{idp.issuer}"
scopes = ["openid", "email", "profile"]
identity_source = "id_token"
claims = {{ preferred_username = "preferred_username", email = "email" }}
extra_authorize_params = {{ access_type = "offline", prompt = "consent" }}"""

    stack = _start_stack(
        tmp_path_factory.mktemp("google"),
        mcp_backend,
        upstream,
        idp_env={"IDP_PROFILE": "oidc"},
        access_ttl=SHORT_TTL,
        more_redirect_uris=(embedded_base + "/auth/callback",),
    )
    stack.extra["embedded_base"] = embedded_base
    stack.extra["upstream"] = upstream(stack.idp)
    yield stack
    _stop_stack(stack)


@pytest.fixture(scope="module")
def jwt_stack(tmp_path_factory: pytest.TempPathFactory, mcp_backend: str) -> Iterator[Stack]:
    def upstream(idp: idp_support.IdpProcess) -> str:
        return f"""provider = "oidc"
issuer = "{idp.issuer}"
scopes = ["openid", "profile", "offline_access", "api:read"]
identity_source = "id_token\""""

    stack = _start_stack(
        tmp_path_factory.mktemp("jwt"),
        mcp_backend,
        upstream,
        idp_env={"IDP_PROFILE": "jwt", "IDP_KEY_ID": "upstream-key-1"},
    )
    yield stack
    _stop_stack(stack)


def embedded_proxy(base: str, tmp: Path, upstream: str) -> tuple[AsyncProxy, MCPServer]:
    """The proxy embedded in an `mcp` SDK server (``mcp_sdk``), configured from a TOML file; the
    caller adds tools and serves ``with_authorization_server(server.streamable_http_app(), proxy)``."""
    config = tmp / "embedded.toml"
    config.write_text(proxy_toml(base, tmp, upstream, None))
    settings = load_settings(config, environ={SECRET_ENV: idp_support.CLIENT_SECRET})
    keys = load_or_create_keyring(settings.keys_file)
    proxy = AsyncProxy(settings.proxy, keys, open_async_store("memory://"), AsyncHttpClient())
    return proxy, MCPServer("embedded", log_level="WARNING", **mcp_auth(proxy))


def log_of(idp: idp_support.IdpProcess) -> list[dict[str, Any]]:
    """What a provider saw (``GET /_test/log``)."""
    response = httpx.get(idp.issuer + "/_test/log", timeout=5)
    assert response.status_code == 200, response.text
    seen: list[dict[str, Any]] = response.json()["seen"]
    return seen


def port_of(base: str) -> int:
    port = urlsplit(base).port
    assert port is not None
    return port


# --------------------------------------------------------------------------------------------------
# Flows


async def full_flow(base: str) -> str:
    """The SDK client's whole flow plus a refresh; returns what the tool said."""
    first = await run_mcp_session(base + "/mcp", tool="whoami", expected_issuer=base)
    assert first.authorizations == 1
    assert any("/register" in s for s in first.steps), "DCR was not used"
    assert any("/consent" in s for s in first.steps), first.steps
    second = await refresh_and_call(first)
    assert second.text == first.text
    assert first.tokens is not None and second.tokens is not None
    assert second.tokens.access_token != first.tokens.access_token
    return first.text


async def call_again(previous: ToolCallOutcome) -> ToolCallOutcome:
    """Another call of the same tool by the same client (its provider, token storage and browser),
    forcing nothing: the SDK uses its stored token and reacts to whatever the server answers."""
    return await _run(
        previous.provider,
        previous.browser,
        _Recorder(None),
        previous.storage,
        previous.server_url,
        previous.tool,
        None,
        previous.redirect_uri,
        30.0,
    )


class _StoppableBrowser(HeadlessBrowser):
    """A headless browser that runs ``before_callback`` once, just before it requests the proxy's
    ``/auth/callback`` (the upstream has issued its code by then)."""

    def __init__(self, *args: Any, callback_url: str, before_callback: Callable[[], None] | None):
        super().__init__(*args)
        self.proxy_callback = callback_url
        self.before_callback = before_callback

    async def _send(self, client: Any, method: str, url: str, data: Any) -> httpx.Response:
        if self.before_callback is not None and url.startswith(self.proxy_callback + "?"):
            hook, self.before_callback = self.before_callback, None
            hook()
        return await super()._send(client, method, url, data)


@dataclass
class HandFlow:
    params: dict[str, str]  # the query of the final redirect to the client
    state: str
    client_id: str
    redirect_uri: str
    verifier: str


async def authorize_by_hand(
    base: str, before_callback: Callable[[], None] | None = None
) -> HandFlow:
    """DCR, then an authorization request with PKCE followed through consent and the upstream by a
    headless browser, up to the redirect to the client (captured, not requested)."""
    redirect_uri = f"http://127.0.0.1:{free_loopback_port()}/callback"
    async with httpx.AsyncClient(timeout=10) as client:
        registered = await client.post(
            base + "/register",
            json={
                "client_name": "profiles-by-hand",
                "redirect_uris": [redirect_uri],
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
                "token_endpoint_auth_method": "none",
            },
        )
    assert registered.status_code == 201, registered.text
    client_id = registered.json()["client_id"]
    verifier = secrets.token_urlsafe(48)
    challenge = (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    )
    state = secrets.token_urlsafe(16)
    url = (
        base
        + "/authorize?"
        + urlencode(
            {
                "response_type": "code",
                "client_id": client_id,
                "redirect_uri": redirect_uri,
                "state": state,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
                "resource": base + "/mcp",
            }
        )
    )
    browser = _StoppableBrowser(
        redirect_uri,
        _Recorder(None),
        callback_url=base + "/auth/callback",
        before_callback=before_callback,
    )
    await browser.redirect_handler(url)
    assert browser.callback_url is not None
    assert browser.consent_pages == 1
    params = dict(parse_qsl(urlsplit(browser.callback_url).query, keep_blank_values=True))
    return HandFlow(params, state, client_id, redirect_uri, verifier)


# --------------------------------------------------------------------------------------------------
# GitHub-shaped


def test_github_shaped_upstream_full_flow_json_and_form_token_answers(github_stack: Stack) -> None:
    stack = github_stack
    before = len(stack.idp_log())

    def seen(kind: str) -> list[dict[str, Any]]:
        return [e for e in stack.idp_log()[before:] if e["kind"] == kind]

    text = asyncio.run(full_flow(stack.base))
    # Subject from the numeric id of GET /user, login from the same document.
    assert text.startswith("you are github:4242 (login tester)"), text

    authorize = seen("authorize")
    assert authorize[0]["path"] == "/login/oauth/authorize"
    assert authorize[0]["scope"] == "read:user user:email"
    assert authorize[0]["code_challenge_method"] == "S256"
    answers = seen("github_token_answer")
    assert [(a["format"], a["error"]) for a in answers] == [("json", None)]
    assert "application/json" in answers[0]["accept"]
    tokens = seen("token")
    assert tokens[0]["access_token_format"] == "opaque"
    users = seen("github_user")
    assert [(u["auth_scheme"], u["valid"]) for u in users] == [("Bearer", True)]
    assert "application/json" in users[0]["accept"]
    # The callback carried GitHub's RFC 9207 issuer, which the proxy accepted.
    assert [c["iss"] for c in seen("github_callback")] == [stack.idp.issuer + "/login/oauth"]

    # A GitHub that ignores Accept and answers form-encoded, on a server without RFC 9207 `iss`:
    # the proxy reads that too.
    stack.idp_settings(token_format="form", github_iss="0")
    try:
        text = asyncio.run(full_flow(stack.base))
    finally:
        stack.idp_settings(token_format="auto", github_iss="1")
    assert text.startswith("you are github:4242 (login tester)"), text
    assert [a["format"] for a in seen("github_token_answer")] == ["json", "form"]
    assert seen("github_callback")[-1]["iss"] is None


def test_github_shim_errors_are_http_200_and_the_proxy_reads_them_as_denial(
    github_stack: Stack,
) -> None:
    """The live shim answers a bad code the GitHub way (200 + ``error``), in both formats, and the
    proxy's parser turns each into ``invalid_grant`` rather than a success or a 5xx."""
    url = github_stack.idp.issuer + "/login/oauth/access_token"
    form = {
        "grant_type": "authorization_code",
        "code": "not-a-code",
        "redirect_uri": github_stack.base + "/auth/callback",
        "client_id": idp_support.CLIENT_ID,
        "client_secret": idp_support.CLIENT_SECRET,
    }
    for accept, media_type in (
        ("application/json", "application/json"),
        ("*/*", "application/x-www-form-urlencoded"),
    ):
        answer = httpx.post(url, data=form, headers={"Accept": accept}, timeout=5)
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith(media_type)
        assert "bad_verification_code" in answer.text
        response = HttpResponse(
            status=answer.status_code,
            headers=tuple(answer.headers.items()),
            body=answer.content,
        )
        with pytest.raises(UpstreamDeniedError):
            parse_token_response(response, now=int(time.time()))


def test_github_app_upstream_token_refresh_then_revocation_upstream(
    tmp_path: Path, mcp_backend: str
) -> None:
    """A GitHub App (expiring, refreshable user tokens) behind the embedded proxy: a tool gets the
    user's token refreshed through GitHub's token endpoint and ``GET /user`` accepts it. Then the
    provider forgets everything (the user revoked the App): the refresh is answered the GitHub way,
    HTTP 200 with ``error=bad_refresh_token``, and the proxy revokes its grant (spec/security.md 21), so
    the client's access token stops working at once."""
    base = f"http://127.0.0.1:{free_loopback_port()}"
    env = {"IDP_PROFILE": "github", "IDP_GITHUB_APP": "1"}
    idp = idp_support.start_idp(0, [base + "/auth/callback"], access_ttl=30, extra_env=env)
    served: Served | None = None
    try:
        upstream = f"""provider = "github"
github_app = true
authorize_url = "{idp.issuer}/login/oauth/authorize"
token_url = "{idp.issuer}/login/oauth/access_token"
api_base_url = "{idp.issuer}/api/v3"
"""
        proxy, server = embedded_proxy(base, tmp_path, upstream)
        user_url = idp.issuer + "/api/v3/user"

        @server.tool()
        async def github_login() -> str:
            access = await upstream_token(proxy)
            async with httpx.AsyncClient(timeout=5) as client:
                answer = await client.get(
                    user_url, headers={"Authorization": f"Bearer {access.access_token}"}
                )
            return f"{answer.status_code} {answer.json().get('login')} {access.expires_at}"

        app = with_authorization_server(server.streamable_http_app(), proxy)
        served = Served(app, port_of(base))
        restarted: list[idp_support.IdpProcess] = []

        async def scenario() -> tuple[ToolCallOutcome, list[dict[str, Any]], ToolCallOutcome]:
            first = await run_mcp_session(base + "/mcp", tool="github_login", expected_issuer=base)
            seen = log_of(idp)
            # The provider comes back without any of its grants: the refresh token is dead.
            port = idp.port
            idp.stop()
            restarted.append(
                idp_support.start_idp(port, [base + "/auth/callback"], access_ttl=30, extra_env=env)
            )
            second = await call_again(first)
            assert second.is_error, second.text
            # The revoked grant's access token is refused at once (RFC 6750 §3.1).
            assert first.tokens is not None
            denied = httpx.post(
                base + "/mcp",
                headers={
                    "Authorization": f"Bearer {first.tokens.access_token}",
                    "Accept": "application/json, text/event-stream",
                    "Content-Type": "application/json",
                },
                json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
            )
            assert denied.status_code == 401, denied.text
            assert 'error="invalid_token"' in denied.headers["www-authenticate"]
            # The client recovers by authorizing again, against the provider as it is now.
            third = await call_again(second)
            return first, seen, third

        first, seen, third = asyncio.run(scenario())
        status, login, expires_at = first.text.split()
        assert (status, login) == ("200", "tester"), first.text
        assert int(expires_at) > time.time()  # GitHub Apps' tokens expire (expires_in was read)
        refreshed = [e for e in seen if e["kind"] == "token" and e["grant_type"] == "refresh_token"]
        assert len(refreshed) == 1 and refreshed[0]["shim"] and refreshed[0]["refresh_token"]

        idp = restarted[0]
        answers = [e for e in log_of(idp) if e["kind"] == "github_token_answer"]
        assert (answers[0]["format"], answers[0]["error"]) == ("json", "bad_refresh_token")
        assert third.text.split()[:2] == ["200", "tester"], third.text
        assert third.browser.authorizations == 2  # the first sign-in, and the one after revocation
    finally:
        if served is not None:
            served.stop()
        idp.stop()


# --------------------------------------------------------------------------------------------------
# Google-shaped


def test_google_shaped_upstream_full_flow_with_verified_id_token(google_stack: Stack) -> None:
    stack = google_stack
    jwks_before = len(stack.seen("jwks"))
    userinfo_before = len(stack.seen("userinfo"))
    text = asyncio.run(full_flow(stack.base))
    assert text.startswith("you are oidc:testuser (login "), text

    authorize = stack.seen("authorize")[-1]
    # OIDC Core §3.1.2.1 nonce, and Google's way to get a refresh token.
    assert "nonce" in authorize["params"]
    assert (authorize["prompt"], authorize["access_type"]) == ("consent", "offline")
    assert authorize["scope"] == "openid email profile"
    token = stack.seen("token")[-1]
    assert token["grant_type"] == "authorization_code"
    assert token["id_token_kid"] == "idp-test-rs256"
    # Identity came from the ID token, verified with the provider's JWK Set (fetched at most once
    # for this provider by this proxy); UserInfo was never called.
    assert len(stack.seen("jwks")) - jwks_before <= 1 and stack.seen("jwks")
    assert len(stack.seen("userinfo")) == userinfo_before


def test_upstream_denial_reaches_the_client_redirect_and_issues_nothing(
    google_stack: Stack,
) -> None:
    stack = google_stack
    before = {kind: stack.records(kind) for kind in ("code", "grant")}
    transactions_before = stack.records("tx")
    exchanges_before = len(stack.seen("token"))
    stack.idp_settings(deny="1")
    try:
        flow = asyncio.run(authorize_by_hand(stack.base))
    finally:
        stack.idp_settings(deny="0")
    assert flow.params.get("error") == "access_denied", flow.params
    assert flow.params.get("state") == flow.state
    assert flow.params.get("iss") == stack.base
    assert "code" not in flow.params
    assert {kind: stack.records(kind) for kind in ("code", "grant")} == before
    # The store read above is the live one: the denied transaction itself is in it.
    assert stack.records("tx") == transactions_before + 1
    # The proxy did not even try to redeem anything upstream.
    assert len(stack.seen("token")) == exchanges_before
    assert httpx.get(stack.base + "/healthz").status_code == 200


def test_upstream_token_expiry_and_refresh_for_an_embedded_tool(
    google_stack: Stack, tmp_path: Path
) -> None:
    """A tool of an `mcp` SDK server that embeds the proxy asks for the user's upstream token: the
    short-lived one is refreshed upstream (RFC 6749 §6), and the provider accepts the refreshed
    token at its UserInfo endpoint after the old one has expired and is refused."""
    stack = google_stack
    base = stack.extra["embedded_base"]
    proxy, server = embedded_proxy(base, tmp_path, stack.extra["upstream"])
    handed_out: list[str] = []
    userinfo = stack.idp.userinfo_endpoint

    @server.tool()
    async def upstream_sub() -> str:
        access = await upstream_token(proxy)
        handed_out.append(access.access_token)
        async with httpx.AsyncClient(timeout=5) as client:
            answer = await client.get(
                userinfo, headers={"Authorization": f"Bearer {access.access_token}"}
            )
        return f"{answer.status_code} {answer.json().get('sub')}"

    served = Served(with_authorization_server(server.streamable_http_app(), proxy), port_of(base))
    refreshes_before = len([t for t in stack.seen("token") if t["grant_type"] == "refresh_token"])
    try:

        async def scenario() -> None:
            first = await run_mcp_session(base + "/mcp", tool="upstream_sub", expected_issuer=base)
            assert first.text == "200 testuser", first.text
            await asyncio.sleep(SHORT_TTL + 1)
            second = await refresh_and_call(first)
            assert second.text == "200 testuser", second.text

        asyncio.run(scenario())
    finally:
        served.stop()

    assert len(handed_out) == 2 and handed_out[0] != handed_out[1]
    refreshes = [t for t in stack.seen("token") if t["grant_type"] == "refresh_token"]
    # The upstream token outlives less than the early-refresh margin: every request refreshed it.
    assert len(refreshes) - refreshes_before == 2
    assert all(t["status"] == 200 and t["error"] is None for t in refreshes[refreshes_before:])
    expired = httpx.get(userinfo, headers={"Authorization": f"Bearer {handed_out[0]}"})
    fresh = httpx.get(userinfo, headers={"Authorization": f"Bearer {handed_out[1]}"})
    assert expired.status_code == 401, "the first upstream token should have expired by now"
    assert fresh.status_code == 200 and fresh.json()["sub"] == "testuser"


# --------------------------------------------------------------------------------------------------
# JWT access tokens, outage and key rotation


def test_jwt_upstream_outage_then_key_rotation(jwt_stack: Stack) -> None:
    stack = jwt_stack
    text = asyncio.run(full_flow(stack.base))
    assert text.startswith("you are oidc:testuser (login "), text
    issued = [t for t in stack.seen("token") if t["grant_type"] == "authorization_code"]
    assert issued[-1]["access_token_format"] == "jwt"
    assert issued[-1]["access_token_kid"] == "upstream-key-1"
    assert issued[-1]["id_token_kid"] == "upstream-key-1"
    assert len(stack.seen("jwks")) == 1

    # Outage: the provider goes away after issuing its code, before the proxy redeems it.
    port = stack.idp.port
    flow = asyncio.run(authorize_by_hand(stack.base, before_callback=stack.idp.stop))
    assert not stack.idp.running()
    assert flow.params.get("error") == "temporarily_unavailable", flow.params
    assert flow.params.get("state") == flow.state
    assert flow.params.get("iss") == stack.base
    assert "code" not in flow.params
    assert httpx.get(stack.base + "/healthz").status_code == 200
    # A token request with nothing issued is a clean OAuth error, not a 5xx.
    token = httpx.post(
        stack.base + "/token",
        data={
            "grant_type": "authorization_code",
            "code": "nothing-was-issued",
            "redirect_uri": flow.redirect_uri,
            "code_verifier": flow.verifier,
            "client_id": flow.client_id,
        },
    )
    assert token.status_code == 400 and token.json()["error"] == "invalid_grant", token.text

    # The provider comes back on the same port with a new signing key (a rotation as the proxy
    # sees it): its cached JWK Set lacks the new kid, so it refetches once and accepts the token.
    stack.idp = idp_support.start_idp(
        port,
        stack.idp.redirect_uris,
        extra_env={**stack.idp_env, "IDP_KEY_ID": "upstream-key-2"},
    )
    text = asyncio.run(full_flow(stack.base))
    assert text.startswith("you are oidc:testuser (login "), text
    issued = [t for t in stack.seen("token") if t["grant_type"] == "authorization_code"]
    assert issued[-1]["id_token_kid"] == "upstream-key-2"
    assert issued[-1]["access_token_kid"] == "upstream-key-2"
    assert len(stack.seen("jwks")) == 1
    assert httpx.get(stack.base + "/healthz").status_code == 200


def test_serve_logs_hold_no_upstream_secret(github_stack: Stack, jwt_stack: Stack) -> None:
    for stack in (github_stack, jwt_stack):
        output = stack.serve.output(tail=None)
        assert idp_support.CLIENT_SECRET not in output
        assert json.dumps(idp_support.CLIENT_SECRET) not in output


# --------------------------------------------------------------------------------------------------
# spec/security.md 32: unverified addresses never reach the MCP server


class EchoHeaders:
    """The MCP server behind the gateway: answers with the request headers it received."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":  # Served runs uvicorn with lifespan="on"
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": message["type"] + ".complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        while (await receive()).get("more_body"):
            pass
        body = json.dumps({k.decode(): v.decode("latin-1") for k, v in scope["headers"]}).encode()
        start = {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
        await send(start)
        await send({"type": "http.response.body", "body": body})


def forwarded_identity(stack: Stack) -> dict[str, Any]:
    """Sign in by hand (DCR, PKCE, consent, the real provider), redeem the code, call the MCP path
    through the gateway; returns the access token's claims and the identity headers received."""
    flow = asyncio.run(authorize_by_hand(stack.base))
    assert "code" in flow.params, flow.params
    token = httpx.post(
        stack.base + "/token",
        data={
            "grant_type": "authorization_code",
            "code": flow.params["code"],
            "redirect_uri": flow.redirect_uri,
            "code_verifier": flow.verifier,
            "client_id": flow.client_id,
            "resource": stack.base + "/mcp",
        },
        timeout=10,
    )
    assert token.status_code == 200, token.text
    access = token.json()["access_token"]
    payload = access.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    seen = httpx.post(
        stack.base + "/mcp",
        content=b"{}",
        headers={"Authorization": f"Bearer {access}"},
        timeout=10,
    )
    assert seen.status_code == 200, seen.text
    headers = {k: v for k, v in seen.json().items() if k.startswith("x-oauthproxy-")}
    return {"token": claims, "headers": headers}


@pytest.fixture
def echo_backend() -> Iterator[str]:
    port = free_loopback_port()
    served = Served(EchoHeaders(), port)
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        served.stop()


@pytest.mark.parametrize("unverified", ["false", "absent"])
def test_invariant_32_real_oidc_provider_unverified_email_is_not_forwarded(
    tmp_path: Path, echo_backend: str, unverified: str
) -> None:
    def upstream(idp: idp_support.IdpProcess) -> str:
        return f"""provider = "oidc"
issuer = "{idp.issuer}"
scopes = ["openid", "email", "profile"]
identity_source = "both\""""

    stack = _start_stack(
        tmp_path,
        echo_backend,
        upstream,
        idp_env={"IDP_PROFILE": "oidc", "IDP_EMAIL_VERIFIED": unverified},
    )
    try:
        unvouched = forwarded_identity(stack)
        stack.idp_settings(email_verified="true")
        vouched = forwarded_identity(stack)
        userinfo_calls = len(stack.seen("userinfo"))
    finally:
        _stop_stack(stack)
    email = idp_support.TEST_USER["email"]
    assert unvouched["headers"]["x-oauthproxy-subject"] == "oidc:testuser"
    assert "email" not in unvouched["token"], unvouched
    assert "x-oauthproxy-claim-email" not in unvouched["headers"], unvouched
    assert email not in json.dumps(unvouched)
    # The provider's UserInfo really carried the address; once it vouches, it is forwarded.
    assert userinfo_calls == 2
    assert vouched["token"]["email"] == email
    assert vouched["headers"]["x-oauthproxy-claim-email"] == email


def test_invariant_32_real_github_shim_public_email_is_not_forwarded(
    tmp_path: Path, echo_backend: str
) -> None:
    stack = _start_stack(
        tmp_path,
        echo_backend,
        github_upstream,
        idp_env={"IDP_PROFILE": "github", "IDP_EMAIL_VERIFIED": "false"},
    )
    try:
        unvouched = forwarded_identity(stack)
        stack.idp_settings(email_verified="true")
        vouched = forwarded_identity(stack)
        asked = stack.seen("github_emails")
    finally:
        _stop_stack(stack)
    email = idp_support.TEST_USER["email"]
    # GET /user carried the public address both times; only /user/emails' verified flag counts.
    assert unvouched["headers"]["x-oauthproxy-subject"] == "github:4242"
    assert unvouched["headers"]["x-oauthproxy-claim-login"] == "tester"
    assert "x-oauthproxy-claim-email" not in unvouched["headers"], unvouched
    assert email not in json.dumps(unvouched)
    assert [(a["valid"], a["allowed"]) for a in asked] == [(True, True), (True, True)]
    assert vouched["headers"]["x-oauthproxy-claim-email"] == email
    assert vouched["token"]["email"] == email
