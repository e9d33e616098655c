"""A small HTTP/1.1 server on h11 and asyncio streams, for embedding the proxy without a framework.

``await serve(proxy)`` listens on 127.0.0.1 (an ephemeral port by default) and behaves like the ASGI
adapter: it answers every path the core serves, protects ``mcp_path`` (and below) with bearer tokens,
and hands every other request to ``app_handler(request, principal)`` (the verified ``Principal`` on a
protected path, ``None`` elsewhere), or answers 404 when there is none::

    async with await serve(proxy, port=8000, app_handler=my_mcp) as server:
        await server.serve_forever()

Theory of operation. One task per connection runs h11's state machine (h11 owns the protocol: framing,
keep-alive, ``Connection: close``, HTTP/1.0). Each cycle waits for the first byte of a request for at
most ``idle_timeout`` (a silent idle connection is closed without a word), then allows
``request_timeout`` for the whole request head and body to arrive (a slow-loris request that never
completes gets 408 and is closed), answers, and starts the next cycle when both sides are done. Bounds
(spec/security.md 28): a head longer than ``max_header_bytes`` is 431; a body declared or grown past
``max_body`` is 413, sent before ``100 Continue`` so the client need not upload it. Malformed HTTP is
400 (or h11's hint: 431, 501) with ``Connection: close`` (spec/security.md 29), and so is a request whose
framing is ambiguous (``Transfer-Encoding`` with ``Content-Length``, or in HTTP/1.0: RFC 9112 §6.1,
``framing.py``), which h11 alone would frame by the chunked coding and follow with the trailing bytes
as a second, smuggled request. A connection closed after an
error response is half-closed first and drained briefly ("lingering close", RFC 9112 §9.6), so the
client reads the answer instead of a reset. Nothing escapes a connection task: an unexpected
exception is logged and the connection closed; one in the proxy or the app is a generic 500.

Thin by design (spec/architecture.md): h11 event -> ``oauthproxy_core.Request``, ``AsyncProxy.handle``,
response written; no protocol logic of OAuth here.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import socket
from collections.abc import Awaitable, Callable, Sequence
from http import HTTPStatus
from types import TracebackType
from urllib.parse import unquote, urlsplit

import h11

from oauthproxy_core import Request, Response, front_door
from oauthproxy_core.bearer_header import bearer_credentials
from oauthproxy_core.front_door import Door, FrontDoor, refusal
from oauthproxy_core.handlers.bearer import Challenge, Principal
from oauthproxy_core.http import MAX_BODY_BYTES, json_response

from .asgi import NOT_FOUND, SERVER_ERROR, TOO_LARGE
from .framing import AMBIGUOUS_FRAMING, has_ambiguous_framing
from .proxy import AsyncProxy

__all__ = ["AppHandler", "H11Server", "serve"]

log = logging.getLogger("oauthproxy.h11")

#: ``app_handler(request, principal)``: may return the response or an awaitable of it.
AppHandler = Callable[[Request, Principal | None], Awaitable[Response] | Response]

READ_SIZE = 64 * 1024
#: How long a closing connection waits for the client to read the answer and close its side.
LINGER_SECONDS = 2.0
#: How much a lingering close reads and discards at most.
LINGER_BYTES = 1024 * 1024

HEADERS_TOO_LARGE = json_response(
    431, {"error": "invalid_request", "error_description": "request headers too large"}
)
REQUEST_TIMEOUT = json_response(
    408, {"error": "invalid_request", "error_description": "request not received in time"}
)

VERSION_NOT_SUPPORTED = json_response(
    505, {"error": "invalid_request", "error_description": "only HTTP/1.0 and HTTP/1.1 are served"}
)


def _error(status: int) -> Response:
    if status == 431:
        return HEADERS_TOO_LARGE
    description = "malformed HTTP request" if status == 400 else _phrase(status).lower()
    return json_response(status, {"error": "invalid_request", "error_description": description})


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


class _ConnectionClosed(Exception):
    """The peer closed the connection (or h11 has nothing more to give) before the request ended."""


class H11Server:
    """A running server; ``await close()`` (or leave ``async with``) to stop it."""

    def __init__(self, server: asyncio.Server, tasks: set[asyncio.Task[None]]) -> None:
        self._server = server
        self._tasks = tasks

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return tuple(self._server.sockets)

    @property
    def port(self) -> int:
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def serve_forever(self) -> None:
        await self._server.serve_forever()

    async def close(self) -> None:
        """Stop listening and close every connection, idle keep-alive ones included."""
        self._server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def __aenter__(self) -> H11Server:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def serve(
    proxy: AsyncProxy,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    app_handler: AppHandler | None = None,
    protect: Sequence[str] | None = None,
    required_scopes: Sequence[str] = (),
    max_body: int = MAX_BODY_BYTES,
    max_header_bytes: int = 16384,
    idle_timeout: float = 30.0,
    request_timeout: float = 10.0,
    sock: socket.socket | None = None,
) -> H11Server:
    """Start serving ``proxy`` and return once listening.

    ``sock`` is an already bound socket to serve on instead of ``host``/``port`` (so the caller knows
    the port, hence the issuer, before the proxy is built). ``protect`` defaults to the configured
    ``mcp_path``; ``required_scopes`` are demanded of every token on a protected path.
    """
    settings = _Settings(
        proxy=proxy,
        app_handler=app_handler,
        door=proxy.front_door(protect),
        required_scopes=tuple(required_scopes),
        max_body=max_body,
        max_header_bytes=max_header_bytes,
        idle_timeout=idle_timeout,
        request_timeout=request_timeout,
    )
    tasks: set[asyncio.Task[None]] = set()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            tasks.add(task)
        try:
            await _Connection(settings, reader, writer).run()
        except asyncio.CancelledError:
            # ``close()`` cancelled this connection; it is closed. Ending the task normally matters:
            # Python 3.11's stream protocol logs a cancelled connection task as an error.
            pass
        finally:
            if task is not None:
                tasks.discard(task)

    if sock is not None:
        server = await asyncio.start_server(on_connect, sock=sock)
    else:
        server = await asyncio.start_server(on_connect, host, port)
    return H11Server(server, tasks)


class _Settings:
    __slots__ = (
        "app_handler",
        "door",
        "idle_timeout",
        "max_body",
        "max_header_bytes",
        "proxy",
        "request_timeout",
        "required_scopes",
    )

    def __init__(
        self,
        *,
        proxy: AsyncProxy,
        app_handler: AppHandler | None,
        door: FrontDoor,
        required_scopes: tuple[str, ...],
        max_body: int,
        max_header_bytes: int,
        idle_timeout: float,
        request_timeout: float,
    ) -> None:
        self.proxy = proxy
        self.app_handler = app_handler
        self.door = door
        self.required_scopes = required_scopes
        self.max_body = max_body
        self.max_header_bytes = max_header_bytes
        self.idle_timeout = idle_timeout
        self.request_timeout = request_timeout


class _Connection:
    def __init__(
        self, settings: _Settings, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.s = settings
        self.reader = reader
        self.writer = writer
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=settings.max_header_bytes)
        peer = writer.get_extra_info("peername")
        self.peer = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        #: The request being answered is a HEAD: h11 frames its answer without a body, whatever
        #: answer it is (a refusal too), and refuses body bytes.
        self._head = False

    async def run(self) -> None:
        linger = False
        try:
            while True:
                keep_going, linger = await self._cycle()
                if not keep_going:
                    break
        except (_ConnectionClosed, ConnectionError, TimeoutError):
            linger = False  # the peer is gone or stalled while reading our answer
        except Exception:
            log.exception("unhandled error on an HTTP connection; closing it")
            linger = False
        finally:
            await self._close(linger)

    # -- one request/response cycle ------------------------------------------------------------
    async def _cycle(self) -> tuple[bool, bool]:
        """Serve one request. Returns (keep the connection, linger when closing)."""
        self._head = False
        if not await self._await_request_start():
            return False, False
        try:
            async with asyncio.timeout(self.s.request_timeout):
                event = await self._next_event()
                if not isinstance(event, h11.Request):
                    return False, False  # a clean close between requests
                self._head = event.method == b"HEAD"
                refusal = self._refuse_head(event)
                if refusal is not None:
                    await self._send(refusal, close=True)
                    return False, True
                body = await self._read_body()
        except TimeoutError:
            await self._send_error(REQUEST_TIMEOUT)
            return False, True
        except h11.RemoteProtocolError as exc:
            await self._send_error(_error(exc.error_status_hint))
            return False, True
        if body is None:
            await self._send(TOO_LARGE, close=True)
            return False, True
        try:
            request = self._core_request(event, body)
        except ValueError:
            # An absolute-form target whose authority ``urlsplit`` refuses ("http://[/x"): h11
            # accepts any visible characters there, so this is malformed HTTP, answered like it.
            await self._send(_error(400), close=True)
            return False, True
        response = await self._dispatch(request)
        await self._send(response, head=request.method == "HEAD")
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
            return True, False
        return False, self.conn.their_state is not h11.CLOSED

    async def _await_request_start(self) -> bool:
        """Wait for the first bytes of the next request, at most ``idle_timeout``."""
        data, closed = self.conn.trailing_data
        if data or closed:
            return True  # pipelined bytes (or the close) are already buffered
        try:
            async with asyncio.timeout(self.s.idle_timeout):
                chunk = await self.reader.read(READ_SIZE)
        except TimeoutError:
            return False
        self.conn.receive_data(chunk)
        return True

    async def _next_event(self) -> h11.Event | None:
        """The next h11 event, reading as needed; ``None`` when h11 is paused (never expected)."""
        while True:
            event = self.conn.next_event()
            if isinstance(event, h11.Event):
                return event
            if event is h11.PAUSED:
                return None
            self.conn.receive_data(await self.reader.read(READ_SIZE))

    def _refuse_head(self, event: h11.Request) -> Response | None:
        if event.http_version not in (b"1.0", b"1.1"):
            return VERSION_NOT_SUPPORTED  # h11 parses any "HTTP/d.d"; RFC 9110 §15.6.6
        size = len(event.method) + len(event.target) + 12
        size += sum(len(name) + len(value) + 4 for name, value in event.headers)
        if size > self.s.max_header_bytes:
            return HEADERS_TOO_LARGE  # h11 bounds only a head that arrives in pieces
        if has_ambiguous_framing((name for name, _ in event.headers), event.http_version.decode()):
            return AMBIGUOUS_FRAMING  # RFC 9112 §6.1: answered, then the connection is closed
        for name, value in event.headers:
            if name == b"content-length" and int(value) > self.s.max_body:
                return TOO_LARGE  # refused before any "100 Continue": never uploaded
        return None

    async def _read_body(self) -> bytes | None:
        """The request body, or ``None`` once it exceeds ``max_body``."""
        if self.conn.they_are_waiting_for_100_continue:
            self.writer.write(
                self.conn.send(h11.InformationalResponse(status_code=100, headers=[])) or b""
            )
            await self.writer.drain()
        body = bytearray()
        while True:
            event = await self._next_event()
            if isinstance(event, h11.Data):
                body += event.data
                if len(body) > self.s.max_body:
                    return None
            elif isinstance(event, h11.EndOfMessage):
                return bytes(body)
            else:
                raise _ConnectionClosed

    def _core_request(self, event: h11.Request, body: bytes) -> Request:
        target = event.target.decode("latin-1")
        if target.startswith(("http://", "https://")):  # RFC 9112 §3.2.2 absolute-form
            parts = urlsplit(target)
            raw_path, query = parts.path or "/", parts.query
        else:
            raw_path, _, query = target.partition("?")
        return Request(
            method=event.method.decode("latin-1"),
            # As ASGI's ``path``: percent-decoded, UTF-8 (so both adapters route the same).
            path=unquote(raw_path, errors="replace"),
            query=query,
            headers=tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in event.headers),
            body=body,
            remote_addr=self.peer,
        )

    # -- the answer -------------------------------------------------------------------------------
    async def _dispatch(self, req: Request) -> Response:
        s = self.s
        try:
            door = s.door.decide(req.method, req.path).door
            if door is Door.AUTHORIZATION_SERVER:
                return await s.proxy.handle(req)
            if door is Door.PREFLIGHT:
                return front_door.PREFLIGHT
            principal: Principal | None = None
            if door is Door.VERIFY:
                verdict = await s.proxy.verify(
                    bearer_credentials(req.headers),
                    s.required_scopes,
                    s.proxy.config.resource_for_request(req.path),
                )
                if isinstance(verdict, Challenge):
                    return refusal(verdict)
                principal = verdict
            if s.app_handler is None:
                return NOT_FOUND
            result = s.app_handler(req, principal)
            if inspect.isawaitable(result):
                result = await result
            if not isinstance(result, Response):
                raise TypeError(f"app_handler returned {type(result).__name__}, not a Response")
            return result
        except Exception:
            log.exception("unhandled error answering %s %s", req.method, req.path)
            return SERVER_ERROR

    async def _send(self, resp: Response, *, close: bool = False, head: bool = False) -> None:
        no_body = resp.status < 200 or resp.status in (204, 304)
        headers = [
            (k.encode("latin-1"), v.encode("latin-1"))
            for k, v in resp.headers
            if k.lower() not in ("content-length", "connection", "transfer-encoding")
        ]
        if not no_body:
            headers.append((b"content-length", str(len(resp.body)).encode()))
        if close:
            headers.append((b"connection", b"close"))
        out = bytearray()
        out += (
            self.conn.send(
                h11.Response(
                    status_code=resp.status, headers=headers, reason=_phrase(resp.status).encode()
                )
            )
            or b""
        )
        if resp.body and not (head or self._head or no_body):
            out += self.conn.send(h11.Data(data=resp.body)) or b""
        out += self.conn.send(h11.EndOfMessage()) or b""
        self.writer.write(bytes(out))
        async with asyncio.timeout(self.s.request_timeout):
            await self.writer.drain()

    async def _send_error(self, resp: Response) -> None:
        """Answer a request we could not read, if h11 still lets us answer at all."""
        if self.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        try:
            await self._send(resp, close=True)
        except h11.LocalProtocolError:
            return

    async def _close(self, linger: bool) -> None:
        writer = self.writer
        with contextlib.suppress(OSError, TimeoutError, RuntimeError):
            if linger and writer.can_write_eof():
                writer.write_eof()
                async with asyncio.timeout(LINGER_SECONDS):
                    drained = 0
                    while drained < LINGER_BYTES:
                        chunk = await self.reader.read(READ_SIZE)
                        if not chunk:
                            break
                        drained += len(chunk)
        writer.close()
        with contextlib.suppress(OSError, TimeoutError, RuntimeError):
            async with asyncio.timeout(1.0):
                await writer.wait_closed()
