"""Client authentication at the token and revocation endpoints (RFC 6749 §2.3, OAuth 2.1 §2.4).

A client authenticates only by the method it registered (SECURITY.md 22): ``none`` (public client,
``client_id`` in the body), ``client_secret_post`` or ``client_secret_basic`` (RFC 6749 §2.3.1, with
the form-urlencoding of id and secret undone before comparison). A failure raises
``InvalidClientError`` (401) before anything else is read or written, so it consumes nothing.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Generator
from typing import Any
from urllib.parse import unquote_plus

from . import persistence
from .crypto import digest, equal
from .errors import InvalidClientError, InvalidRequestError
from .http import Request
from .records import Client


def _basic_credentials(header: str) -> tuple[str, str] | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidClientError("malformed Basic credentials") from None
    cid, sep, secret = decoded.partition(":")
    if not sep:
        raise InvalidClientError("malformed Basic credentials")
    return unquote_plus(cid), unquote_plus(secret)


def authenticate_client(req: Request, form: dict[str, str]) -> Generator[Any, Any, Client]:
    header = req.header("authorization")
    basic = _basic_credentials(header) if header else None
    body_id, body_secret = form.get("client_id"), form.get("client_secret")
    secret: str | None
    if basic is not None:
        if body_secret is not None:
            raise InvalidRequestError("use one client authentication method")
        if body_id is not None and body_id != basic[0]:
            raise InvalidClientError("client_id does not match the credentials")
        client_id, secret, method = basic[0], basic[1], "client_secret_basic"
    elif body_id:
        client_id, secret = body_id, body_secret
        method = "client_secret_post" if body_secret is not None else "none"
    else:
        raise InvalidClientError("client authentication required")
    client = yield from persistence.load("client", client_id, Client)
    if client is None or client.state != "active":
        raise InvalidClientError("unknown client")
    if method != client.token_endpoint_auth_method:
        raise InvalidClientError("client authentication method not allowed for this client")
    if method != "none" and (
        client.secret_hash is None
        or secret is None
        or not equal(digest(secret), client.secret_hash)
    ):
        raise InvalidClientError("client authentication failed")
    return client
