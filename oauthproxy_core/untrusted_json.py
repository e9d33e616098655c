"""The one parser for JSON that another party wrote: bounded in size and in nesting depth.

Everything the proxy reads as JSON from outside goes through here: request bodies (RFC 7591, RFC
7592), the header and claims of a client assertion (RFC 7523 §3) before any signature is checked,
the segments of a compact JWS (RFC 7515 §7.1) before joserfc decodes them (access tokens presented
as bearer tokens, upstream ID tokens), Client ID Metadata Documents and JWK Sets of clients, and the
upstream provider's token, UserInfo, JWK Set and discovery responses.

Why one place: Python's ``json`` decoder recurses once per ``[`` or ``{``, so a few thousand brackets
raise ``RecursionError`` -- not a ``ValueError`` -- from inside whatever handler happened to parse
them, and the answer was a 500 with a traceback (issue 13, item 5: a nested header in
``client_assertion`` at ``/token`` and ``/revoke``). Each call site used to carry its own ``try``
and its own idea of which exceptions to catch. Here the depth is measured before the decoder runs,
the size is checked first, and every failure is one exception type, ``UntrustedJsonError`` (a
``ValueError``), which callers turn into their own typed OAuth error.

What is accepted is RFC 8259 JSON text and nothing more:

- UTF-8 only (§8.1: "JSON text exchanged between systems that are not part of a closed ecosystem
  MUST be encoded using UTF-8"). Python's ``json.loads`` would also guess UTF-16 and UTF-32 from the
  byte pattern; in those encodings a byte equal to ``[`` or ``"`` may be half of another character,
  which would let a document hide its real depth from the byte scan below.
- No ``NaN``, ``Infinity`` or ``-Infinity`` (not JSON values, §6; Python accepts them by default).
- Nesting at most ``max_depth`` arrays and objects deep. The scan skips string contents, so a user
  whose GitHub bio is ``[[[[[[[[[[[[[[[[[[`` can still sign in.

Duplicate member names keep the last value, as Python does (§4 leaves it open); what the proxy keeps
is what it echoes and what it enforces, so no parser differential arises inside the proxy. A caller
that judges a document another program will read again (the gateway's JSON-RPC inspection,
``jsonrpc_inspection.py``) passes ``unique_keys=True``: a member name given twice is refused, since
that other program might keep the first value where Python keeps the last (RFC 8259 §4: "the
behavior of software that receives such an object is unpredictable").
"""

from __future__ import annotations

import binascii
import json
import re
from typing import Any

from .crypto import b64u_decode

__all__ = [
    "MAX_DEPTH",
    "UntrustedJsonError",
    "check_compact_jws",
    "check_json_bounds",
    "parse_jose_segment",
    "parse_json",
    "parse_json_object",
]

#: Deepest nesting accepted. What the proxy reads nests at most four levels (a CIMD document's
#: ``jwks.keys[i]``; Entra's ``_claim_sources``); 16 leaves room for provider extensions while
#: staying far below the interpreter's recursion limit (1000 frames, shared with the caller's stack),
#: and a scan that can stop after 17 brackets costs nothing on the hot path.
MAX_DEPTH = 16

#: A JSON string, quotes included (RFC 8259 §7: a quote or backslash inside is escaped); one left
#: open runs to the end of the text, where the decoder stops too. Possessive, so a string that never
#: ends fails in one pass instead of backtracking.
_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_PARENS = bytes.maketrans(b"[{]}", b"(())")
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")


class UntrustedJsonError(ValueError):
    """The input is not acceptable JSON: too large, too deep, not UTF-8 or not RFC 8259 JSON.

    The message names the reason only, never the input (it is attacker-chosen and ends up in logs).
    """


def _as_bytes(data: bytes | str) -> bytes:
    if isinstance(data, bytes):
        return data
    try:
        return data.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate in a str that did not come from UTF-8 bytes
        raise UntrustedJsonError("JSON is not valid UTF-8") from None


