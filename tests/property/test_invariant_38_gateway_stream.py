"""spec/security.md 38 through the real ``Gateway`` (ASGI in process, the MCP server an
``httpx.MockTransport``): whatever the batching, and wherever the client's body and the server's
answer are cut into chunks,

- no body carrying a call the caller may not make reaches the MCP server (read with either
  duplicate rule), and the client gets a 4xx for it, never a 5xx;
- a ``tools/list`` answer, as JSON or as Server-Sent Events, reaches the client holding only the
  tools the caller may call.

The same on real sockets, with the challenge's exact form: ``tests/adapters/test_gateway_tools.py``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oauthproxy_adapters.asgi import with_principal
from oauthproxy_adapters.gateway import Gateway
from oauthproxy_adapters.gateway_policy import GatewayPolicy
from oauthproxy_core.handlers.bearer import Principal
from oauthproxy_core.tool_policy import ToolPolicy
from tests.property.test_invariant_38_tool_policy import (
    bodies,
    callers,
    calls_seen,
    first_wins,
    names,
    policies,
    reference_events,
    split,
)

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
cuts = st.lists(st.integers(0, 600), max_size=8)


class Chunks(httpx.AsyncByteStream):
    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            yield piece


def principal(scopes: tuple[str, ...], groups: tuple[str, ...]) -> Principal:
    return Principal(
        subject="github:1",
        client_id="c",
        scopes=scopes,
        resource="http://127.0.0.1/mcp",
        grant_id="g",
        expires_at=2_000_000_000,
        groups=groups,
    )


async def run(
    gateway: Gateway, who: Principal, body: bytes, pieces: list[bytes]
) -> tuple[int, bytes]:
    scope = with_principal(
        {
            "type": "http",
            "method": "POST",
            "path": "/mcp",
            "raw_path": b"/mcp",
            "query_string": b"",
            "headers": [(b"content-type", b"application/json"), (b"transfer-encoding", b"chunked")],
            "client": ("127.0.0.1", 1),
        },
        who,
    )
    queue = [{"type": "http.request", "body": p, "more_body": True} for p in pieces]
    queue.append({"type": "http.request", "body": b"", "more_body": False})
    forever = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if queue:
            return queue.pop(0)
        await forever.wait()
        return {"type": "http.disconnect"}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await gateway(scope, receive, send)
    await gateway.aclose()
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start["status"], b"".join(m.get("body", b"") for m in sent[1:])


@SETTINGS
@given(policies, callers, bodies(), cuts)
def test_invariant_38_no_forbidden_call_reaches_the_server_however_cut(
    policy: ToolPolicy, caller: tuple[tuple[str, ...], tuple[str, ...]], body: bytes, cut: list[int]
) -> None:
    scopes, groups = caller
    received: list[bytes] = []

    def upstream(request: httpx.Request) -> httpx.Response:
        received.append(request.content)
        answer = b'{"jsonrpc":"2.0","id":1,"result":{}}'
        return httpx.Response(
            200, headers={"content-type": "application/json"}, stream=Chunks([answer])
        )

    client = httpx.AsyncClient(transport=httpx.MockTransport(upstream))
    gateway = Gateway(
        "http://mcp.test/mcp",
        client=client,
        policy=GatewayPolicy(tools=policy, max_message_bytes=4096),
    )
    status, _ = asyncio.run(run(gateway, principal(scopes, groups), body, split(body, cut)))
    assert status < 500
    if status != 200:
        assert 400 <= status < 500 and not received
    for forwarded in received:
        assert forwarded == body
        for hook in (None, first_wins):
            for tool in calls_seen(forwarded, hook):
                assert policy.may_call(tool, scopes, groups)


@SETTINGS
@given(policies, callers, st.lists(names, max_size=8), cuts, st.booleans())
def test_invariant_38_listings_reach_the_client_filtered_however_cut(
    policy: ToolPolicy,
    caller: tuple[tuple[str, ...], tuple[str, ...]],
    tools: list[str],
    cut: list[int],
    sse: bool,
) -> None:
    scopes, groups = caller
    answer = json.dumps(
        {"jsonrpc": "2.0", "id": 1, "result": {"tools": [{"name": t} for t in tools]}}
    )
    if sse:
        payload = b"id: 1\r\ndata:\r\n\r\ndata: " + answer.encode() + b"\r\n\r\n"
        media = "text/event-stream"
    else:
        payload, media = answer.encode(), "application/json"

    def upstream(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, headers={"content-type": media}, stream=Chunks(split(payload, cut))
        )

    client = httpx.AsyncClient(transport=httpx.MockTransport(upstream))
    gateway = Gateway("http://mcp.test/mcp", client=client, policy=GatewayPolicy(tools=policy))
    body = b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}'
    status, out = asyncio.run(run(gateway, principal(scopes, groups), body, [body]))
    assert status == 200
    data = reference_events(out)[-1] if sse else out
    kept = [t["name"] for t in json.loads(data)["result"]["tools"]]
    assert kept == [t for t in tools if policy.may_call(t, scopes, groups)]
