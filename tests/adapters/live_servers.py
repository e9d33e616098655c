"""Real servers on loopback sockets for adapter tests, each in a background thread.

- ASGI under uvicorn: ``UvicornThread``, the testing kit's ``AppThread`` (``uvicorn.Server`` on a
  pre-bound socket, stopped by ``should_exit``);
- WSGI under ``wsgiref.simple_server`` with a threading server;
- the h11 server on its own asyncio loop.

Each starter takes ``build(base_url) -> app``: the port is known before the proxy is built, so the
issuer is the real base URL. Everything binds 127.0.0.1 and is stopped through the object that
started it.
"""

from __future__ import annotations

import asyncio
import socket
import socketserver
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from oauthproxy_adapters.h11_server import H11Server
from oauthproxy_adapters.proxy import AsyncProxy, Proxy
from oauthproxy_adapters.stores.memory import AsyncMemoryStore, MemoryStore
from oauthproxy_adapters.testing.serve import AppThread as UvicornThread
from oauthproxy_adapters.testing.serve import bound_socket
from oauthproxy_core import HttpFailure, HttpRequest, HttpResponse, ProxyConfig
from tests.harness import ScriptedUpstream, keys

T = TypeVar("T")

__all__ = [
    "H11Thread",
    "LoopThread",
    "UvicornThread",
    "WsgirefThread",
    "async_proxy",
    "base_url",
    "bound_socket",
    "sync_proxy",
]


def base_url(sock: socket.socket) -> str:
    return f"http://127.0.0.1:{sock.getsockname()[1]}"


def sync_proxy(config: ProxyConfig, upstream: ScriptedUpstream) -> Proxy:
    return Proxy(config, keys(), MemoryStore(), upstream)


def async_proxy(config: ProxyConfig, upstream: ScriptedUpstream) -> AsyncProxy:
    async def http(req: HttpRequest) -> HttpResponse | HttpFailure:
        return upstream(req)

    return AsyncProxy(config, keys(), AsyncMemoryStore(), http)


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class WsgirefThread:
    def __init__(self, build: Callable[[str], Any]) -> None:
        self.httpd = make_server(
            "127.0.0.1",
            0,
            _not_ready,
            server_class=_ThreadingWSGIServer,
            handler_class=_QuietHandler,
        )
        self.base = f"http://127.0.0.1:{self.httpd.server_port}"
        self.httpd.set_app(build(self.base))
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)


def _not_ready(environ: Any, start_response: Any) -> list[bytes]:
    start_response("503 Service Unavailable", [("Content-Length", "0")])
    return [b""]


class LoopThread:
    """An asyncio loop running in a daemon thread; ``run(coro)`` executes on it and waits."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class H11Thread:
    """``build(base, sock)`` returns the ``serve(...)`` coroutine to run on the loop."""

    def __init__(
        self,
        build: Callable[[str, socket.socket], Coroutine[Any, Any, H11Server]],
        loop: LoopThread | None = None,
    ) -> None:
        self._own_loop = loop is None
        self.loop = loop or LoopThread()
        sock = bound_socket()
        self.base = base_url(sock)
        self.server = self.loop.run(build(self.base, sock))
        self.port = self.server.port

    def stop(self) -> None:
        self.loop.run(self.server.close())
        if self._own_loop:
            self.loop.stop()
