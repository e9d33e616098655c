"""One socket write per response instead of two, under uvicorn (``serve``).

uvicorn's HTTP protocols (h11 and httptools alike, 0.55) write the status line and headers to the
transport as soon as the application sends ``http.response.start``, and the body when it sends
``http.response.body``: two ``send`` system calls, and on a ``TCP_NODELAY`` socket two segments, for
every small response, which is nearly every response an authorization server gives. Measured over
loopback (benchmarks/README.md, compare_loopback.py) the second system call is a visible share of the
server's CPU per request.

``coalescing(protocol_class)`` is that protocol class with its transport wrapped: writes made during
one turn of the event loop are joined and handed to the real transport once, at the end of the turn
(``loop.call_soon``). Nothing else changes: bytes and their order are the same, a response streamed
over several turns (server-sent events through the gateway) still leaves turn by turn, ``close`` and
``write_eof`` send what is held first, and more than ``FLUSH_AT`` bytes held are sent at once, so the
transport's own flow control (``pause_writing``) still sees a large body as it is written.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["FLUSH_AT", "CoalescingTransport", "coalescing"]

#: Bytes held before they are written without waiting for the end of the turn.
FLUSH_AT = 64 * 1024


class CoalescingTransport:
    """Wraps an ``asyncio.Transport``: ``write`` is held until the end of the loop's turn."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] = []
        self._size = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._held:
            self._loop.call_soon(self.flush)
        self._held.append(bytes(data))
        self._size += len(data)
        if self._size >= FLUSH_AT:
            self.flush()

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def flush(self) -> None:
        """Hand what is held to the real transport (a no-op when nothing is held)."""
        if not self._held:
            return
        data = self._held[0] if len(self._held) == 1 else b"".join(self._held)
        self._held = []
        self._size = 0
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._held = []
        self._size = 0
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._size + self._transport.get_write_buffer_size()

    def __getattr__(self, name: str) -> Any:
        # Everything else (get_extra_info, is_closing, pause_reading, set_protocol, ...) as is.
        return getattr(self._transport, name)


def coalescing(protocol_class: type[asyncio.Protocol]) -> type[asyncio.Protocol]:
    """``protocol_class`` (a uvicorn HTTP protocol) writing through a :class:`CoalescingTransport`."""

    class Coalescing(protocol_class):  # type: ignore[valid-type,misc]
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            wrapped = CoalescingTransport(transport, asyncio.get_running_loop())  # type: ignore[arg-type]
            super().connection_made(wrapped)

    Coalescing.__name__ = Coalescing.__qualname__ = f"Coalescing{protocol_class.__name__}"
    return Coalescing
