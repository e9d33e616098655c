"""When the way to PostgreSQL is cut, the proxy answers 503 ``temporarily_unavailable`` promptly,
never hangs, and recovers once it is back (spec/architecture.md, "Storage contract": a backend that
cannot be reached raises ``StoreUnavailableError``; no call blocks without a timeout).

The shared PostgreSQL server of the test machine cannot be stopped by one test, so the store reaches
it through a TCP relay on its own loopback port, which the test closes (every open connection and
the listening socket: what a server restart or a network cut looks like to the client) and opens
again on the same port.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from oauthproxy_adapters.stores.base import StoreUnavailableError
from oauthproxy_adapters.stores.postgres import AsyncPostgresStore, PostgresStore
from tests.harness import Harness

POSTGRES_URL = os.environ.get(
    "OAUTHPROXY_TEST_POSTGRES_URL",
    "postgresql://oauthproxy_test:oauthproxy_test@127.0.0.1:5432/oauthproxy_test",
)
TARGET = ("127.0.0.1", 5432)


class Relay:
    """Forwards every connection to its loopback port on to ``TARGET``, until ``cut``."""

    def __init__(self) -> None:
        self.port = 0
        self._listener: socket.socket | None = None
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                server = socket.create_connection(TARGET, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        assert self._listener is not None
        # shutdown() wakes the thread blocked in accept(); close() alone would leave the socket
        # listening until that accept() returned.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._lock:
            sockets, self._open = self._open, []
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def url(self) -> str:
        return POSTGRES_URL.replace("@127.0.0.1:5432/", f"@127.0.0.1:{self.port}/")


@pytest.fixture
def relay() -> Iterator[Relay]:
    r = Relay()
    r.start()
    yield r
    with contextlib.suppress(Exception):
        r.cut()


@pytest.fixture
def prefix() -> Iterator[str]:
    name = f"t{uuid.uuid4().hex[:16]}_"
    yield name
    with contextlib.suppress(StoreUnavailableError):
        PostgresStore(POSTGRES_URL, prefix=name, purge_interval=0).drop_tables()


def _until(what: str, attempt: object, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            attempt()  # type: ignore[operator]
            return
        except (AssertionError, StoreUnavailableError):
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not within {seconds} s") from None
            time.sleep(0.2)


def test_postgres_outage_gives_503_and_the_proxy_recovers(relay: Relay, prefix: str) -> None:
    store = PostgresStore(relay.url(), prefix=prefix, timeout=1.0, purge_interval=0)
    try:
        h = Harness(store=store)
        client = h.register()

        relay.cut()
        for _ in range(3):  # the pooled connection is dead, then no new one can be made
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
            assert elapsed < 5, f"took {elapsed:.1f}s: the proxy must not hang on a dead store"
        page = h.request("GET", h.authorize_url(client, "v" * 43))
        assert page.status == 503  # a rendered page, not a traceback
        assert b"temporarily_unavailable" in page.body

        # Back, with everything PostgreSQL kept: the client registered before the cut still works.
        relay.start()

        def flow() -> None:
            assert h.full_code(client, "w" * 43)

        _until("a flow after the relay came back", flow)
        assert h.full_code(h.register(), "x" * 43)
    finally:
        store.close()


def test_async_postgres_outage_is_a_bounded_error_and_recovers(relay: Relay, prefix: str) -> None:
    import asyncio  # noqa: PLC0415

    async def main() -> None:
        store = AsyncPostgresStore(relay.url(), prefix=prefix, timeout=1.0, purge_interval=0)
        try:
            await store.put("code", "k", b"v", 1, 600)
            relay.cut()
            for _ in range(3):
                started = time.monotonic()
                with pytest.raises(StoreUnavailableError):
                    await store.get("code", "k")
                assert time.monotonic() - started < 5
            relay.start()
            deadline = time.monotonic() + 30
            while True:
                try:
                    got = await store.take("code", "k")
                    break
                except StoreUnavailableError:
                    assert time.monotonic() < deadline, "no recovery within 30 s"
                    await asyncio.sleep(0.2)
            assert got is not None and got.value == b"v"
        finally:
            await store.close()

    asyncio.run(main())


def test_a_connection_idle_past_the_health_check_is_checked_before_use(
    relay: Relay, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server restarted while the pool sat idle (here: the relay cut and reopened): the dead
    pooled connection is found by the check before the statement is sent on it, and the statement
    runs on a new one, so the first request after the restart is not a 503. Without the idle check
    (a connection used a moment ago), the same restart costs that one request its 503."""
    import oauthproxy_adapters.stores.postgres as postgres_module  # noqa: PLC0415

    store = PostgresStore(relay.url(), prefix=prefix, timeout=1.0, purge_interval=0, min_size=1)
    try:
        store.put("code", "k", b"v", 1, 600)
        relay.cut()
        relay.start()
        monkeypatch.setattr(postgres_module, "HEALTH_CHECK_IDLE", 0.0)  # every connection is "idle"
        got = store.get("code", "k")
        assert got is not None and got.value == b"v"

        monkeypatch.setattr(postgres_module, "HEALTH_CHECK_IDLE", 3600.0)
        relay.cut()
        relay.start()
        with pytest.raises(StoreUnavailableError):
            store.get("code", "k")
        _until("the next request after the restart", lambda: store.get("code", "k"))
    finally:
        store.close()
