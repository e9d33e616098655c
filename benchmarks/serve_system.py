"""Serve one benchmark system (``systems.py``) with uvicorn on 127.0.0.1, for the loopback benchmark.

Usage: ``python benchmarks/serve_system.py --system ours_memory --port 8123``. Runs until terminated
(the loopback benchmark stops it by its process object).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import systems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n", 1)[0])
    parser.add_argument("--system", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    systems.fastmcp_home()
    import uvicorn  # noqa: PLC0415

    system = systems.build(args.system, base=f"http://127.0.0.1:{args.port}")
    config = uvicorn.Config(
        system.app,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_keep_alive=60,
    )
    server = uvicorn.Server(config)
    try:
        asyncio.run(server.serve())
    finally:
        asyncio.run(system.close())
    return 0


if __name__ == "__main__":
    sys.exit(main())
