"""``oauthproxy serve`` on loopback in front of demo MCP servers, with a fake provider upstream.

The e2e tests of the gateway's rules and of several resources run the same stack: a
``FakeProvider`` and one or more demo MCP servers in threads (``AppThread``), and ``serve`` as a
child process on a free port with a ``proxy.toml`` the test writes from their addresses. Every
piece is stopped when the test ends (the process by its PID).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from oauthproxy_adapters.demo_mcp import build_demo_mcp_app
from oauthproxy_adapters.testing import FakeProvider
from oauthproxy_adapters.testing.serve import AppThread, ServeProcess, free_port

CLIENT_ID = "proxy-client"
CLIENT_SECRET = "provider-secret-" + "e" * 24

#: ``(base, port, provider base, MCP server URLs) -> proxy.toml text``.
ConfigText = Callable[[str, int, str, list[str]], str]


@contextmanager
def demo_stack(tmp_path: Path, mcp_servers: int, config: ConfigText) -> Iterator[dict[str, Any]]:
    """The stack started; ``{"base", "provider", "serve"}`` while the test runs."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    made: dict[str, FakeProvider] = {}

    def provider_app(provider_base: str) -> Any:
        made["provider"] = FakeProvider(
            redirect_uri=base + "/auth/callback",
            base=provider_base,
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
        )
        return made["provider"].app

    threads = [AppThread(provider_app)]
    try:
        for _ in range(mcp_servers):
            threads.append(AppThread(lambda _base: build_demo_mcp_app(), lifespan="on"))
        path = tmp_path / "proxy.toml"
        mcp_urls = [thread.base + "/mcp" for thread in threads[1:]]
        path.write_text(config(base, port, threads[0].base, mcp_urls))
        serve = ServeProcess(path, port, tmp_path)
        try:
            serve.start(env={"PYTHONUNBUFFERED": "1"})
            yield {"base": base, "provider": made["provider"], "serve": serve}
        finally:
            serve.stop()
    finally:
        for thread in reversed(threads):
            thread.stop()
