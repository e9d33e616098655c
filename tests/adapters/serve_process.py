"""``oauthproxy serve`` as a process on a free loopback port, with ``test_cli``'s minimal configuration
(an ``oauth2`` upstream that is never contacted, a memory store), for tests of what the process itself
does on a socket and writes to its log."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.adapters.test_cli import config
from tests.e2e.test_multi_instance import ProxyProcess, oauthproxy_command


def start_serve(work: Path, *options: str) -> ProxyProcess:
    """Start ``oauthproxy serve --config <work>/proxy.toml *options``; stdout and stderr go to
    ``.log`` of the returned process (``.output()``). Stop it with ``.stop()``."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    path = work / "proxy.toml"
    path.write_text(config(f"http://127.0.0.1:{port}", work / "keys.json", port=port))
    command = [*oauthproxy_command(), "serve", "--config", str(path), *options]
    return ProxyProcess(path, port, work, name="serve", command=command).start()
