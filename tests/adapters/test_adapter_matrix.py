"""One behaviour, three adapters: the same cases over real loopback sockets and a real httpx client.

- ``asgi``: ``OAuthProxyApp`` under uvicorn;
- ``wsgi``: ``OAuthProxyWSGI`` under ``wsgiref`` (threading server);
- ``h11``: the proxy's own h11 server.

Each server wraps a proxy built from ``tests.harness`` (issuer = the server's real base URL, memory
store, the scripted upstream as HTTP client) around a tiny app that echoes the caller's subject. A
second server per adapter shares the proxy and demands the scope ``admin`` (403 ``insufficient_scope``).
Covered: RFC 8414 / RFC 9728 metadata and JWKS, RFC 7591 registration, the authorization flow through
consent (cookies set and honoured) and the upstream, the RFC 9207 ``iss`` parameter, the token endpoint
(code and refresh), RFC 6750 challenges, RFC 7009 revocation, and the bounds of spec/security.md 28.

The last section sends one table of requests to all three servers at once: each answers it as the
core's front door (``oauthproxy_core.front_door``) decides, and all three answer it alike.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import attrs
import httpx
import pytest

from oauthproxy_adapters.asgi import OAuthProxyApp, principal_from_scope
from oauthproxy_adapters.h11_server import serve
from oauthproxy_adapters.testing.flow import (
    FORM,
    JSON,
    Call,
    Flow,
    Reply,
    Session,
    approve,
    bearer,
    drive,
    login,
    open_consent,
    post_form,
    refresh,
    register,
    request,
)
from oauthproxy_adapters.wsgi import OAuthProxyWSGI, principal_from_environ
from oauthproxy_core import Request, Response
from oauthproxy_core.cookies import BROWSER, CSRF
from oauthproxy_core.front_door import MCP_PREFLIGHT, Door, FrontDoor, protected_prefixes
from oauthproxy_core.handlers.bearer import Principal
from oauthproxy_core.http import json_response
from oauthproxy_core.routes import RouteTable
from tests.adapters.live_servers import (
    H11Thread,
    UvicornThread,
    WsgirefThread,
    async_proxy,
    sync_proxy,
)
from tests.harness import CONSENT_FORM_HEADERS, ScriptedUpstream, make_config

KINDS = ("asgi", "wsgi", "h11")


# -- the tiny wrapped apps: echo the principal on the protected path, 404 elsewhere ----------------
#: Every answer of the wrapped app carries this header: the front-door table tells it apart by it.
ECHO = (("X-Echo", "app"),)


def _echo(principal: Principal | None, path: str) -> Response:
    if principal is None:
        return json_response(404, {"error": "not_found"}, no_store=False, extra_headers=ECHO)
    return json_response(
        200,
        {"subject": principal.subject, "scopes": list(principal.scopes), "path": path},
        extra_headers=ECHO,
    )


async def echo_asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    resp = _echo(principal_from_scope(scope), scope["path"])
    await send(
        {
            "type": "http.response.start",
            "status": resp.status,
            "headers": [(k.lower().encode(), v.encode()) for k, v in resp.headers],
        }
    )
    await send({"type": "http.response.body", "body": resp.body})


def echo_wsgi(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    resp = _echo(principal_from_environ(environ), environ["PATH_INFO"])
    start_response(f"{resp.status} X", list(resp.headers))
    return [resp.body]


async def echo_h11(req: Request, principal: Principal | None) -> Response:
    return _echo(principal, req.path)


# -- the servers ------------------------------------------------------------------------------------
@attrs.define
class Live:
    kind: str
    base: str
    admin_base: str
    upstream: ScriptedUpstream
    http: httpx.Client

    def send(self, call: Call) -> Reply:
        resp = self.http.request(
            call.method, call.url, headers=list(call.headers), content=call.body or None
        )
        return Reply(
            status=resp.status_code,
            headers=tuple((k.lower(), v) for k, v in resp.headers.multi_items()),
            body=resp.content,
        )

    def run(self, flow: Flow[Any]) -> Any:
        return drive(flow, self.send)

    def login(self) -> Session:
        session: Session = self.run(login(self.base, self.upstream))
        return session


def _start(kind: str) -> tuple[list[Any], str, str, ScriptedUpstream]:
    made: dict[str, Any] = {}

    def parts(base: str) -> tuple[Any, ScriptedUpstream]:
        config = make_config(issuer=base)
        upstream = ScriptedUpstream(callback_url=config.callback_url)
        made["upstream"] = upstream
        proxy = sync_proxy(config, upstream) if kind == "wsgi" else async_proxy(config, upstream)
        made["proxy"] = proxy
        return proxy, upstream

    admin = ("admin",)
    main: Any
    second: Any
    if kind == "asgi":
        main = UvicornThread(lambda base: OAuthProxyApp(parts(base)[0], echo_asgi))
        second = UvicornThread(
            lambda _: OAuthProxyApp(made["proxy"], echo_asgi, required_scopes=admin)
        )
    elif kind == "wsgi":
        main = WsgirefThread(lambda base: OAuthProxyWSGI(parts(base)[0], echo_wsgi))
        second = WsgirefThread(
            lambda _: OAuthProxyWSGI(made["proxy"], echo_wsgi, required_scopes=admin)
        )
    else:
        main = H11Thread(lambda base, sock: serve(parts(base)[0], sock=sock, app_handler=echo_h11))
        second = H11Thread(
            lambda _, sock: serve(
                made["proxy"], sock=sock, app_handler=echo_h11, required_scopes=admin
            ),
            loop=main.loop,
        )
    # The second server is stopped first: the h11 one shares the first one's loop.
    return [second, main], main.base, second.base, made["upstream"]


@pytest.fixture(scope="module", params=KINDS)
def live(request: pytest.FixtureRequest) -> Iterator[Live]:
    servers, base, admin_base, upstream = _start(request.param)
    client = httpx.Client(timeout=10.0, trust_env=False)
    try:
        yield Live(request.param, base, admin_base, upstream, client)
    finally:
        client.close()
        for server in servers:
            server.stop()


# -- discovery ----------------------------------------------------------------------------------------
def test_metadata_prm_and_jwks(live: Live) -> None:
    as_meta = live.run(request("GET", live.base + "/.well-known/oauth-authorization-server"))
    assert as_meta.status == 200
    meta = as_meta.json()
    assert meta["issuer"] == live.base  # byte-identical, no trailing slash (spec/interop.md)
    assert meta["registration_endpoint"] == live.base + "/register"
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert as_meta.header("access-control-allow-origin") == "*"

    prm = live.run(request("GET", live.base + "/.well-known/oauth-protected-resource/mcp"))
    assert prm.status == 200
    assert prm.json()["resource"] == live.base + "/mcp"
    assert prm.json()["authorization_servers"] == [live.base]

    jwks = live.run(request("GET", meta["jwks_uri"]))
    assert jwks.status == 200
    assert jwks.json()["keys"] and all("d" not in k for k in jwks.json()["keys"])


def test_registration_answers_201(live: Live) -> None:
    client = live.run(register(live.base))
    assert client["client_id"] and client["token_endpoint_auth_method"] == "none"


# -- the authorization flow ------------------------------------------------------------------------
def test_authorization_flow_to_token(live: Live) -> None:
    session = live.login()
    assert session.redirect["iss"] == live.base and session.redirect["state"] == "client-state-1"
    assert session.tokens["scope"] == "mcp"
    # The consent cookies live in the client's jar under their plain (http loopback) names; the
    # flow's success proves they came back: the consent POST needs the CSRF cookie, the callback the
    # binding cookie set at approval, which the callback then cleared.
    assert live.http.cookies.get(CSRF)
    assert not any(name.startswith(BROWSER + "_") for name in live.http.cookies)


def test_consent_cookie_is_required(live: Live) -> None:
    client = live.run(register(live.base))
    fields = live.run(open_consent(live.base, client))
    # The same form from a client without the CSRF cookie is refused and issues nothing, even
    # with the headers of a same-origin form submission.
    with httpx.Client(timeout=10.0, trust_env=False) as stranger:
        resp = stranger.post(
            live.base + "/consent",
            data={**fields, "decision": "approve"},
            headers=dict(CONSENT_FORM_HEADERS),
        )
    assert resp.status_code == 403
    assert "location" not in resp.headers
    # The browser that holds the cookie may still approve it.
    reply = live.run(approve(live.base, fields))
    assert reply.status == 303


# -- the protected path --------------------------------------------------------------------------
def test_protected_path_reaches_the_app_with_the_principal(live: Live) -> None:
    session = live.login()
    reply = live.run(request("GET", live.base + "/mcp", bearer(session.tokens["access_token"])))
    assert reply.status == 200, reply
    assert reply.json() == {"subject": "idp:42", "scopes": ["mcp"], "path": "/mcp"}


def test_protected_path_without_token_gets_the_exact_challenge(live: Live) -> None:
    reply = live.run(request("POST", live.base + "/mcp", JSON, b"{}"))
    assert reply.status == 401
    assert reply.header_values("www-authenticate") == [
        f'Bearer resource_metadata="{live.base}/.well-known/oauth-protected-resource/mcp", '
        'scope="mcp"'
    ]
    assert reply.header("access-control-allow-origin") == "*"
    assert "WWW-Authenticate" in (reply.header("access-control-expose-headers") or "")


def test_protected_path_with_a_bad_token_is_invalid_token(live: Live) -> None:
    reply = live.run(request("GET", live.base + "/mcp", bearer("not.a.token")))
    assert reply.status == 401
    assert reply.header("www-authenticate") == (
        f'Bearer resource_metadata="{live.base}/.well-known/oauth-protected-resource/mcp", '
        'scope="mcp", error="invalid_token"'
    )
    assert reply.json()["error"] == "invalid_token"


def test_rfc6750_2_1_two_authorization_fields_are_refused(live: Live) -> None:
    """A request carries one set of credentials (RFC 9110 §11.6.2): with a second ``Authorization``
    field, even a copy of the valid one, no adapter picks one for the caller."""
    session = live.login()
    token = session.tokens["access_token"]
    reply = live.run(request("GET", live.base + "/mcp", bearer(token) + bearer(token)))
    assert reply.status == 401
    assert 'error="invalid_token"' in (reply.header("www-authenticate") or "")
    assert live.run(request("GET", live.base + "/mcp", bearer(token))).status == 200


def test_required_scope_missing_is_insufficient_scope(live: Live) -> None:
    session = live.login()
    reply = live.run(
        request("GET", live.admin_base + "/mcp", bearer(session.tokens["access_token"]))
    )
    assert reply.status == 403
    assert reply.header("www-authenticate") == (
        f'Bearer resource_metadata="{live.base}/.well-known/oauth-protected-resource/mcp", '
        'scope="admin", error="insufficient_scope"'
    )


def test_protected_path_preflight(live: Live) -> None:
    reply = live.run(
        request(
            "OPTIONS",
            live.base + "/mcp",
            (("Origin", "http://localhost:6274"), ("Access-Control-Request-Method", "POST")),
        )
    )
    assert reply.status == 204
    assert "Authorization" in (reply.header("access-control-allow-headers") or "")
    assert reply.header("access-control-allow-origin") == "*"


# -- refresh and revocation ------------------------------------------------------------------------
def test_refresh_rotates_and_the_new_token_works(live: Live) -> None:
    session = live.login()
    fresh = live.run(refresh(live.base, session.client, session.tokens["refresh_token"]))
    assert fresh["refresh_token"] != session.tokens["refresh_token"]
    reply = live.run(request("GET", live.base + "/mcp", bearer(fresh["access_token"])))
    assert reply.status == 200 and reply.json()["subject"] == "idp:42"


def test_revocation_then_401(live: Live) -> None:
    session = live.login()
    token = session.tokens["access_token"]
    assert live.run(request("GET", live.base + "/mcp", bearer(token))).status == 200
    reply = live.run(
        post_form(
            live.base + "/revoke",
            {"token": session.tokens["refresh_token"], "client_id": session.client["client_id"]},
        )
    )
    assert reply.status == 200
    reply = live.run(request("GET", live.base + "/mcp", bearer(token)))
    assert reply.status == 401
    assert 'error="invalid_token"' in (reply.header("www-authenticate") or "")


# -- bad input (spec/security.md 28, 29) ------------------------------------------------------------------
def test_malformed_json_registration_is_400_json(live: Live) -> None:
    reply = live.run(request("POST", live.base + "/register", JSON, b'{"redirect_uris": ['))
    assert reply.status == 400
    assert reply.json()["error"] == "invalid_request"
    assert reply.header("cache-control") == "no-store"


def test_wrong_content_type_is_400(live: Live) -> None:
    body = json.dumps({"redirect_uris": ["http://127.0.0.1:9/cb"]}).encode()
    reply = live.run(request("POST", live.base + "/register", FORM, body))
    assert reply.status == 400
    assert reply.json()["error"] == "invalid_request"


def test_body_over_64_kib_is_413(live: Live) -> None:
    body = json.dumps({"redirect_uris": ["http://127.0.0.1:9/cb"], "pad": "x" * 70_000}).encode()
    reply = live.run(request("POST", live.base + "/register", JSON, body))
    assert reply.status == 413
    assert reply.json()["error"] == "invalid_request"


def test_unknown_path_is_404(live: Live) -> None:
    reply = live.run(request("GET", live.base + "/no/such/thing"))
    assert reply.status == 404


def test_wrong_method_is_405(live: Live) -> None:
    reply = live.run(request("GET", live.base + "/token"))
    assert reply.status == 405
    assert reply.header("allow") == "POST"
    assert reply.json()["error"]


# -- the front door: one table of requests, three servers, one decision --------------------------
@pytest.fixture(scope="module")
def trio() -> Iterator[dict[str, tuple[Live, str]]]:
    """All three servers at once, each with a fresh access token of its own proxy."""
    started: list[Any] = []
    clients: list[httpx.Client] = []
    out: dict[str, tuple[Live, str]] = {}
    try:
        for kind in KINDS:
            servers, base, admin_base, upstream = _start(kind)
            started += servers
            # One client per server: cookies are per host, not per port.
            clients.append(httpx.Client(timeout=10.0, trust_env=False))
            live = Live(kind, base, admin_base, upstream, clients[-1])
            out[kind] = (live, live.login().tokens["access_token"])
        yield out
    finally:
        for client in clients:
            client.close()
        for server in started:
            server.stop()


AS = Door.AUTHORIZATION_SERVER
#: (method, path, headers, the door, the status). ``{token}`` is a valid access token of the server.
FRONT_DOOR_TABLE: list[tuple[str, str, tuple[tuple[str, str], ...], Door, int]] = [
    ("GET", "/.well-known/oauth-authorization-server", (), AS, 200),
    ("GET", "/.well-known/oauth-protected-resource/mcp", (), AS, 200),
    ("OPTIONS", "/token", (("Origin", "https://app.example"),), AS, 204),
    ("GET", "/token", (), AS, 405),
    ("PATCH", "/authorize", (), AS, 405),
    ("GET", "/auth/callback", (), AS, 400),
    ("GET", "/register/some-client", (), AS, 401),
    ("GET", "/register/some-client", (("Authorization", "Bearer a b"),), AS, 401),
    ("OPTIONS", "/mcp", (("Origin", "https://app.example"),), Door.PREFLIGHT, 204),
    ("OPTIONS", "/mcp/sub", (), Door.PREFLIGHT, 204),
    ("GET", "/mcp", (), Door.VERIFY, 401),
    ("GET", "/mcp", (("Authorization", ""),), Door.VERIFY, 401),
    ("POST", "/mcp/sub", (("Authorization", "Basic dXNlcjpwYXNz"),), Door.VERIFY, 401),
    ("GET", "/mcp", (("Authorization", "Bearer"),), Door.VERIFY, 401),
    ("GET", "/mcp", (("Authorization", "Bearer {token} extra"),), Door.VERIFY, 401),
    ("GET", "/mcp", (("Authorization", "Bearer {token}"),) * 2, Door.VERIFY, 401),
    ("GET", "/mcp", (("Authorization", "bearer {token}"),), Door.VERIFY, 200),
    ("DELETE", "/mcp/deeper", (("Authorization", "Bearer  {token}"),), Door.VERIFY, 200),
    ("GET", "/mcpx", (("Authorization", "Bearer {token}"),), Door.APP, 404),
    ("OPTIONS", "/elsewhere", (), Door.APP, 404),
    ("GET", "/elsewhere", (), Door.APP, 404),
]


def _outcome(reply: Reply, base: str) -> tuple[Any, ...]:
    """What a client can see of an answer, with the server's own base URL taken out."""

    def plain(value: Any) -> Any:
        if isinstance(value, str):
            return value.replace(base, "BASE")
        return tuple(value) if isinstance(value, list) else value

    body: Any = None
    if (reply.header("content-type") or "").startswith("application/json"):
        body = tuple(
            (k, plain(v))
            for k, v in sorted(reply.json().items())
            if k in ("error", "subject", "scopes", "path")
        )
    return (
        reply.status,
        plain(reply.header("www-authenticate")),
        reply.header("access-control-allow-origin"),
        reply.header("access-control-allow-methods"),
        reply.header("access-control-expose-headers"),
        reply.header("allow"),
        reply.header("x-echo"),
        reply.header("content-type"),
        body,
    )


