"""The gateway's tool rules under hostile input, on real sockets (spec/security.md 38, 29): uvicorn in
front of the gateway with ``[[gateway.tools]]`` rules, uvicorn in front of an MCP-like server that
records every body it receives (``tests/adapters/test_gateway_tools.ToolServer``).

Whatever the body (a JSON-RPC message or batch with smuggled duplicates, escapes, deep nesting, huge
strings, stray bytes, cut anywhere by chunked transfer), the answer is never a 5xx and no body the
MCP server receives calls a forbidden tool under either duplicate rule; whatever size the MCP
server cuts its Server-Sent Events into, down to single bytes, the listing the client reads names
only callable tools.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oauthproxy_adapters.gateway_policy import GatewayPolicy
from tests.adapters.live_servers import UvicornThread
from tests.adapters.test_gateway_tools import (
    ALLOWED,
    LIST,
    PRINCIPALS,
    RULES,
    TOOLS,
    ToolServer,
    _gateway_thread,
    listed,
)
from tests.property.test_invariant_38_tool_policy import bodies, calls_seen, first_wins, names

SOAK = os.environ.get("OAUTHPROXY_FUZZ_EXAMPLES")
FUZZ = settings(
    max_examples=int(SOAK) if SOAK else 120,
    deadline=None,
    derandomize=not SOAK,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def stack() -> Iterator[tuple[ToolServer, str, httpx.Client]]:
    app = ToolServer()
    server = UvicornThread(lambda _base: app)
    policy = GatewayPolicy(tools=RULES, max_message_bytes=8192, baseline_scopes=("mcp",))
    gateway = _gateway_thread(server.base, policy)
    try:
        with httpx.Client(timeout=10.0, trust_env=False) as http:
            yield app, gateway.base, http
    finally:
        gateway.stop()
        server.stop()


@st.composite
def hostile(draw: st.DrawFn) -> bytes:
    """A JSON-RPC body, then maybe mangled: nested, padded, prefixed, truncated or garbled."""
    body = draw(bodies(st.sampled_from(TOOLS) | names))
    how = draw(st.sampled_from(["as is", "deep", "huge", "bom", "cut", "garble", "escape"]))
    if how == "deep":
        depth = draw(st.integers(10, 400))
        return body[:-1] + b',"x":' + b"[" * depth + b"]" * depth + body[-1:]
    if how == "huge":
        return body[:-1] + b',"x":"' + b"a" * draw(st.integers(1000, 20_000)) + b'"' + body[-1:]
    if how == "bom":
        return b"\xef\xbb\xbf" + body
    if how == "cut":
        return body[: draw(st.integers(0, len(body)))]
    if how == "garble":
        at = draw(st.integers(0, len(body)))
        return body[:at] + draw(st.binary(min_size=1, max_size=4)) + body[at:]
    if how == "escape":
        return body.replace(b'"admin', b'"\\u0061dmin').replace(b'"method"', b'"\\u006dethod"')
    return body


@FUZZ
@given(
    body=hostile(),
    who=st.sampled_from(sorted(PRINCIPALS)),
    chunk=st.integers(1, 64),
    chunked=st.booleans(),
)
def test_invariant_38_hostile_bodies_never_5xx_never_a_forbidden_call(
    stack: tuple[ToolServer, str, httpx.Client], body: bytes, who: str, chunk: int, chunked: bool
) -> None:
    app, base, http = stack
    before = len(app.bodies)

    def pieces() -> Iterator[bytes]:
        for i in range(0, len(body), chunk):
            yield body[i : i + chunk]

    resp = http.post(
        base + "/mcp",
        content=pieces() if chunked else body,
        headers={"content-type": "application/json", "x-test-as": who},
    )
    assert resp.status_code < 500, (resp.status_code, resp.text, body)
    received = app.bodies[before:]
    if resp.status_code in (403, 413, 415) or not received:
        # Refused at the gateway (an empty body, which calls nothing, is the server's to refuse).
        assert not received and 400 <= resp.status_code < 500
    principal = PRINCIPALS[who]
    for forwarded in received:
        assert forwarded == body
        for hook in (None, first_wins):
            for tool in calls_seen(forwarded, hook):
                assert RULES.may_call(tool, principal.scopes, principal.groups), (tool, who, body)


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 13, 64, 4096])
@pytest.mark.parametrize("who", sorted(PRINCIPALS))
def test_invariant_38_an_sse_listing_cut_into_any_size_leaks_nothing(
    stack: tuple[ToolServer, str, httpx.Client], chunk: int, who: str
) -> None:
    _, base, http = stack
    resp = http.post(
        f"{base}/mcp?mode=sse&chunk={chunk}",
        content=json.dumps(LIST).encode(),
        headers={"content-type": "application/json", "x-test-as": who},
    )
    assert listed(resp) == ALLOWED[who]
