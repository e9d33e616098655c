"""Immutable HTTP request and response values exchanged between adapters and the core.

Adapters translate their framework's request into ``Request`` and write back ``Response``; the core
never sees a framework object (spec/architecture.md, adapters are thin). Parameter parsing enforces the
bounds of spec/security.md 28 and RFC 6749 §3.1 ("Request and response parameters MUST NOT be included more
than once").
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote_plus

import attrs

from .effects import header_value
from .errors import InvalidRequestError, PayloadTooLargeError
from .untrusted_json import UntrustedJsonError, parse_json_object

MAX_BODY_BYTES = 64 * 1024
MAX_PARAMS = 64
MAX_PARAM_LENGTH = 4096


@attrs.frozen(kw_only=True)
class Request:
    """One HTTP request as the core sees it.

    ``path`` is the decoded path without query; ``query`` the raw query string; ``headers`` lower-cased
    names. ``remote_addr`` is the peer address the adapter trusts (used only for rate bounds).
    """

    method: str
    path: str
    query: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = attrs.field(default=b"", repr=False)
    remote_addr: str = ""

    def header(self, name: str) -> str | None:
        lname = name.lower()
        for k, v in self.headers:
            if k == lname:
                return v
        return None

    def cookie(self, name: str) -> str | None:
        raw = self.header("cookie")
        if not raw:
            return None
        for part in raw.split(";"):
            k, sep, v = part.strip().partition("=")
            if sep and k == name:
                return v
        return None

    def cookie_values(self, name: str) -> list[str]:
        """Every value the request sends for cookie ``name``, in order: a browser sends several
        when cookies of one name were set for different paths (RFC 6265 §5.4), and on an http
        loopback issuer any port of the host may set one."""
        found = []
        for k, v in self.headers:
            if k == "cookie":
                for part in v.split(";"):
                    n, sep, value = part.strip().partition("=")
                    if sep and n == name:
                        found.append(value)
        return found


@attrs.frozen(kw_only=True)
class Response:
    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = attrs.field(default=b"", repr=False)

    def header(self, name: str) -> str | None:
        return header_value(self.headers, name)

    def header_values(self, name: str) -> list[str]:
        lname = name.lower()
        return [v for k, v in self.headers if k.lower() == lname]


_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True)

NO_STORE: tuple[tuple[str, str], ...] = (("Cache-Control", "no-store"), ("Pragma", "no-cache"))


def json_response(
    status: int,
    body: Mapping[str, Any],
    *,
    no_store: bool = True,
    extra_headers: tuple[tuple[str, str], ...] = (),
) -> Response:
    headers: tuple[tuple[str, str], ...] = (("Content-Type", "application/json"),)
    if no_store:
        headers += NO_STORE
    data = _JSON.encode(body).encode("ascii")
    return Response(status=status, headers=headers + extra_headers, body=data)


def parse_params(raw: str) -> dict[str, str]:
    """Parse an ``application/x-www-form-urlencoded`` string into single-valued parameters.

    Raises ``InvalidRequestError`` on repeated names, too many parameters, over-long values,
    NUL bytes or undecodable percent-encoding (spec/security.md 28, 29). The same semantics as
    ``urllib.parse.parse_qsl(keep_blank_values=True)``, without its per-pair overhead: values with
    nothing to decode are taken as they are.
    """
    if not raw:
        return {}
    pairs = raw.split("&")
    if len(pairs) > MAX_PARAMS:
        raise InvalidRequestError("too many parameters")
    out: dict[str, str] = {}
    for pair in pairs:
        if not pair:
            continue
        name, _, value = pair.partition("=")
        if "%" in name or "+" in name:
            name = _unquote(name)
        if "%" in value or "+" in value:
            value = _unquote(value)
        if name in out:
            # RFC 6749 §3.1: parameters MUST NOT be included more than once.
            raise InvalidRequestError(f"parameter {_safe_name(name)} repeated")
        if len(name) > 128 or len(value) > MAX_PARAM_LENGTH:
            raise InvalidRequestError("parameter too long")
        if "\x00" in value or "\x00" in name:
            raise InvalidRequestError("parameter contains NUL")
        out[name] = value
    return out


def _unquote(text: str) -> str:
    try:
        return unquote_plus(text, encoding="utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise InvalidRequestError("malformed parameters") from exc


def _safe_name(name: str) -> str:
    cleaned = "".join(c for c in name[:40] if c.isalnum() or c in "_-")
    return cleaned or "?"


def form_body(req: Request) -> dict[str, str]:
    """The parameters of an ``application/x-www-form-urlencoded`` POST body."""
    if len(req.body) > MAX_BODY_BYTES:
        raise PayloadTooLargeError("request body too large")
    ctype = (req.header("content-type") or "").split(";", 1)[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise InvalidRequestError("expected application/x-www-form-urlencoded")
    try:
        text = req.body.decode("ascii")
    except UnicodeDecodeError as exc:
        raise InvalidRequestError("form body must be ASCII (percent-encoded)") from exc
    return parse_params(text)


def json_body(req: Request) -> dict[str, Any]:
    """A JSON object body, bounded in size and depth (``untrusted_json``)."""
    if len(req.body) > MAX_BODY_BYTES:
        raise PayloadTooLargeError("request body too large")
    ctype = (req.header("content-type") or "").split(";", 1)[0].strip().lower()
    if ctype != "application/json":
        raise InvalidRequestError("expected application/json")
    try:
        return parse_json_object(req.body, max_bytes=MAX_BODY_BYTES)
    except UntrustedJsonError as exc:
        raise InvalidRequestError(f"request body: {exc}") from None