@pytest.mark.parametrize(
    ("method", "path", "headers", "door", "status"),
    FRONT_DOOR_TABLE,
    ids=[f"{m} {p} {d.value} {s}" for m, p, _, d, s in FRONT_DOOR_TABLE],
)
def test_the_three_adapters_agree_on_the_front_door(
    trio: dict[str, tuple[Live, str]],
    method: str,
    path: str,
    headers: tuple[tuple[str, str], ...],
    door: Door,
    status: int,
) -> None:
    outcomes = {}
    for kind, (live, token) in trio.items():
        config = make_config(issuer=live.base)
        decided = FrontDoor(RouteTable(config), protected_prefixes(config, None))
        assert decided.decide(method, path).door is door, kind
        sent = tuple((k, v.replace("{token}", token)) for k, v in headers)
        reply = live.run(request(method, live.base + path, sent))
        outcome = _outcome(reply, live.base)
        assert reply.status == status, (kind, outcome)
        from_app = reply.header("x-echo") == "app"
        if door is Door.APP:
            assert from_app, kind
        elif door is Door.VERIFY and status == 200:
            assert from_app and reply.json()["subject"] == "idp:42", kind
        else:
            assert not from_app, kind
        if door is Door.PREFLIGHT:
            assert (
                reply.header("access-control-allow-methods")
                == dict(MCP_PREFLIGHT)["Access-Control-Allow-Methods"]
            )
        if door is Door.VERIFY and status != 200:
            assert (reply.header("www-authenticate") or "").startswith(
                f'Bearer resource_metadata="{live.base}/.well-known/oauth-protected-resource/mcp"'
            ), kind
            assert reply.header("access-control-allow-origin") == "*", kind
        outcomes[kind] = outcome
    assert outcomes["wsgi"] == outcomes["asgi"], outcomes
    assert outcomes["h11"] == outcomes["asgi"], outcomes
