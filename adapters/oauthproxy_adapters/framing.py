"""Requests whose message framing is ambiguous (RFC 9112 §6.1), refused by every server we run.

RFC 9112 §6.1: "A server MAY reject a request that contains both Content-Length and
Transfer-Encoding or process such a request in accordance with the Transfer-Encoding alone.
Regardless, the server MUST close the connection after responding to such a request to avoid the
potential attacks." And: "A server or client that receives an HTTP/1.0 message containing a
Transfer-Encoding header field MUST treat the message as if the framing is faulty, even if a
Content-Length is present, and close the connection after processing the message."

The attack is request smuggling: a front end that frames the request by ``Content-Length`` and a
server that frames it by the chunked coding disagree on where it ends, and the bytes in between are
read as a second request the front end never saw (and never checked). h11 frames by
``Transfer-Encoding`` and keeps the connection, and so does uvicorn on h11 (0.55, checked over a
socket): both would then serve the trailing bytes. The h11 server and the ASGI app therefore answer
such a request with ``AMBIGUOUS_FRAMING`` (400, ``Connection: close``) before reading its body.
"""

from __future__ import annotations

from collections.abc import Iterable

from oauthproxy_core.http import json_response

__all__ = ["AMBIGUOUS_FRAMING", "has_ambiguous_framing"]

AMBIGUOUS_FRAMING = json_response(
    400,
    {
        "error": "invalid_request",
        "error_description": "ambiguous message framing (Transfer-Encoding with Content-Length, "
        "or in HTTP/1.0)",
    },
    extra_headers=(("Connection", "close"),),
)


def has_ambiguous_framing(header_names: Iterable[bytes], http_version: str) -> bool:
    """Whether a request with these header names (any case) and version must be refused."""
    chunked = length = False
    for name in header_names:
        lowered = name.lower()
        if lowered == b"transfer-encoding":
            chunked = True
        elif lowered == b"content-length":
            length = True
    return chunked and (length or http_version == "1.0")