def _depth_exceeds(data: bytes, limit: int) -> bool:
    # Fast path: a text with no more opening brackets than the limit cannot nest deeper.
    if data.count(b"[") + data.count(b"{") <= limit:
        return False
    # The brackets outside strings, in order, as "(" and ")": strings removed in one pass of the
    # regex engine, then translate(), both in C.
    brackets = _STRING.sub(b"", data).translate(_PARENS, _NOT_BRACKETS)
    # Each round removes every innermost pair, so a balanced text needs exactly as many rounds as
    # it is deep; at most limit + 1 passes in C, whatever the input.
    rounds = 0
    while b"()" in brackets:
        if rounds == limit:
            return True
        brackets = brackets.replace(b"()", b"")
        rounds += 1
    # What is left is unmatched: closers, then openers that were never closed. The decoder would
    # recurse into those openers (and into the pairs removed inside them) before failing.
    return brackets.count(b"(") + rounds > limit


def check_json_bounds(data: bytes | str, *, max_bytes: int, max_depth: int = MAX_DEPTH) -> bytes:
    """``data`` as bytes if it is at most ``max_bytes`` long and nests at most ``max_depth`` deep.

    For input that a library is about to decode itself (joserfc and the segments of a JWS): the
    bounds hold before any recursive decoder sees it. Raises ``UntrustedJsonError``.
    """
    raw = _as_bytes(data)
    if len(raw) > max_bytes:
        raise UntrustedJsonError("JSON too large")
    if _depth_exceeds(raw, max_depth):
        raise UntrustedJsonError("JSON nested too deeply")
    return raw


def _refuse_constant(name: str) -> Any:
    raise UntrustedJsonError("JSON has a non-standard constant")


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise UntrustedJsonError("JSON object has a duplicate member name")
    return obj


def parse_json(
    data: bytes | str, *, max_bytes: int, max_depth: int = MAX_DEPTH, unique_keys: bool = False
) -> Any:
    """Decode one JSON value from another party. Raises ``UntrustedJsonError``.

    ``unique_keys``: refuse an object that names a member twice (see the module docstring).
    """
    raw = check_json_bounds(data, max_bytes=max_bytes, max_depth=max_depth)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UntrustedJsonError("JSON is not valid UTF-8") from None
    try:
        if unique_keys:
            return json.loads(
                text, parse_constant=_refuse_constant, object_pairs_hook=_unique_members
            )
        return json.loads(text, parse_constant=_refuse_constant)
    except UntrustedJsonError:
        raise
    except (ValueError, RecursionError):
        # RecursionError cannot happen below the depth bound; caught all the same, so that a
        # caller deep in its own stack still gets the one documented exception.
        raise UntrustedJsonError("malformed JSON") from None


def parse_json_object(
    data: bytes | str, *, max_bytes: int, max_depth: int = MAX_DEPTH
) -> dict[str, Any]:
    """``parse_json``, and the value must be a JSON object. Raises ``UntrustedJsonError``."""
    value = parse_json(data, max_bytes=max_bytes, max_depth=max_depth)
    if not isinstance(value, dict):
        raise UntrustedJsonError("JSON value is not an object")
    return value


def _segment_bytes(segment: str, max_bytes: int) -> bytes:
    # base64url without padding (RFC 7515 §2); ceil(4/3 * max_bytes) characters at most.
    if len(segment) > (max_bytes * 4 + 2) // 3:
        raise UntrustedJsonError("JOSE segment too large")
    # Strict alphabet: Python's decoder would silently skip other characters, so two different
    # strings would carry one header.
    if not _BASE64URL.fullmatch(segment):
        raise UntrustedJsonError("JOSE segment is not base64url")
    try:
        return b64u_decode(segment)
    except (ValueError, binascii.Error):
        raise UntrustedJsonError("JOSE segment is not base64url") from None


def parse_jose_segment(segment: str, *, max_bytes: int) -> dict[str, Any]:
    """The JSON object in one base64url segment of a compact JWS (header or claims).

    Raises ``UntrustedJsonError``.
    """
    return parse_json_object(_segment_bytes(segment, max_bytes), max_bytes=max_bytes)


def check_compact_jws(token: str, *, max_header_bytes: int, max_payload_bytes: int) -> None:
    """Hold a compact JWS's header and payload to the size and depth bounds before a JOSE library
    decodes them (joserfc parses the header before the signature is checked). Raises
    ``UntrustedJsonError``; a token that is not three segments is left to the library to refuse.
    """
    parts = token.split(".")
    if len(parts) != 3:
        return
    check_json_bounds(_segment_bytes(parts[0], max_header_bytes), max_bytes=max_header_bytes)
    check_json_bounds(_segment_bytes(parts[1], max_payload_bytes), max_bytes=max_payload_bytes)
