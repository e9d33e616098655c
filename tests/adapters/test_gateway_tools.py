"""The gateway's ``[[gateway.tools]]`` rules on real sockets (spec/security.md 38): an MCP-like server
under uvicorn that records every body it receives and answers ``tools/list`` as plain JSON or as
Server-Sent Events cut into small chunks; the gateway under uvicorn in front of it, behind a stub that
injects the principal a test names (the bearer check itself is tested elsewhere; the end-to-end test
runs the real one).

What is proved: a forbidden ``tools/call`` is answered 403 with the step-up challenge (or
``access_denied`` for a group) and never reaches the server, alone or inside a batch; ``tools/list``
answers carry only the tools the caller may call, in JSON, in SSE and on a ``GET`` stream; hostile
bodies get a 4xx and reach nobody; an answer that cannot be filtered never passes; and without rules
the gateway reads nothing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl

import attrs
import httpx
import pytest

from oauthproxy_adapters.asgi import OAuthProxyApp, with_principal
from oauthproxy_adapters.driver import run
from oauthproxy_adapters.gateway import Gateway
from oauthproxy_adapters.gateway_policy import GatewayPolicy, holds_upstream_grant
from oauthproxy_adapters.proxy import AsyncProxy
from oauthproxy_adapters.stores.memory import AsyncMemoryStore
from oauthproxy_adapters.testing.flow import drive, httpx_send, login
from oauthproxy_core import HttpFailure, HttpRequest, HttpResponse
from oauthproxy_core.config import Lifetimes
from oauthproxy_core.handlers.bearer import Principal
from oauthproxy_core.handlers.upstream_token import UpstreamAccess, upstream_access_for
from oauthproxy_core.tokens import Origin
from oauthproxy_core.tool_policy import ToolPolicy, ToolRule
from tests.adapters.live_servers import UvicornThread
from tests.clients.machine_support import ci_bot
from tests.clients.machine_support import harness as machine_harness
from tests.harness import Clock, ScriptedUpstream, keys, make_config

TOOLS = ("whoami", "search", "admin_reset", "admin_stats", "deploy", "db_secret")
RULES = ToolPolicy(
    rules=(
        ToolRule(name="admin_*", scopes=("mcp:admin",)),
        ToolRule(name="deploy", groups=("platform",)),
        ToolRule(name="*_secret", scopes=("mcp:secret",), groups=("security",)),
    )
)
RESOURCE = "http://127.0.0.1:9/mcp"


def principal(scopes: tuple[str, ...], groups: tuple[str, ...] = ()) -> Principal:
    return Principal(
        subject="github:4242",
        client_id="client-abc",
        scopes=scopes,
        resource=RESOURCE,
        grant_id="g1",
        expires_at=2_000_000_000,
        groups=groups,
    )


PRINCIPALS = {
    "basic": principal(("mcp",)),
    "admin": principal(("mcp", "mcp:admin"), ("platform",)),
    "security": principal(("mcp", "mcp:secret"), ("security",)),
    "scoped-outsider": principal(("mcp", "mcp:secret")),
}
#: Who may call what, as the rules above say.
ALLOWED = {
    "basic": {"whoami", "search"},
    "admin": {"whoami", "search", "admin_reset", "admin_stats", "deploy"},
    "security": {"whoami", "search", "db_secret"},
    "scoped-outsider": {"whoami", "search"},
}


class ToolServer:
    """Answers JSON-RPC like an MCP server: ``tools/list`` with ``TOOLS``, ``tools/call`` with the
    tool's name. ``?mode=sse`` streams the answer in 7-byte chunks (``&chunk=N``: N bytes);
    ``?mode=garbage`` answers a listing that is not JSON; a ``GET`` is a stream replaying a
    ``tools/list`` answer."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.headers: list[dict[str, str]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.bodies.append(body)
        self.headers.append({k.decode(): v.decode("latin-1") for k, v in scope["headers"]})
        query = dict(parse_qsl(scope["query_string"].decode()))
        mode, chunk = query.get("mode", ""), int(query.get("chunk", "7"))
        if scope["method"] == "GET":
            listing = {"jsonrpc": "2.0", "id": 7, "result": {"tools": _tools()}}
            stream = b"id: 1\ndata:\n\n" + b"id: 2\ndata: " + json.dumps(listing).encode() + b"\n\n"
            await _sse(send, stream)
            return
        try:
            value = json.loads(body)
        except ValueError:
            await _json(send, 400, b'{"error":"parse"}')
            return
        messages = value if isinstance(value, list) else [value]
        answers = [_answer(m) for m in messages if isinstance(m, dict) and "id" in m]
        data = json.dumps(answers if isinstance(value, list) else answers[0]).encode()
        if mode == "garbage":
            await _json(send, 200, b'{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"admin_')
        elif mode == "garbage-sse":
            bad = b'data: {"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"admin_reset"}]'
            await _sse(send, b"id: 1\ndata:\n\n" + bad + b",}}\n\n" + b"data: after\n\n")
        elif mode == "sse":
            events = b"".join(b"data: " + json.dumps(a).encode() + b"\r\n\r\n" for a in answers)
            await _sse(send, b": hello\n\n" + events, chunk)
        else:
            await _json(send, 200, data)


