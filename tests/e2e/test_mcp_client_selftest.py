"""Self-test of the headless MCP OAuth client (tests/e2e/mcp_client.py) against a stand-in.

Two loopback servers run in background threads:

* a stand-in authorization server: the MCP SDK's own auth routes (`create_auth_routes`) over a
  small in-memory `OAuthAuthorizationServerProvider`, whose `authorize` sends the browser to a
  consent page (hidden `txn`/`csrf`, a `Secure` CSRF cookie, `decision=approve|deny` buttons),
  then through a fake upstream that "logs in" by redirects and cookie alone, and back with
  `code`, `state` and an RFC 9207 `iss`;
* an SDK `MCPServer` resource server protected by it (token verifier over the same provider,
  `validate_token_resource=True`), with a `whoami` tool returning the token's client id.

The proxy under development replaces the stand-in AS in the real end-to-end tests.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from html import escape

import pytest

pytest.importorskip("mcp.client.auth", reason="the MCP Python SDK (mcp 2.x) is not installed")

import httpx
import uvicorn
from mcp.server.auth.handlers.metadata import MetadataHandler
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import (
    AccessToken,
    AuthorizationCode,
    AuthorizationParams,
    OAuthAuthorizationServerProvider,
    ProviderTokenVerifier,
    RefreshToken,
    TokenError,
    construct_redirect_uri,
)
from mcp.server.auth.routes import build_metadata, cors_middleware, create_auth_routes
from mcp.server.auth.settings import AuthSettings, ClientRegistrationOptions, RevocationOptions
from mcp.server.mcpserver import MCPServer
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken
from pydantic import AnyHttpUrl, ConfigDict, TypeAdapter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from tests.e2e.mcp_client import (
    REDACTED,
    BrowserFlowError,
    HeadlessBrowser,
    _Recorder,
    redact_url,
    refresh_and_call,
    run_mcp_session,
)

SCOPE = "mcp"
# Plain `AnyHttpUrl("http://host:port")` renders as "http://host:port/"; the SDK's metadata models
# keep an empty path, and RFC 9207 `iss` is compared to the metadata issuer as an exact string.
_URL = TypeAdapter(AnyHttpUrl, config=ConfigDict(url_preserve_empty_path=True))
ACCESS_TTL = 3600


class StandInProvider(
    OAuthAuthorizationServerProvider[AuthorizationCode, RefreshToken, AccessToken]
):
    """In-memory provider; authorization detours through consent and a fake upstream."""

    def __init__(self, issuer: str) -> None:
        self.issuer = issuer
        self.clients: dict[str, OAuthClientInformationFull] = {}
        self.pending: dict[str, tuple[str, AuthorizationParams]] = {}  # txn -> (client_id, params)
        self.codes: dict[str, AuthorizationCode] = {}
        self.access: dict[str, AccessToken] = {}
        self.refresh: dict[str, RefreshToken] = {}
        self.refresh_grants = 0

    async def get_client(self, client_id: str) -> OAuthClientInformationFull | None:
        return self.clients.get(client_id)

    async def register_client(self, client_info: OAuthClientInformationFull) -> None:
        self.clients[client_info.client_id] = client_info

    async def authorize(
        self, client: OAuthClientInformationFull, params: AuthorizationParams
    ) -> str:
        txn = secrets.token_urlsafe(16)
        self.pending[txn] = (client.client_id, params)
        return f"{self.issuer.rstrip('/')}/consent?txn={txn}"

    def complete(self, txn: str) -> str:
        """Mint a code for a finished transaction; the URL to send the browser back to."""
        client_id, params = self.pending.pop(txn)
        code = secrets.token_urlsafe(32)
        self.codes[code] = AuthorizationCode(
            code=code,
            scopes=params.scopes or [SCOPE],
            expires_at=time.time() + 300,
            client_id=client_id,
            code_challenge=params.code_challenge,
            redirect_uri=params.redirect_uri,
            redirect_uri_provided_explicitly=params.redirect_uri_provided_explicitly,
            resource=params.resource,
            subject="alice",
        )
        return construct_redirect_uri(
            str(params.redirect_uri), code=code, state=params.state, iss=self.issuer
        )

    async def load_authorization_code(
        self, client: OAuthClientInformationFull, authorization_code: str
    ) -> AuthorizationCode | None:
        return self.codes.get(authorization_code)

    def _mint(
        self, client_id: str, scopes: list[str], resource: str | None, subject: str | None
    ) -> OAuthToken:
        access, refresh = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        self.access[access] = AccessToken(
            token=access,
            client_id=client_id,
            scopes=scopes,
            expires_at=int(time.time()) + ACCESS_TTL,
            resource=resource,
            subject=subject,
            claims={"iss": self.issuer},
        )
        self.refresh[refresh] = RefreshToken(
            token=refresh, client_id=client_id, scopes=scopes, resource=resource, subject=subject
        )
        return OAuthToken(
            access_token=access,
            expires_in=ACCESS_TTL,
            scope=" ".join(scopes),
            refresh_token=refresh,
        )

    async def exchange_authorization_code(
        self, client: OAuthClientInformationFull, authorization_code: AuthorizationCode
    ) -> OAuthToken:
        if self.codes.pop(authorization_code.code, None) is None:
            raise TokenError("invalid_grant", "code already used")
        return self._mint(
            client.client_id,
            authorization_code.scopes,
            authorization_code.resource,
            authorization_code.subject,
        )

    async def load_refresh_token(
        self, client: OAuthClientInformationFull, refresh_token: str
    ) -> RefreshToken | None:
        return self.refresh.get(refresh_token)

    async def exchange_refresh_token(
        self, client: OAuthClientInformationFull, refresh_token: RefreshToken, scopes: list[str]
    ) -> OAuthToken:
        self.refresh.pop(refresh_token.token, None)  # rotate
        self.refresh_grants += 1
        return self._mint(client.client_id, scopes, refresh_token.resource, refresh_token.subject)

    async def load_access_token(self, token: str) -> AccessToken | None:
        return self.access.get(token)

    async def revoke_token(self, token: AccessToken | RefreshToken) -> None:
        self.access.pop(token.token, None)
        self.refresh.pop(token.token, None)


CSRF_COOKIE = "standin_csrf"
UPSTREAM_COOKIE = "standin_upstream"


def build_as_app(provider: StandInProvider) -> Starlette:
    issuer = _URL.validate_python(provider.issuer)
    registration = ClientRegistrationOptions(
        enabled=True, valid_scopes=[SCOPE], default_scopes=[SCOPE]
    )
    routes = create_auth_routes(provider, issuer, client_registration_options=registration)
    # Same metadata the SDK builds, plus RFC 9207 iss support and public clients.
    metadata = build_metadata(issuer, None, registration, RevocationOptions(enabled=False))
    metadata.authorization_response_iss_parameter_supported = True
    metadata.token_endpoint_auth_methods_supported = [
        "none",
        "client_secret_post",
        "client_secret_basic",
    ]
    routes = [r for r in routes if r.path != "/.well-known/oauth-authorization-server"]
    routes.append(
        Route(
            "/.well-known/oauth-authorization-server",
            endpoint=cors_middleware(MetadataHandler(metadata).handle, ["GET", "OPTIONS"]),
            methods=["GET", "OPTIONS"],
        )
    )

    async def consent_page(request: Request) -> Response:
        txn = request.query_params.get("txn", "")
        if txn not in provider.pending:
            return HTMLResponse("unknown transaction", status_code=400)
        csrf = secrets.token_urlsafe(16)
        page = (
            "<html><body><h1>Allow?</h1>"
            '<form method="post" action="/consent">'
            f'<input type="hidden" name="txn" value="{escape(txn)}">'
            f'<input type="hidden" name="csrf" value="{escape(csrf)}">'
            '<button type="submit" name="decision" value="approve">Approve</button>'
            '<button type="submit" name="decision" value="deny">Deny</button>'
            "</form></body></html>"
        )
        response = HTMLResponse(page)
        # Secure on http loopback on purpose: the headless browser must still send it back.
        response.set_cookie(CSRF_COOKIE, csrf, httponly=True, secure=True, samesite="lax")
        return response

    async def consent_submit(request: Request) -> Response:
        form = await request.form()
        txn = str(form.get("txn", ""))
        if txn not in provider.pending:
            return HTMLResponse("unknown transaction", status_code=400)
        if not secrets.compare_digest(
            str(form.get("csrf", "")), request.cookies.get(CSRF_COOKIE, "")
        ):
            return HTMLResponse("csrf mismatch", status_code=403)
        if form.get("decision") != "approve":
            _, params = provider.pending.pop(txn)
            url = construct_redirect_uri(
                str(params.redirect_uri), error="access_denied", state=params.state
            )
            return RedirectResponse(url, status_code=303)
        return RedirectResponse(f"/upstream/authorize?state={txn}", status_code=303)

    async def upstream_authorize(request: Request) -> Response:
        response = RedirectResponse(
            f"/upstream/login?state={request.query_params['state']}", status_code=302
        )
        response.set_cookie(UPSTREAM_COOKIE, "logged-in", httponly=True)
        return response

    async def upstream_login(request: Request) -> Response:
        if request.cookies.get(UPSTREAM_COOKIE) != "logged-in":
            return HTMLResponse("no upstream session cookie", status_code=401)
        state = request.query_params["state"]
        return RedirectResponse(
            f"/callback/upstream?code=upstream-code&state={state}", status_code=302
        )

    async def upstream_callback(request: Request) -> Response:
        txn = request.query_params.get("state", "")
        if txn not in provider.pending:
            return HTMLResponse("unknown transaction", status_code=400)
        return RedirectResponse(provider.complete(txn), status_code=302)

    routes += [
        Route("/consent", consent_page, methods=["GET"]),
        Route("/consent", consent_submit, methods=["POST"]),
        Route("/upstream/authorize", upstream_authorize),
        Route("/upstream/login", upstream_login),
        Route("/callback/upstream", upstream_callback),
    ]
    return Starlette(routes=routes)


def build_rs_app(provider: StandInProvider, rs_url: str) -> Starlette:
    server = MCPServer(
        "standin-rs",
        log_level="WARNING",  # the default INFO logs every request URL (codes included)
        token_verifier=ProviderTokenVerifier(provider),
        auth=AuthSettings(
            issuer_url=_URL.validate_python(provider.issuer),
            resource_server_url=_URL.validate_python(f"{rs_url}/mcp"),
            required_scopes=[SCOPE],
            validate_token_resource=True,
        ),
    )

    @server.tool()
    def whoami() -> str:
        """The client id of the bearer token this call was made with."""
        token = get_access_token()
        return token.client_id if token is not None else "anonymous"

    return server.streamable_http_app()


class ServerThread:
    """uvicorn on an already-bound loopback socket, in a daemon thread."""

    def __init__(self, app: Starlette, sock: socket.socket) -> None:
        self.sock = sock
        config = uvicorn.Config(app, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [sock]}, daemon=True
        )

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


def _bound_socket() -> tuple[socket.socket, str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock, f"http://127.0.0.1:{sock.getsockname()[1]}"


@dataclass
class StandIn:
    provider: StandInProvider
    as_url: str
    rs_url: str

    @property
    def mcp_url(self) -> str:
        return f"{self.rs_url}/mcp"


@pytest.fixture(scope="module")
def standin() -> Iterator[StandIn]:
    as_sock, as_url = _bound_socket()
    rs_sock, rs_url = _bound_socket()
    provider = StandInProvider(issuer=as_url)
    servers = [
        ServerThread(build_as_app(provider), as_sock),
        ServerThread(build_rs_app(provider, rs_url), rs_sock),
    ]
    started: list[ServerThread] = []
    try:
        for s in servers:
            s.start()
            started.append(s)
        yield StandIn(provider=provider, as_url=as_url, rs_url=rs_url)
    finally:
        for s in reversed(started):
            s.stop()


def test_headless_authorization_and_tool_call(standin: StandIn) -> None:
    seen: list[str] = []
    outcome = asyncio.run(
        run_mcp_session(standin.mcp_url, on_step=seen.append, expected_issuer=standin.as_url)
    )

    assert outcome.client_info is not None
    assert outcome.text == outcome.client_info.client_id
    assert not outcome.is_error
    assert "whoami" in outcome.tool_names
    assert outcome.authorizations == 1
    assert outcome.browser.consent_pages == 1
    assert outcome.browser.callback_iss == standin.as_url
    assert outcome.client_info.token_endpoint_auth_method == "none"
    assert outcome.tokens is not None and outcome.tokens.refresh_token
    assert seen == outcome.steps

    # The SDK's discovery: 401 from the MCP endpoint, PRM via the WWW-Authenticate URL, then AS
    # metadata, registration, the browser's trip, and the code exchange.
    prm = outcome.requests_to("/.well-known/oauth-protected-resource/mcp", actor="mcp")
    assert prm and prm[0].status == 200
    asm = outcome.requests_to("/.well-known/oauth-authorization-server", actor="mcp")
    assert asm and asm[0].status == 200
    assert [e.status for e in outcome.requests_to("/register", actor="mcp")] == [201]
    assert [e.status for e in outcome.token_requests("authorization_code")] == [200]
    browser_paths = [
        e.url.split("?")[0].removeprefix(standin.as_url)
        for e in outcome.exchanges
        if e.actor == "browser"
    ]
    assert browser_paths == [
        "/authorize",
        "/consent",
        "/consent",
        "/upstream/authorize",
        "/upstream/login",
        "/callback/upstream",
    ]
    assert any(s.startswith("callback: http://127.0.0.1:") for s in outcome.steps)

    # No secret in the trail.
    trail = "\n".join(outcome.steps)
    assert outcome.tokens.access_token not in trail
    assert outcome.tokens.refresh_token not in trail
    assert f"code={REDACTED}" in trail


def test_confidential_client_secret_post(standin: StandIn) -> None:
    outcome = asyncio.run(
        run_mcp_session(standin.mcp_url, token_endpoint_auth_method="client_secret_post")
    )
    assert outcome.client_info is not None and outcome.client_info.client_secret
    assert outcome.text == outcome.client_info.client_id


def test_refresh_with_the_same_provider(standin: StandIn) -> None:
    async def scenario() -> None:
        first = await run_mcp_session(standin.mcp_url)
        grants_before = standin.provider.refresh_grants
        second = await refresh_and_call(first)
        assert standin.provider.refresh_grants == grants_before + 1
        assert second.text == first.text
        (refresh,) = second.token_requests("refresh_token")
        assert refresh.url == f"{standin.as_url}/token"  # the advertised token endpoint
        assert second.tokens is not None and first.tokens is not None
        assert second.tokens.refresh_token != first.tokens.refresh_token  # rotated

    asyncio.run(scenario())


def test_restarted_client_refreshes_at_the_resource_origin(standin: StandIn) -> None:
    """SDK behaviour the proxy's deployment must account for (see MCP_SDK_NOTES.md): a new
    provider over stored tokens has no AS metadata, so it sends the refresh to
    `<origin of the MCP URL>/token`; here that is the resource server (404), so the SDK drops
    the tokens and authorizes again in the browser."""

    async def scenario() -> None:
        first = await run_mcp_session(standin.mcp_url)
        with pytest.raises(AssertionError, match="expected one successful refresh"):
            await refresh_and_call(first, reuse_provider=False)

    asyncio.run(scenario())


def test_redact_url() -> None:
    url = "http://h/cb?code=abc&state=xyz&iss=http%3A%2F%2Fh&csrf=1&refresh_token=r"
    redacted = redact_url(url)
    assert "abc" not in redacted and "=r" not in redacted.split("refresh_token")[1][:3]
    assert "state=xyz" in redacted
    assert redacted.count(REDACTED) == 3


def test_consent_form_without_approve_is_an_error() -> None:
    browser = HeadlessBrowser("http://127.0.0.1:1/callback", _Recorder(None))
    page = (
        '<form method="post" action="/consent"><input type="hidden" name="txn" value="t">'
        '<input type="hidden" name="csrf" value="c"><button name="decision" value="deny">No</button></form>'
    )
    with pytest.raises(BrowserFlowError, match="no decision=approve"):
        browser._pick_form(page, "http://x/consent")


def test_a_refusal_pages_one_link_is_followed_only_when_asked() -> None:
    """`follow_refusal_links`: the one link of a 4xx HTML page (the proxy's "Return to the
    application"), and nothing else; the client's error then carries the page."""
    redirect_uri = "http://127.0.0.1:1/callback"
    back = redirect_uri + "?error=access_denied&state=s"
    page = f'<main><p>Not allowed.</p><p><a href="{escape(back)}">Return</a></p></main>'

    def response(status: int, body: str, kind: str = "text/html; charset=utf-8") -> httpx.Response:
        return httpx.Response(status, headers={"content-type": kind}, text=body)

    following = HeadlessBrowser(redirect_uri, _Recorder(None), follow_refusal_links=True)
    assert following._refusal_link(response(403, page)) == back
    assert following._refusal_link(response(403, page + '<a href="/elsewhere">x</a>')) is None
    assert following._refusal_link(response(403, page, "application/json")) is None
    assert following._refusal_link(response(500, page)) is None
    plain = HeadlessBrowser(redirect_uri, _Recorder(None))
    assert plain._refusal_link(response(403, page)) is None

    following.callback_url, following.refusal_page = back, page
    with pytest.raises(BrowserFlowError) as raised:
        asyncio.run(following.callback_handler())
    assert (raised.value.error, raised.value.page) == ("access_denied", page)
