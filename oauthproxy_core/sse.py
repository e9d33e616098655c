"""Splitting a Server-Sent Events stream into events as it arrives, holding at most one event
(HTML Living Standard, "Server-sent events", §9.2.5 "Parsing an event stream", §9.2.6 "Interpreting
an event stream").

The gateway filters ``tools/list`` answers that an MCP server streams as SSE (MCP 2025-11-25,
"Streamable HTTP"). It must read each event the way the client will, and it must not hold a
stream back: ``EventSplitter.feed`` takes whatever bytes arrived and returns the events they
completed, each with its exact raw bytes, so an event the gateway leaves alone is passed on byte for
byte, and only the incomplete event at the end is kept (at most ``max_event_bytes`` of it).

What the client's parser does, and so what this one does:

- a line ends at CR LF, a lone LF or a lone CR. A CR that ends one chunk may be the first half of a
  CR LF split across two chunks: the LF that may follow belongs to the same line ending, never to an
  empty line (an empty line ends the event, so getting this wrong would cut an event in two);
- an empty line ends the event; a line starting with ``:`` is a comment; otherwise the field name is
  what precedes the first ``:`` (the whole line when there is none) and one space after the colon is
  dropped from the value; field names compare exactly (``data``, never ``Data``);
- the ``data`` lines of an event are joined with LF;
- one UTF-8 byte order mark at the very start of the stream is skipped, so ``\\ufeffdata:`` is a
  ``data`` line here as in the browser;
- an event still incomplete when the stream ends is never dispatched; the gateway drops it.

Everything here is bytes in, values out: no I/O (spec/architecture.md, "Layers").
"""

from __future__ import annotations

import re

import attrs

__all__ = ["EventSplitter", "EventTooLargeError", "SseEvent"]

_BOM = b"\xef\xbb\xbf"
_LINE_END = re.compile(rb"\r\n|\r|\n")


class EventTooLargeError(ValueError):
    """An event grew past the splitter's bound before it ended."""


@attrs.frozen(kw_only=True)
class SseEvent:
    """One event: its lines (content, line ending), the empty line that ended it, and any bytes
    before its first line that belong to no line (a byte order mark, or the LF that completed a CR
    LF whose CR ended the previous event)."""

    prefix: bytes = b""
    lines: tuple[tuple[bytes, bytes], ...] = ()
    end: bytes = b"\n"

    @property
    def raw(self) -> bytes:
        """The exact bytes of the event as they arrived."""
        return self.prefix + b"".join(c + e for c, e in self.lines) + self.end

    @property
    def data(self) -> bytes | None:
        """The event's ``data`` lines joined with LF, or ``None`` when it has none."""
        values = [value for name, value in _fields(self.lines) if name == b"data"]
        return b"\n".join(values) if values else None

    def with_data(self, data: bytes) -> bytes:
        """The event with its ``data`` lines replaced by one ``data:`` line holding ``data`` (which
        must hold no line break), placed where the first one was; other lines are kept as they
        are."""
        if b"\n" in data or b"\r" in data:
            raise ValueError("event data must be one line")
        out = [self.prefix]
        written = False
        for (content, ending), (name, _value) in zip(self.lines, _fields(self.lines), strict=True):
            if name == b"data":
                if not written:
                    out.append(b"data: " + data + b"\n")
                    written = True
                continue
            out.append(content + ending)
        if not written:
            out.append(b"data: " + data + b"\n")
        out.append(self.end)
        return b"".join(out)


def _fields(lines: tuple[tuple[bytes, bytes], ...]) -> list[tuple[bytes | None, bytes]]:
    """``(field name, value)`` per line; ``None`` for a comment."""
    out: list[tuple[bytes | None, bytes]] = []
    for content, _ending in lines:
        if content.startswith(b":"):
            out.append((None, b""))
            continue
        name, colon, value = content.partition(b":")
        if colon and value.startswith(b" "):
            value = value[1:]
        out.append((name, value))
    return out


class EventSplitter:
    """Incremental SSE event splitter (see the module docstring). ``feed(chunk)`` returns the events
    the chunk completed; past ``max_event_bytes`` of one unfinished event it raises
    ``EventTooLargeError``."""

    def __init__(self, max_event_bytes: int) -> None:
        self.max_event_bytes = max_event_bytes
        self._buf = bytearray()
        self._prefix = b""
        self._lines: list[tuple[bytes, bytes]] = []
        self._held = 0  # bytes of the prefix and the complete lines of the unfinished event
        self._pending_cr = False  # the last byte seen was a CR ending a line: an LF may follow
        self._started = False  # past the possible byte order mark

    @property
    def buffered(self) -> int:
        """Bytes of the unfinished event held."""
        return self._held + len(self._buf)

    def _skip_bom(self) -> bool:
        """Past the start of the stream: its byte order mark, if any, set aside. False while too
        few bytes have come to tell."""
        if len(self._buf) < len(_BOM) and _BOM.startswith(bytes(self._buf)):
            return False
        self._started = True
        if self._buf.startswith(_BOM):
            self._prefix = _BOM
            self._held += len(_BOM)
            del self._buf[: len(_BOM)]
        return True

    def feed(self, chunk: bytes) -> list[SseEvent]:
        self._buf += chunk
        if not self._started and not self._skip_bom():
            return []
        if self._pending_cr and self._buf:
            self._pending_cr = False
            if self._buf[0:1] == b"\n":
                # The second half of a CR LF: part of the line ending already counted.
                if self._lines:
                    content, ending = self._lines[-1]
                    self._lines[-1] = (content, ending + b"\n")
                else:
                    self._prefix += b"\n"
                self._held += 1
                del self._buf[:1]
        events: list[SseEvent] = []
        pos = 0
        buf = self._buf
        while True:
            found = _LINE_END.search(buf, pos)
            if found is None:
                break
            content = bytes(buf[pos : found.start()])
            ending = found.group()
            pos = found.end()
            if ending == b"\r" and pos == len(buf):
                self._pending_cr = True
            if content:
                self._lines.append((content, ending))
                self._held += len(content) + len(ending)
                if self._held > self.max_event_bytes:
                    raise EventTooLargeError("a Server-Sent Event is too large")
                continue
            if self._held + len(ending) > self.max_event_bytes:
                raise EventTooLargeError("a Server-Sent Event is too large")
            events.append(SseEvent(prefix=self._prefix, lines=tuple(self._lines), end=ending))
            self._prefix = b""
            self._lines = []
            self._held = 0
        del buf[:pos]
        if self.buffered > self.max_event_bytes:
            raise EventTooLargeError("a Server-Sent Event is too large")
        return events
