"""Issue 4: when Redis goes away the proxy answers 503 ``temporarily_unavailable`` promptly, never
hangs, and recovers once Redis is back. Uses a private ``redis-server`` on its own loopback port,
stopped and restarted by PID."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from oauthproxy_adapters.stores.redis import RedisStore
from tests.harness import Harness

REDIS_SERVER = shutil.which("redis-server")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    def __init__(self, port: int, workdir: Path) -> None:
        if REDIS_SERVER is None:
            pytest.fail("redis-server is required for this test (sh .ci/dev test installs it)")
        self.port = port
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert REDIS_SERVER is not None
        self.proc = subprocess.Popen(
            [
                REDIS_SERVER,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            assert time.monotonic() < deadline, "private redis-server did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(_free_port(), tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_redis_outage_gives_503_and_the_proxy_recovers(private_redis: PrivateRedis) -> None:
    store = RedisStore(f"redis://127.0.0.1:{private_redis.port}/0", socket_timeout=1.0)
    h = Harness(store=store)
    client = h.register()

    private_redis.stop()
    started = time.monotonic()
    resp = h.request(
        "POST",
        "/register",
        headers=(("content-type", "application/json"),),
        body=json.dumps({"redirect_uris": ["http://127.0.0.1:9/cb"]}).encode(),
    )
    elapsed = time.monotonic() - started
    assert resp.status == 503
    assert json.loads(resp.body)["error"] == "temporarily_unavailable"
    assert resp.header("retry-after") == "1"
    assert elapsed < 5, f"took {elapsed:.1f}s: the proxy must not hang on a dead store"
    page = h.request("GET", h.authorize_url(client, "v" * 43))
    assert page.status == 503  # a rendered page, not a traceback
    assert b"temporarily_unavailable" in page.body

    # Redis back (empty: it keeps nothing on disk here): new flows work again.
    private_redis.start()
    again = h.register()
    code = h.full_code(again, "w" * 43)
    assert code
