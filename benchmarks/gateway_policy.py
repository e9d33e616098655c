"""Benchmark: what the gateway's per-tool rules cost per request (issue 17, spec/security.md 38).

Two gateways in one process, side by side, in front of the same minimal MCP-like server (an ASGI
app answering JSON-RPC, reached through ``httpx.ASGITransport``: no sockets, so the figures are the
gateway's own work and not the network's):

``plain_tools_call``
    Today's gateway (no policy): one ``tools/call`` POST, the body streamed through unread.
``rules_tools_call``
    The gateway with three ``[[gateway.tools]]`` rules: the same allowed ``tools/call``, whose body
    is now read whole, parsed strictly (duplicate members refused) and judged before forwarding.
``rules_tools_call_refused``
    A call the rules forbid: answered 403 with the step-up challenge, the MCP server not contacted.
``plain_tools_list`` / ``rules_tools_list``
    A ``tools/list`` of 40 tools as plain JSON, passed through, and filtered (parsed, filtered,
    re-encoded).
``inspect_tools_call``
    ``jsonrpc_inspection.inspect_request`` and ``refusal`` alone on the same body: the core's part.

Each request goes through the gateway's ASGI interface from a minimal in-process caller (the
principal already verified, as ``OAuthProxyApp`` leaves it), so the client costs next to nothing.
A sample is one request; samples alternate between the variants, the order rotated every round.

Usage: ``python benchmarks/gateway_policy.py [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

import benchlib
import httpx

from oauthproxy_adapters.asgi import with_principal
from oauthproxy_adapters.gateway import Gateway
from oauthproxy_adapters.gateway_policy import GatewayPolicy
from oauthproxy_core.handlers.bearer import Principal
from oauthproxy_core.jsonrpc_inspection import inspect_request, refusal
from oauthproxy_core.tool_policy import ToolPolicy, ToolRule

TOOLS = [f"tool_{i}" for i in range(30)] + [f"admin_{i}" for i in range(10)]
RULES = ToolPolicy(
    rules=(
        ToolRule(name="admin_*", scopes=("mcp:admin",)),
        ToolRule(name="deploy_*", groups=("platform",)),
        ToolRule(name="*_secret", scopes=("mcp:secret",), groups=("security",)),
    )
)
PRINCIPAL = Principal(
    subject="github:4242",
    client_id="client-abc",
    scopes=("mcp",),
    resource="http://127.0.0.1:8931/mcp",
    grant_id="g1",
    expires_at=4_000_000_000,
    claims=(("login", "octocat"),),
)
CALL = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "tools/call",
        "params": {"name": "tool_3", "arguments": {"query": "status of build 1234", "limit": 10}},
    }
).encode()
REFUSED = CALL.replace(b'"tool_3"', b'"admin_3"')
LIST = b'{"jsonrpc":"2.0","id":8,"method":"tools/list"}'
LISTING = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": 8,
        "result": {
            "tools": [
                {
                    "name": name,
                    "description": f"The {name} tool, described in a sentence or two.",
                    "inputSchema": {
                        "type": "object",
                        "properties": {"query": {"type": "string"}, "limit": {"type": "integer"}},
                        "required": ["query"],
                    },
                }
                for name in TOOLS
            ]
        },
    }
).encode()
RESULT = b'{"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":"ok"}]}}'

RATIOS = {
    "rules_tools_call_vs_plain_tools_call": (
        "rules_tools_call",
        "plain_tools_call",
        1.5,
        "An allowed tools/call through the gateway with tool rules",
        "the same through today's gateway",
    ),
    "rules_tools_list_vs_plain_tools_list": (
        "rules_tools_list",
        "plain_tools_list",
        None,
        "A 40-tool tools/list answer filtered by the rules",
        "the same passed through",
    ),
    "rules_tools_call_refused_vs_plain_tools_call": (
        "rules_tools_call_refused",
        "plain_tools_call",
        None,
        "A forbidden tools/call refused at the gateway",
        "an allowed one forwarded by today's gateway",
    ),
}
DESCRIPTIONS = {
    "plain_tools_call": "today's gateway, one tools/call POST forwarded (direct ASGI call)",
    "rules_tools_call": "the gateway with 3 tool rules, the same allowed tools/call",
    "rules_tools_call_refused": "the gateway with 3 tool rules, a forbidden tools/call (403)",
    "plain_tools_list": "today's gateway, a 40-tool tools/list answer (JSON) passed through",
    "rules_tools_list": "the gateway with 3 tool rules, the same answer filtered",
    "inspect_tools_call": "inspect_request + refusal on the tools/call body alone (the core)",
}


async def mcp_server(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers a tools/list with ``LISTING`` and anything else with ``RESULT``."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    data = LISTING if b'"tools/list"' in body else RESULT
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(data))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": data})


def gateway(policy: GatewayPolicy | None) -> Gateway:
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=mcp_server))  # type: ignore[arg-type]
    return Gateway("http://mcp.test/mcp", client=client, policy=policy)


async def request(app: Gateway, body: bytes) -> int:
    """One POST through ``app`` as ``OAuthProxyApp`` hands it over; the response status."""
    scope = with_principal(
        {
            "type": "http",
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/mcp",
            "raw_path": b"/mcp",
            "query_string": b"",
            "headers": [
                (b"host", b"127.0.0.1:8931"),
                (b"content-type", b"application/json"),
                (b"accept", b"application/json, text/event-stream"),
                (b"content-length", b"%d" % len(body)),
            ],
            "client": ("127.0.0.1", 50000),
        },
        PRINCIPAL,
    )
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)  # the client stays connected
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def run(args: argparse.Namespace) -> dict[str, Any]:
    plain = gateway(None)
    ruled = gateway(GatewayPolicy(tools=RULES, baseline_scopes=("mcp",)))

    def through(name: str, app: Gateway, body: bytes, expected: int) -> benchlib.Sample:
        async def sample() -> dict[str, float]:
            t0 = time.perf_counter_ns()
            status = await request(app, body)
            elapsed = (time.perf_counter_ns() - t0) / 1000
            if status != expected:
                raise RuntimeError(f"{name}: status {status}, expected {expected}")
            return {name: elapsed}

        return sample

    async def inspect() -> dict[str, float]:
        t0 = time.perf_counter_ns()
        for _ in range(100):
            summary = inspect_request(CALL)
            refusal(summary, RULES, scopes=PRINCIPAL.scopes, groups=PRINCIPAL.groups)
        return {"inspect_tools_call": (time.perf_counter_ns() - t0) / 1000 / 100}

    benches = {
        "plain_tools_call": through("plain_tools_call", plain, CALL, 200),
        "rules_tools_call": through("rules_tools_call", ruled, CALL, 200),
        "rules_tools_call_refused": through("rules_tools_call_refused", ruled, REFUSED, 403),
        "plain_tools_list": through("plain_tools_list", plain, LIST, 200),
        "rules_tools_list": through("rules_tools_list", ruled, LIST, 200),
        "inspect_tools_call": inspect,
    }
    for _ in range(args.warmup):
        for bench in benches.values():
            await bench()
    started = time.perf_counter()
    samples, round_medians, rounds_run = await benchlib.interleave(
        benches, args.rounds, args.per_round, deadline_s=args.max_seconds
    )
    elapsed = time.perf_counter() - started
    await plain.aclose()
    await ruled.aclose()
    measurements = {
        name: {"description": DESCRIPTIONS[name], **benchlib.summarize_us(samples[name])}
        for name in benches
    }
    ratios = {
        key: benchlib.ratio_entry(
            num, den, measurements, round_medians, target=target, num_words=nw, den_words=dw
        )
        for key, (num, den, target, nw, dw) in RATIOS.items()
    }
    benchlib.print_table(measurements, ratios)
    med = {name: entry["median_us"] for name, entry in measurements.items()}
    notes = [
        f"The rules' own work on a tools/call, read by the core alone, is "
        f"{med['inspect_tools_call']:,.1f} µs ({med['inspect_tools_call'] / med['plain_tools_call']:.1%}"
        " of a forwarded request here): the rest of a forwarded request (the HTTP client, the "
        "upstream round trip in process) dwarfs it, so the two gateways' medians differ by less "
        "than their spread, and a ratio below 1 on a busy machine means no measurable cost, not "
        "a speed-up.",
        "A tools/list answer is parsed, filtered and re-encoded whole (the listing is written again "
        "even when nothing is removed, so the client reads exactly what was checked); a client "
        "lists tools about once per session.",
    ]
    return {
        "benchmark": "gateway_policy",
        "title": "The gateway's tool rules: their cost per request (issue 17)",
        "script": "benchmarks/gateway_policy.py",
        "command": "sh .ci/dev bench --only gateway_policy.py",
        "date": benchlib.now_iso(),
        "machine": benchlib.machine(),
        "settings": {
            "quick": args.quick,
            "rounds": rounds_run,
            "samples_per_round": args.per_round,
            "warmup": args.warmup,
            "interleaving": "one request per sample, variants interleaved, order rotated per round",
            "seconds": round(elapsed, 1),
        },
        "measurements": measurements,
        "ratios": ratios,
        "notes": notes,
        "drift": benchlib.drift(round_medians, list(benches)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="few rounds: a smoke test")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    args.rounds, args.per_round, args.warmup, args.max_seconds = (
        (3, 10, 20, 10.0) if args.quick else (30, 40, 200, 60.0)
    )
    report = asyncio.run(run(args))
    benchlib.write_result("gateway_policy", report, args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
