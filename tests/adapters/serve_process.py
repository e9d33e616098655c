"""``oauthproxy serve`` as a process on a free loopback port, with ``test_cli``'s minimal configuration
(an ``oauth2`` upstream that is never contacted, a memory store), for tests of what the process itself
does on a socket and writes to its log. The process runner is the testing kit's ``ServeProcess``."""

from __future__ import annotations

from pathlib import Path

from oauthproxy_adapters.testing.serve import ServeProcess
from tests.adapters.test_cli import config


def start_serve(work: Path, *options: str) -> ServeProcess:
    """Start ``oauthproxy serve --config <work>/serve.toml *options``; stdout and stderr go to
    ``.log`` of the returned process (``.output()``). Stop it with ``.stop()``."""
    keys = work / "keys.json"
    return ServeProcess.launch(
        work, lambda port: config(f"http://127.0.0.1:{port}", keys, port=port), *options
    )