def _tools() -> list[dict[str, Any]]:
    return [{"name": n, "inputSchema": {"type": "object"}} for n in TOOLS]


def _answer(message: dict[str, Any]) -> dict[str, Any]:
    if message.get("method") == "tools/list":
        return {"jsonrpc": "2.0", "id": message["id"], "result": {"tools": _tools()}}
    name = (message.get("params") or {}).get("name")
    text = f"called {name}"
    return {"jsonrpc": "2.0", "id": message["id"], "result": {"content": [{"text": text}]}}


async def _json(send: Any, status: int, data: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(data))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


async def _sse(send: Any, stream: bytes, chunk: int = 7) -> None:
    headers = [(b"content-type", b"text/event-stream")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for i in range(0, len(stream), chunk):
        piece = stream[i : i + chunk]
        await send({"type": "http.response.body", "body": piece, "more_body": True})
        await asyncio.sleep(0)
    await send({"type": "http.response.body", "body": b""})


class AsPrincipal:
    """Stands in for ``OAuthProxyApp``: the request is verified as ``PRINCIPALS[x-test-as]``."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        who = dict(scope["headers"]).get(b"x-test-as", b"basic").decode()
        await self.app(with_principal(scope, PRINCIPALS[who]), receive, send)


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[ToolServer, str]]:
    app = ToolServer()
    thread = UvicornThread(lambda _base: app)
    try:
        yield app, thread.base
    finally:
        thread.stop()


def _gateway_thread(upstream: str, policy: GatewayPolicy | None) -> UvicornThread:
    return UvicornThread(
        lambda _base: AsPrincipal(Gateway(upstream + "/mcp", mount_path="/mcp", policy=policy))
    )


@pytest.fixture(scope="module")
def gateway(server: tuple[ToolServer, str]) -> Iterator[str]:
    policy = GatewayPolicy(tools=RULES, max_message_bytes=4096, baseline_scopes=("mcp",))
    thread = _gateway_thread(server[1], policy)
    try:
        yield thread.base
    finally:
        thread.stop()


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10.0, trust_env=False) as client:
        yield client


def call(name: str, id_: int = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id_, "method": "tools/call", "params": {"name": name}}


LIST = {"jsonrpc": "2.0", "id": 9, "method": "tools/list"}


def post(
    http: httpx.Client, base: str, body: Any, who: str = "basic", query: str = ""
) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return http.post(
        f"{base}/mcp{query}",
        content=content,
        headers={"content-type": "application/json", "x-test-as": who},
    )


def listed(resp: httpx.Response) -> set[str]:
    assert resp.status_code == 200, resp.text
    if resp.headers["content-type"].startswith("text/event-stream"):
        messages = [
            json.loads(line[5:])
            for line in resp.text.replace("\r\n", "\n").split("\n")
            if line.startswith("data:") and line[5:].strip()
        ]
    else:
        value = resp.json()
        messages = value if isinstance(value, list) else [value]
    return {
        t["name"] for m in messages if "tools" in m.get("result", {}) for t in m["result"]["tools"]
    }


# -- tools/call ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("who", sorted(PRINCIPALS))
def test_invariant_38_calls_are_allowed_exactly_as_the_rules_say(
    who: str, gateway: str, server: tuple[ToolServer, str], http: httpx.Client
) -> None:
    app, _ = server
    for tool in TOOLS:
        before = len(app.bodies)
        body = json.dumps(call(tool)).encode()
        resp = post(http, gateway, body, who)
        if tool in ALLOWED[who]:
            assert resp.status_code == 200, (who, tool, resp.text)
            assert resp.json()["result"]["content"][0]["text"] == f"called {tool}"
            assert app.bodies[-1] == body  # forwarded as it came
        else:
            assert resp.status_code == 403, (who, tool, resp.text)
            assert len(app.bodies) == before, "a forbidden call reached the MCP server"


def test_invariant_38_missing_scope_gets_the_step_up_challenge(
    gateway: str, http: httpx.Client
) -> None:
    resp = post(http, gateway, call("admin_reset"))
    assert resp.status_code == 403
    assert resp.json()["error"] == "insufficient_scope"
    assert resp.headers["www-authenticate"] == (
        'Bearer resource_metadata="http://127.0.0.1:9/.well-known/oauth-protected-resource/mcp", '
        'scope="mcp mcp:admin", error="insufficient_scope"'
    )
    assert "WWW-Authenticate" in resp.headers["access-control-expose-headers"]
    assert resp.headers["cache-control"] == "no-store"


def test_invariant_38_a_group_refusal_invites_no_step_up(gateway: str, http: httpx.Client) -> None:
    # Scopes would not help: no challenge, so a client does not loop re-authorizing.
    for who, tool in (("basic", "deploy"), ("scoped-outsider", "db_secret")):
        resp = post(http, gateway, call(tool), who)
        assert resp.status_code == 403
        assert resp.json()["error"] == "access_denied"
        assert "www-authenticate" not in resp.headers


def test_invariant_38_one_forbidden_call_refuses_the_whole_batch(
    gateway: str, server: tuple[ToolServer, str], http: httpx.Client
) -> None:
    app, _ = server
    before = len(app.bodies)
    batch = [call("whoami", 1), LIST, call("admin_stats", 3), call("search", 4)]
    resp = post(http, gateway, batch)
    assert resp.status_code == 403
    assert 'scope="mcp mcp:admin"' in resp.headers["www-authenticate"]
    assert len(app.bodies) == before
    allowed = post(http, gateway, [call("whoami", 1), call("search", 4)])
    assert allowed.status_code == 200 and len(allowed.json()) == 2


# -- tools/list -------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["", "?mode=sse"])
@pytest.mark.parametrize("who", sorted(PRINCIPALS))
def test_invariant_38_listings_show_only_callable_tools(
    who: str, mode: str, gateway: str, http: httpx.Client
) -> None:
    resp = post(http, gateway, LIST, who, mode)
    assert listed(resp) == ALLOWED[who]
    if mode:
        assert resp.headers["content-type"] == "text/event-stream"
        assert ": hello\n\n" in resp.text  # untouched events pass as they were
    batch = post(http, gateway, [LIST, call("whoami", 2)], who, mode)
    assert listed(batch) == ALLOWED[who]
    assert "called whoami" in batch.text


def test_invariant_38_a_get_stream_is_filtered_too(gateway: str, http: httpx.Client) -> None:
    # A resumed stream may replay a tools/list answer (MCP "Resumability and Redelivery").
    resp = http.get(gateway + "/mcp", headers={"accept": "text/event-stream"})
    assert listed(resp) == ALLOWED["basic"]
    assert resp.text.startswith("id: 1\ndata:\n\n")


def test_invariant_38_the_server_is_asked_for_an_uncompressed_listing(
    gateway: str, server: tuple[ToolServer, str], http: httpx.Client
) -> None:
    app, _ = server
    http.post(
        gateway + "/mcp",
        content=json.dumps(LIST).encode(),
        headers={"accept-encoding": "gzip, br", "content-type": "application/json"},
    )
    assert app.headers[-1]["accept-encoding"] == "identity"


def test_invariant_38_an_unfilterable_listing_never_passes(
    gateway: str, http: httpx.Client
) -> None:
    resp = post(http, gateway, LIST, "basic", "?mode=garbage")
    assert resp.status_code == 502
    assert "admin_" not in resp.text
    # Once a stream has started, it is cut before the event that cannot be filtered.
    received = b""
    with (
        pytest.raises(httpx.RemoteProtocolError),  # the stream breaks mid-read
        http.stream(
            "POST",
            gateway + "/mcp?mode=garbage-sse",
            content=json.dumps(LIST).encode(),
            headers={"content-type": "application/json"},
        ) as stream,
    ):
        assert stream.status_code == 200
        for chunk in stream.iter_raw():
            received += chunk
    assert received.startswith(b"id: 1\ndata:\n\n")
    assert b"admin_reset" not in received and b"after" not in received


# -- hostile bodies ---------------------------------------------------------------------------------


HOSTILE: list[tuple[str, bytes, int]] = [
    ("not json", b"tools/call admin_reset", 400),
    ("trailing data", json.dumps(call("whoami")).encode() + b" {}", 400),
    (
        "duplicate name",
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call",'
        b'"params":{"name":"whoami","name":"admin_reset"}}',
        400,
    ),
    (
        "duplicate method",
        b'{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/call",'
        b'"params":{"name":"admin_reset"}}',
        400,
    ),
    (
        "deep",
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"whoami",'
        b'"arguments":' + b"[" * 200 + b"]" * 200 + b"}}",
        400,
    ),
    ("empty batch", b"[]", 400),
    ("long batch", b"[" + b",".join([b'{"method":"ping"}'] * 101) + b"]", 400),
    (
        "not an object",
        b'[1, {"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"admin_reset"}}]',
        400,
    ),
    ("method not a string", b'{"jsonrpc":"2.0","id":1,"method":["tools/call"]}', 400),
    (
        "name not a string",
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":["admin_reset"]}}',
        400,
    ),
    ("no params", b'{"jsonrpc":"2.0","id":1,"method":"tools/call"}', 400),
    ("NaN", b'{"jsonrpc":"2.0","id":NaN,"method":"tools/call","params":{"name":"whoami"}}', 400),
    ("BOM", b"\xef\xbb\xbf" + json.dumps(call("whoami")).encode(), 400),
    ("UTF-16", json.dumps(call("admin_reset")).encode("utf-16"), 400),
    ("latin-1", b'{"jsonrpc":"2.0","id":"\xe9","method":"tools/call","params":{"name":"x"}}', 400),
    (
        "huge",
        b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":"' + b"a" * 5000 + b'"}}',
        413,
    ),
]


@pytest.mark.parametrize(("what", "body", "status"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_invariant_38_hostile_bodies_get_a_4xx_and_reach_nobody(
    what: str,
    body: bytes,
    status: int,
    gateway: str,
    server: tuple[ToolServer, str],
    http: httpx.Client,
) -> None:
    app, _ = server
    before = len(app.bodies)
    resp = post(http, gateway, body)
    assert resp.status_code == status, (what, resp.text)
    assert resp.json()["error"] == "invalid_request"
    assert len(app.bodies) == before


def test_invariant_38_a_chunked_body_past_the_bound_is_413(
    gateway: str, server: tuple[ToolServer, str], http: httpx.Client
) -> None:
    app, _ = server
    before = len(app.bodies)

    def chunks() -> Iterator[bytes]:
        yield b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":"'
        for _ in range(10):
            yield b"a" * 1000
        yield b'"}}'

    resp = http.post(gateway + "/mcp", content=chunks())
    assert resp.status_code == 413
    assert len(app.bodies) == before


def test_invariant_38_a_compressed_body_cannot_be_inspected(
    gateway: str, http: httpx.Client
) -> None:
    resp = http.post(
        gateway + "/mcp",
        content=b"\x1f\x8b\x08\x00",
        headers={"content-encoding": "gzip", "content-type": "application/json"},
    )
    assert resp.status_code == 415


def test_escapes_spell_the_same_tool(gateway: str, http: httpx.Client) -> None:
    # "\u0061dmin_reset" is admin_reset to every JSON parser: it is judged as such.
    body = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"\\u0061dmin_reset"}}'
    assert post(http, gateway, body).status_code == 403
    assert post(http, gateway, body, "admin").status_code == 200


# -- without rules ------------------------------------------------------------------------------------


def test_without_rules_nothing_is_read(server: tuple[ToolServer, str], http: httpx.Client) -> None:
    app, base = server
    thread = _gateway_thread(base, GatewayPolicy())
    try:
        resp = post(http, thread.base, call("admin_reset"))
        assert resp.status_code == 200
        assert "called admin_reset" in resp.text
        assert listed(post(http, thread.base, LIST)) == set(TOOLS)
        # A body no rule could read is the MCP server's business, as it always was.
        assert post(http, thread.base, b"[]").status_code == 200  # the server answers it
        assert app.bodies[-1] == b"[]"
    finally:
        thread.stop()
    assert Gateway(base + "/mcp", policy=GatewayPolicy()).policy is None


# -- the user's upstream token ------------------------------------------------------------------------


def test_forward_upstream_token_refreshes_and_fails_closed(
    server: tuple[ToolServer, str], http: httpx.Client
) -> None:
    app, base = server
    clock = Clock()
    made: dict[str, Any] = {}

    def build(proxy_base: str) -> Any:
        lifetimes = Lifetimes(access_token=86_400, revocation_staleness=0)
        config = make_config(issuer=proxy_base, lifetimes=lifetimes)
        provider = made["provider"] = ScriptedUpstream(callback_url=config.callback_url)
        provider.issue_refresh = True  # expiring, rotating tokens (a GitHub App: 8 hours)

        async def upstream_http(req: HttpRequest) -> HttpResponse | HttpFailure:
            return provider(req)

        proxy = AsyncProxy(config, keys(), AsyncMemoryStore(), upstream_http, clock=clock)
        policy = GatewayPolicy(upstream_token=proxy.upstream_token, baseline_scopes=("mcp",))
        return OAuthProxyApp(proxy, Gateway(base + "/mcp", mount_path="/mcp", policy=policy))

    thread = UvicornThread(build)
    provider: ScriptedUpstream = made["provider"]
    try:
        session = drive(login(thread.base, provider), httpx_send(http))
        bearer = {"authorization": "Bearer " + session.tokens["access_token"]}

        def mcp(spoof: str | None = None) -> httpx.Response:
            headers = dict(bearer)
            if spoof is not None:
                headers["X-OAuthProxy-Upstream-Token"] = spoof
                headers["x_oauthproxy_upstream_token"] = spoof
            body = json.dumps(call("whoami"))
            return http.post(thread.base + "/mcp", content=body, headers=headers)

        def forwarded() -> list[str]:
            return [v for k, v in app.headers[-1].items() if k == "x-oauthproxy-upstream-token"]

        assert mcp(spoof="client-chosen").status_code == 200
        (first,) = forwarded()
        assert first in provider.tokens and first != "client-chosen"
        assert "x_oauthproxy_upstream_token" not in app.headers[-1]

        # Near the provider token's expiry the proxy refreshes it (rotating the refresh token).
        clock.advance(28_800 - 30)
        refreshes = len([c for c in provider.calls if b"refresh_token" in c.body])
        assert mcp().status_code == 200
        (second,) = forwarded()
        assert second != first and second in provider.tokens
        assert len([c for c in provider.calls if b"refresh_token" in c.body]) == refreshes + 1

        # The provider unreachable: 503, and nothing forwarded without the token.
        clock.advance(28_800)
        provider.fail_token_with = HttpFailure(reason="timeout")
        seen = len(app.bodies)
        unavailable = mcp()
        assert unavailable.status_code == 503
        assert unavailable.json()["error"] == "temporarily_unavailable"
        assert int(unavailable.headers["retry-after"]) > 0
        assert len(app.bodies) == seen

        # The user withdrew the app at the provider: the grant is revoked and the client told to
        # sign in again; nothing forwarded.
        provider.fail_token_with = None
        provider.withdraw(42)
        gone = mcp()
        assert gone.status_code == 401
        assert gone.headers["www-authenticate"].startswith("Bearer resource_metadata=")
        assert 'error="invalid_token"' in gone.headers["www-authenticate"]
        assert len(app.bodies) == seen
        assert mcp().status_code == 401  # the bearer check itself now refuses the token
    finally:
        thread.stop()


def test_no_upstream_token_for_a_principal_that_never_had_one(
    server: tuple[ToolServer, str], http: httpx.Client
) -> None:
    """Another issuer's token and an enterprise ID-JAG's are never even looked up; a machine
    client's grant (client credentials) is, and the core says it holds no provider token
    (``NoUpstreamTokenError``): each is forwarded without the header, never refused."""
    app, base = server
    h, _ = machine_harness()
    machine = h.bearer(json.loads(ci_bot(h).body)["access_token"])
    assert isinstance(machine, Principal) and machine.origin is Origin.GRANT
    looked_up: list[Principal] = []

    async def through_the_core(principal: Principal) -> UpstreamAccess:
        looked_up.append(principal)
        ctx = h.server.context(now=h.clock.now, random=h.random)
        return run(upstream_access_for(ctx, principal), h.store)

    others = [
        attrs.evolve(PRINCIPALS["basic"], origin=Origin.TRUSTED_ISSUER),
        attrs.evolve(PRINCIPALS["basic"], origin=Origin.ENTERPRISE, grant_id=""),
    ]
    assert not any(holds_upstream_grant(p) for p in others)
    assert holds_upstream_grant(machine) and holds_upstream_grant(PRINCIPALS["basic"])
    gateway = Gateway(base + "/mcp", policy=GatewayPolicy(upstream_token=through_the_core))
    current: list[Principal] = []

    class As:
        async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                scope = with_principal(scope, current[-1])
            await gateway(scope, receive, send)

    thread = UvicornThread(lambda _base: As())
    try:
        for principal in (*others, machine):
            current.append(principal)
            resp = http.post(thread.base + "/mcp", content=json.dumps(call("whoami")))
            assert resp.status_code == 200, resp.text
            assert "x-oauthproxy-upstream-token" not in app.headers[-1]
    finally:
        thread.stop()
    assert looked_up == [machine]
