"""Serve one benchmark system (``systems.py``) on 127.0.0.1, for the loopback benchmark.

Usage: ``python benchmarks/serve_system.py --system ours_memory --port 8123 [--stack NAME]``. Runs
until terminated (the loopback benchmark stops it by its process object).

``--stack`` is the HTTP layer under the system's ASGI app:

``uvicorn-h11``
    uvicorn with its pure-Python parser (h11) on the standard asyncio loop: what a plain
    ``pip install uvicorn`` runs, hence what fastmcp and the mcp SDK run as shipped.
``uvicorn-httptools``
    uvicorn with the httptools parser on the standard asyncio loop.
``uvicorn-httptools-uvloop``
    uvicorn with httptools on uvloop: what ``uvicorn[standard]`` (and ``oauthproxy[fast]``) runs.
``uvicorn-httptools-uvloop-coalesced``
    the same, one socket write per response (``oauthproxy_adapters.write_coalescing``).
``serve``
    what ``oauthproxy serve`` runs on this install (``oauthproxy_adapters.cli.serve_protocol``).
``h11-server``
    the project's own h11 server (``oauthproxy_adapters.h11_server``), ``ours_*`` systems only; the
    protected MCP endpoint answers the same fixed reply as the ASGI systems.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import systems

STACKS = (
    "uvicorn-h11",
    "uvicorn-httptools",
    "uvicorn-httptools-uvloop",
    "uvicorn-httptools-uvloop-coalesced",
    "serve",
    "h11-server",
)


def uvicorn_settings(stack: str) -> tuple[Any, str]:
    """(http, loop) for uvicorn.Config."""
    if stack == "serve":
        from oauthproxy_adapters.cli import serve_protocol  # noqa: PLC0415

        return serve_protocol()
    if stack == "uvicorn-httptools-uvloop-coalesced":
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol  # noqa: PLC0415

        from oauthproxy_adapters.write_coalescing import coalescing  # noqa: PLC0415

        return coalescing(HttpToolsProtocol), "uvloop"
    return {
        "uvicorn-h11": ("h11", "asyncio"),
        "uvicorn-httptools": ("httptools", "asyncio"),
        "uvicorn-httptools-uvloop": ("httptools", "uvloop"),
    }[stack]


async def run_h11_server(system: systems.System, port: int) -> None:
    from oauthproxy_adapters.h11_server import serve  # noqa: PLC0415
    from oauthproxy_core import Response  # noqa: PLC0415

    reply = Response(
        status=200, headers=(("Content-Type", "application/json"),), body=systems.MCP_REPLY
    )

    def mcp(_request: object, _principal: object) -> Response:
        return reply

    server = await serve(system.extra["proxy"], port=port, app_handler=mcp)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n", 1)[0])
    parser.add_argument("--system", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--stack", choices=STACKS, default="uvicorn-h11")
    args = parser.parse_args(argv)
    systems.fastmcp_home()

    system = systems.build(args.system, base=f"http://127.0.0.1:{args.port}")
    if args.stack == "h11-server":
        try:
            asyncio.run(run_h11_server(system, args.port))
        finally:
            asyncio.run(system.close())
        return 0

    import uvicorn  # noqa: PLC0415

    http, loop = uvicorn_settings(args.stack)
    config = uvicorn.Config(
        system.app,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_keep_alive=60,
        http=http,
        loop=loop,
    )
    server = uvicorn.Server(config)
    try:
        server.run()
    finally:
        asyncio.run(system.close())
    return 0


if __name__ == "__main__":
    sys.exit(main())
