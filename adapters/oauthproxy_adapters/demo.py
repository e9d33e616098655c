"""``oauthproxy demo``: the whole MCP authorization flow on this machine, nothing to configure.

It starts three servers on 127.0.0.1, each on a free port:

- a DEVELOPMENT-ONLY GitHub-shaped provider (``devprovider.py``: one fixed demo user, auto-approve),
- a real MCP server (the `mcp` SDK) with a ``whoami`` tool (``demo_mcp.py``), reachable only through
- the proxy itself (``oauthproxy serve``'s app: authorization server + gateway), on the embedded
  default store (SQLite, ``.oauthproxy/state.db`` under the current directory unless ``--data-dir``),

then runs a scripted MCP client (``demo_client.py``) that performs discovery, dynamic registration,
PKCE, the proxy's consent page, the upstream sign-in, the token exchange, a tool call and a refresh,
printing each step. Exit status 0 means the flow succeeded.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import logging
import os
import secrets
import socket
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import uvicorn

from .app import build_app
from .config_file import ConfigError, parse_settings
from .demo_client import DemoFailure, run_demo_client
from .demo_mcp import build_demo_mcp_app
from .devprovider import BANNER, DevProvider


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Servers:
    """Uvicorn servers on one event loop in a background thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.servers: list[uvicorn.Server] = []
        self.running: list[concurrent.futures.Future[None]] = []
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def start(self, app: Any, port: int) -> None:
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"
        )
        server = uvicorn.Server(config)
        self.servers.append(server)
        self.running.append(asyncio.run_coroutine_threadsafe(server.serve(), self.loop))
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline:
                raise RuntimeError(f"a demo server did not start on port {port}")
            time.sleep(0.02)

    def stop(self) -> None:
        # In reverse order: the proxy first, so nothing calls the MCP server while it stops.
        for server, running in zip(reversed(self.servers), reversed(self.running), strict=True):
            server.should_exit = True
            with contextlib.suppress(Exception):
                running.result(timeout=5)
        # Libraries may leave watcher tasks behind (sse-starlette does); end them quietly.
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(_cancel_leftovers(), self.loop).result(timeout=5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


async def _cancel_leftovers() -> None:
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def main(argv: Sequence[str] = ()) -> int:
    parser = argparse.ArgumentParser(prog="oauthproxy demo", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data-dir",
        default=".oauthproxy",
        help="where the SQLite store and the keys live (default: ./.oauthproxy)",
    )
    args = parser.parse_args(list(argv))
    data = Path(args.data_dir).resolve()
    data.mkdir(mode=0o700, parents=True, exist_ok=True)

    provider_port, mcp_port, proxy_port = _free_port(), _free_port(), _free_port()
    base = f"http://127.0.0.1:{proxy_port}"
    provider_url = f"http://127.0.0.1:{provider_port}"
    client_secret = secrets.token_urlsafe(24)
    try:
        settings = parse_settings(
            {
                "server": {
                    "host": "127.0.0.1",
                    "port": proxy_port,
                    "base_url": base,
                    "mcp_path": "/mcp",
                    "service_name": "oauthproxy demo",
                },
                "upstream": {
                    "provider": "github",
                    "client_id": "demo-client",
                    "client_secret": client_secret,
                    "authorize_url": provider_url + "/login/oauth/authorize",
                    "token_url": provider_url + "/login/oauth/access_token",
                    "api_base_url": provider_url,
                    "allow_insecure_http": True,
                },
                "store": {"url": f"sqlite:///{data / 'state.db'}"},
                "keys": {"file": str(data / "keys.json")},
                "gateway": {"upstream_url": f"http://127.0.0.1:{mcp_port}/mcp"},
            },
            environ=os.environ,
        )
    except ConfigError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1

    # The steps are the output; library request logs would drown them.
    for name in ("httpx", "mcp", "uvicorn", "sse_starlette"):
        logging.getLogger(name).setLevel(logging.WARNING)
    say = _printer()
    say("oauthproxy demo: everything runs on 127.0.0.1")
    say(f"  upstream provider  {provider_url}   ({BANNER})")
    say(
        f"  MCP server         http://127.0.0.1:{mcp_port}/mcp   (reachable through the gateway only)"
    )
    say(
        f"  oauthproxy         {base}   (authorization server + gateway, store {data / 'state.db'})"
    )
    say("")
    servers = _Servers()
    try:
        provider = DevProvider(
            client_id="demo-client",
            client_secret=client_secret,
            redirect_uri=settings.proxy.callback_url,
        )
        servers.start(provider.app, provider_port)
        servers.start(build_demo_mcp_app(), mcp_port)
        app, _proxy, _cleanup = build_app(settings)
        servers.start(app, proxy_port)
        result = run_demo_client(base + "/mcp", say)
    except DemoFailure as exc:
        say(f"\nFAILED: {exc}")
        return 1
    finally:
        servers.stop()
    say("")
    say(
        f"Done: the MCP client holds only the proxy's tokens; the provider's token never left the "
        f"proxy. Tool said: {result['tool_result']}"
    )
    return 0


def _printer() -> Any:
    def say(line: str) -> None:
        print(line, flush=True)

    return say


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
