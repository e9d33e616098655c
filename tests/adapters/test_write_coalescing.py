"""``write_coalescing``: one socket write per turn of the event loop, bytes and order unchanged.

Proved on a real asyncio transport over a loopback socket pair (the real transport's ``write`` is
counted), and through ``oauthproxy serve`` by the e2e tests, which run on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from oauthproxy_adapters.write_coalescing import FLUSH_AT, CoalescingTransport, coalescing


class _Sink(asyncio.Protocol):
    pass


Pair = tuple[CoalescingTransport, list[bytes], socket.socket]


def with_pair(scenario: Callable[[Pair], Awaitable[None]]) -> None:
    """Run ``scenario`` on a coalescing transport over a real one, the real one's writes counted."""

    async def main() -> None:
        async with _pair() as pair:
            await scenario(pair)

    asyncio.run(main())


@contextlib.asynccontextmanager
async def _pair() -> AsyncIterator[Pair]:
    ours, peer = socket.socketpair()
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_connection(_Sink, sock=ours)
    writes: list[bytes] = []
    real_write = transport.write

    def counting_write(data: Any) -> None:
        writes.append(bytes(data))
        real_write(data)

    transport.write = counting_write  # type: ignore[method-assign]
    wrapped = CoalescingTransport(transport, loop)  # type: ignore[arg-type]
    peer.setblocking(False)
    try:
        yield wrapped, writes, peer
    finally:
        transport.close()
        peer.close()


async def _read(peer: socket.socket, size: int) -> bytes:
    loop = asyncio.get_running_loop()
    data = b""
    while len(data) < size:
        chunk = await asyncio.wait_for(loop.sock_recv(peer, size - len(data)), 5)
        if not chunk:
            break
        data += chunk
    return data


def test_writes_of_one_turn_leave_as_one_write_in_order() -> None:
    async def scenario(pair: Pair) -> None:
        wrapped, writes, peer = pair
        wrapped.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        wrapped.write(b"ok")
        assert writes == []  # held until the end of this turn
        await asyncio.sleep(0)
        assert writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"]
        assert await _read(peer, 40) == b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"

    with_pair(scenario)


def test_a_stream_over_several_turns_leaves_turn_by_turn() -> None:
    async def scenario(pair: Pair) -> None:
        wrapped, writes, peer = pair
        for event in (b"data: 1\n\n", b"data: 2\n\n", b"data: 3\n\n"):
            wrapped.write(event)
            await asyncio.sleep(0)
        assert writes == [b"data: 1\n\n", b"data: 2\n\n", b"data: 3\n\n"]
        assert await _read(peer, 27) == b"data: 1\n\ndata: 2\n\ndata: 3\n\n"

    with_pair(scenario)


def test_close_and_write_eof_send_what_is_held_first() -> None:
    async def scenario(pair: Pair) -> None:
        wrapped, writes, peer = pair
        wrapped.write(b"last words")
        wrapped.close()
        assert writes == [b"last words"]
        assert await _read(peer, 100) == b"last words"  # then end of stream
        await asyncio.sleep(0)  # the scheduled flush finds nothing held
        assert writes == [b"last words"]

    with_pair(scenario)


def test_write_eof_flushes() -> None:
    async def scenario(pair: Pair) -> None:
        wrapped, writes, peer = pair
        wrapped.write(b"body")
        wrapped.write_eof()
        assert writes == [b"body"]
        assert await _read(peer, 100) == b"body"

    with_pair(scenario)


def test_a_large_body_is_written_at_once_so_flow_control_sees_it() -> None:
    async def scenario(pair: Pair) -> None:
        wrapped, writes, _peer = pair
        wrapped.write(b"h" * 100)
        wrapped.write(b"b" * FLUSH_AT)
        assert writes == [b"h" * 100 + b"b" * FLUSH_AT]  # not held until the end of the turn
        assert wrapped.get_write_buffer_size() >= 0

    with_pair(scenario)


def test_nothing_is_written_to_a_closing_transport_and_empty_writes_are_ignored() -> None:
    async def scenario(pair: Pair) -> None:
        wrapped, writes, _peer = pair
        wrapped.write(b"")
        await asyncio.sleep(0)
        assert writes == []
        wrapped.write(b"late")
        wrapped._transport.close()  # the peer went away (connection lost) before the turn ended
        await asyncio.sleep(0)
        assert writes == []

    with_pair(scenario)


def test_coalescing_wraps_the_transport_a_protocol_is_given() -> None:
    seen: list[Any] = []

    class Recorder(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            seen.append(transport)

    async def main() -> None:
        ours, peer = socket.socketpair()
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_connection(coalescing(Recorder), sock=ours)
        transport.close()
        peer.close()

    asyncio.run(main())
    assert len(seen) == 1 and isinstance(seen[0], CoalescingTransport)
    assert coalescing(Recorder).__name__ == "CoalescingRecorder"
