"""The WSGI adapter (PEP 3333): the authorization server, and bearer protection for an app, in one app.

``OAuthProxyWSGI(proxy, app)`` behaves like the ASGI adapter (``asgi.OAuthProxyApp``): it answers every
path the core serves, protects ``mcp_path`` (and below) with bearer tokens, puts the verified
``Principal`` in ``environ["oauthproxy.principal"]`` (read it with :func:`principal_from_environ`),
answers the CORS preflight of the protected path, and passes everything else to ``app`` untouched
(or answers 404 JSON when there is no app). Mount it in Flask with
``app.wsgi_app = OAuthProxyWSGI(proxy, app.wsgi_app)``, in Django around ``get_wsgi_application()``.

Thin by design (spec/architecture.md): the core's front door (``oauthproxy_core.front_door``) decides where
a request goes; environ -> ``oauthproxy_core.Request``, ``Proxy.handle``, response written. Only I/O
decisions live here:

- The body is read from ``wsgi.input`` as PEP 3333 allows: never past ``CONTENT_LENGTH``, and at most
  ``MAX_BODY_BYTES + 1`` bytes; a declared or actual size past the bound is 413 (spec/security.md 28). A body
  without a length is read to its end only when the server says the stream is terminated
  (``wsgi.input_terminated``, e.g. a de-chunked request); a chunked body on a server that does not
  de-chunk is refused with 411, because reading it would block or read into the next request.
- Header values arrive as PEP 3333 "native strings" (bytes decoded as latin-1) and are passed on as
  such, exactly like the ASGI adapter's latin-1 decoding; the path is re-decoded as UTF-8, as ASGI does.
- An unexpected exception becomes a generic 500 and a log line, never a traceback (spec/security.md 29).
  Exceptions raised by the wrapped app are the app's and the server's business, as with ASGI.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from http import HTTPStatus
from typing import Any, Protocol

from oauthproxy_core import Request, Response, front_door
from oauthproxy_core.bearer_header import parse_bearer_value
from oauthproxy_core.front_door import Door, refusal
from oauthproxy_core.handlers.bearer import Challenge, Principal
from oauthproxy_core.http import MAX_BODY_BYTES, json_response

from .asgi import NOT_FOUND, SERVER_ERROR, TOO_LARGE
from .proxy import Proxy

__all__ = ["PRINCIPAL_KEY", "OAuthProxyWSGI", "principal_from_environ"]

Environ = MutableMapping[str, Any]
ExcInfo = Any


class StartResponse(Protocol):
    def __call__(
        self, status: str, headers: list[tuple[str, str]], exc_info: ExcInfo = ..., /
    ) -> Callable[[bytes], object]: ...


WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

log = logging.getLogger("oauthproxy.wsgi")

#: The environ key holding the verified ``Principal`` (PEP 3333: extension keys are dotted).
PRINCIPAL_KEY = "oauthproxy.principal"

LENGTH_REQUIRED = json_response(
    411, {"error": "invalid_request", "error_description": "a Content-Length is required"}
)
BAD_LENGTH = json_response(
    400, {"error": "invalid_request", "error_description": "malformed Content-Length"}
)
INCOMPLETE_BODY = json_response(
    400, {"error": "invalid_request", "error_description": "incomplete request body"}
)

_DIGITS = re.compile(r"[0-9]{1,19}")  # RFC 9110 §8.6: Content-Length = 1*DIGIT (no sign, no "_")
_READ_CHUNK = 16 * 1024


class _BodyRefusedError(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


def to_core_request(environ: Mapping[str, Any], body: bytes) -> Request:
    """The core's view of a WSGI request (header names lower-cased, values as PEP 3333 gives them)."""
    headers: list[tuple[str, str]] = []
    for key, value in environ.items():
        if key.startswith("HTTP_") and isinstance(value, str):
            headers.append((key[5:].replace("_", "-").lower(), value))
    for key, name in (("CONTENT_TYPE", "content-type"), ("CONTENT_LENGTH", "content-length")):
        value = environ.get(key)
        if isinstance(value, str) and value:
            headers.append((name, value))
    return Request(
        method=str(environ.get("REQUEST_METHOD", "GET")),
        path=request_path(environ),
        query=str(environ.get("QUERY_STRING", "")),
        headers=tuple(headers),
        body=body,
        remote_addr=str(environ.get("REMOTE_ADDR", "")),
    )


def request_path(environ: Mapping[str, Any]) -> str:
    """``SCRIPT_NAME + PATH_INFO`` as text: PEP 3333 carries the URL-decoded bytes as latin-1; they are
    UTF-8 on the wire, which is what ASGI's ``path`` (and so the ASGI adapter) sees."""
    raw = str(environ.get("SCRIPT_NAME", "")) + str(environ.get("PATH_INFO", ""))
    try:
        return raw.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return raw


