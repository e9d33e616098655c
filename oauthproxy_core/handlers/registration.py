"""Dynamic Client Registration, RFC 7591 §3.

A successful registration answers 201 with every registered metadata value echoed (RFC 7591 §3.2.1;
INTEROP.md: the Python client sends no secret unless ``token_endpoint_auth_method`` is echoed, the
TypeScript client rejects a response without ``redirect_uris``). Client ids and secrets carry 256
random bits in unreserved characters (SECURITY.md 22, 25); only the secret's digest is stored (24).
"""

from __future__ import annotations

import json
from collections.abc import Generator
from typing import Any

from .. import persistence
from ..bounds import take_slot
from ..client_metadata import validate_client_metadata
from ..config import Context
from ..crypto import digest, new_secret
from ..errors import ServerError
from ..http import Request, Response, json_body, json_response
from ..records import Client
from .metadata import CORS


def register_endpoint(req: Request, ctx: Context) -> Generator[Any, Any, Response]:
    raw = json_body(req)
    meta = validate_client_metadata(raw, supported_scopes=ctx.config.scopes_supported)
    b = ctx.config.bounds
    window = b.registration_window
    yield from take_slot(
        "register",
        req.remote_addr or "-",
        limit=b.registrations_per_address,
        window=window,
        now=ctx.now,
    )
    yield from take_slot("register", "*", limit=b.registrations_total, window=window, now=ctx.now)
    client_id = new_secret(ctx.random, 16)
    secret: str | None = None
    if meta.token_endpoint_auth_method != "none":
        secret = new_secret(ctx.random, 32)
    echo = meta.to_json_dict()
    client = Client(
        client_id=client_id,
        secret_hash=digest(secret) if secret else None,
        token_endpoint_auth_method=meta.token_endpoint_auth_method,
        redirect_uris=meta.redirect_uris,
        grant_types=meta.grant_types,
        scope=meta.scope,
        client_name=meta.client_name,
        application_type=meta.application_type,
        source="dcr",
        metadata=tuple((k, json.dumps(v, sort_keys=True)) for k, v in echo.items()),
        issued_at=ctx.now,
    )
    created = yield from persistence.create(
        "client", client_id, client, ctx.config.lifetimes.client
    )
    if not created:  # 128 random bits collided: treat as an internal fault, not a client error
        raise ServerError("could not allocate a client id")
    body: dict[str, Any] = dict(echo)
    body["client_id"] = client_id
    body["client_id_issued_at"] = ctx.now
    if secret is not None:
        body["client_secret"] = secret
        body["client_secret_expires_at"] = 0
    return json_response(201, body, extra_headers=CORS)