def read_body(environ: Mapping[str, Any], limit: int = MAX_BODY_BYTES) -> bytes | None:
    """The request body, or ``None`` once it exceeds ``limit`` bytes. Raises ``_BodyRefusedError``."""
    stream = environ.get("wsgi.input")
    raw_length = str(environ.get("CONTENT_LENGTH") or "").strip()
    chunked = "chunked" in str(environ.get("HTTP_TRANSFER_ENCODING", "")).lower()
    if raw_length and not chunked:
        if not _DIGITS.fullmatch(raw_length):
            raise _BodyRefusedError(BAD_LENGTH)
        length = int(raw_length)
        if length > limit:
            return None  # refused unread: the declared size is enough (spec/security.md 28)
        if length == 0 or stream is None:
            return b""
        body = _read(stream, length)
        if len(body) < length:
            raise _BodyRefusedError(INCOMPLETE_BODY)  # the client went away mid-body
        return body
    if environ.get("wsgi.input_terminated") and stream is not None:
        # The server de-chunked the body and ends the stream after it: read to the end, bounded.
        body = _read(stream, limit + 1)
        return body if len(body) <= limit else None
    if chunked:
        raise _BodyRefusedError(LENGTH_REQUIRED)
    return b""  # PEP 3333: no CONTENT_LENGTH and no terminated stream means no body to read


def _read(stream: Any, most: int) -> bytes:
    body = bytearray()
    while len(body) < most:
        chunk = stream.read(min(_READ_CHUNK, most - len(body)))
        if not chunk:
            break
        body += chunk
    return bytes(body)


def start(start_response: StartResponse, resp: Response) -> list[bytes]:
    """Write ``resp`` through ``start_response``; the body is returned as the WSGI iterable."""
    try:
        phrase = HTTPStatus(resp.status).phrase
    except ValueError:
        phrase = "Unknown"
    headers = [(k, v) for k, v in resp.headers if k.lower() != "content-length"]
    if resp.status >= 200 and resp.status not in (204, 304):
        # RFC 9110 §8.6: no Content-Length on a 1xx or 204 response.
        headers.append(("Content-Length", str(len(resp.body))))
    start_response(f"{resp.status} {phrase}", headers)
    return [resp.body]


class OAuthProxyWSGI:
    """WSGI middleware: the authorization server in front of ``app``, bearer-protecting ``protect``.

    ``protect`` defaults to the configured ``mcp_path``; a path is protected when it equals a prefix
    or lies below it. ``required_scopes`` are demanded of every token on a protected path (403
    ``insufficient_scope`` otherwise).
    """

    def __init__(
        self,
        proxy: Proxy,
        app: WSGIApp | None = None,
        *,
        protect: Sequence[str] | None = None,
        required_scopes: Sequence[str] = (),
    ) -> None:
        self.proxy = proxy
        self.app = app
        self.door = proxy.front_door(protect)
        self.protect = self.door.protect
        self.required_scopes = tuple(required_scopes)

    def is_protected(self, path: str) -> bool:
        return self.door.is_protected(path)

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        try:
            method = str(environ.get("REQUEST_METHOD", "GET"))
            door = self.door.decide(method, request_path(environ)).door
            if door is Door.AUTHORIZATION_SERVER:
                try:
                    body = read_body(environ)
                except _BodyRefusedError as bad:
                    return start(start_response, bad.response)
                except (OSError, ValueError):
                    # The client vanished or the server's stream failed mid-read: nobody to answer.
                    log.info("could not read the request body", exc_info=True)
                    return start(start_response, INCOMPLETE_BODY)
                if body is None:
                    return start(start_response, TOO_LARGE)
                return start(start_response, self.proxy.handle(to_core_request(environ, body)))
            if door is Door.PREFLIGHT:
                return start(start_response, front_door.PREFLIGHT)
            if door is Door.VERIFY:
                authorization = environ.get("HTTP_AUTHORIZATION")
                verdict = self.proxy.verify(
                    # PEP 3333 keeps one value per name: a server joins repeated fields (a list
                    # of credentials is malformed) or keeps one of them.
                    parse_bearer_value(authorization if isinstance(authorization, str) else None),
                    self.required_scopes,
                    self.proxy.config.resource_for_request(request_path(environ)),
                )
                if isinstance(verdict, Challenge):
                    return start(start_response, refusal(verdict))
                environ[PRINCIPAL_KEY] = verdict
        except Exception:
            log.exception("unhandled error in the authorization server")
            return start(start_response, SERVER_ERROR)
        if self.app is None:
            return start(start_response, NOT_FOUND)
        return self.app(environ, start_response)


def principal_from_environ(environ: Mapping[str, Any]) -> Principal | None:
    """The verified ``Principal`` of a request on a protected path, else ``None``."""
    value = environ.get(PRINCIPAL_KEY)
    return value if isinstance(value, Principal) else None
