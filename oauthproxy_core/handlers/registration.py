"""Dynamic Client Registration, RFC 7591 §3, and its management protocol, RFC 7592.

A successful registration answers 201 with every registered metadata value echoed (RFC 7591 §3.2.1;
spec/interop.md: the Python client sends no secret unless ``token_endpoint_auth_method`` is echoed, the
TypeScript client rejects a response without ``redirect_uris``). Client ids and secrets carry 256
random bits in unreserved characters (spec/security.md 22, 25); only the secret's digest is stored (24).

RFC 7592: the registration response also carries a ``registration_access_token`` (256 random bits,
stored as a digest on the client record) and ``registration_client_uri`` (``<issuer>/register/<id>``).
With ``Authorization: Bearer <token>`` on that URI a client reads (GET, §2.1), replaces (PUT, §2.2)
or deletes (DELETE, §2.3) its registration; deleting it also invalidates at once every grant and
access token issued to it (``grants.revoke_client``). A missing or wrong token, and an unknown
client, all get the same 401 ``invalid_token`` (§2: the server must not reveal whether a client
exists). Static and CIMD clients have no registration token and cannot be managed here.

The ``[clients]`` admission policy (admission.py): with ``dcr = false`` both endpoints answer 404
``not_found`` saying that registration is not offered (the route stays, so the answer is ours and
not the application's behind the proxy); with ``redirect_hosts`` set, a registration or update
naming a redirect URI on another host is refused with ``invalid_client_metadata`` before anything is
counted or written, and audited (``ClientRefused``).

Choices made here: the store holds no plaintext secret, so read and update responses carry neither
``client_secret`` nor ``registration_access_token`` (both stay valid) unless an update issues a new
secret; an update keeps the secret unless ``token_endpoint_auth_method`` changes from ``none`` to a
secret method (a new secret is issued and returned) or to ``none`` (the secret is dropped).
"""

from __future__ import annotations

import json
from typing import Any

from .. import grants, persistence
from ..admission import REGISTRATION_OFF
from ..bearer_header import bearer_credentials
from ..bounds import Slot, per_source, take_slots
from ..client_lookup import registration_expires_at
from ..client_metadata import ClientMetadata, encode_echo, validate_client_metadata
from ..config import Context
from ..crypto import digest, equal, new_secret
from ..domain_events import ClientDeleted, ClientRefused, client_registered
from ..effects import Emit, Handler
from ..errors import (
    InvalidClientMetadataError,
    InvalidTokenError,
    NotFoundError,
    ServerError,
    TemporarilyUnavailableError,
)
from ..http import NO_STORE, Request, Response, json_body, json_response
from ..records import Client
from .metadata import CORS

_SECRET_METHODS = ("client_secret_basic", "client_secret_post")


def registration_client_uri(ctx: Context, client_id: str) -> str:
    return f"{ctx.config.issuer}/register/{client_id}"


def _check_admission(
    ctx: Context, meta: ClientMetadata, client_id: str | None, at: str
) -> Handler[None]:
    """Refuse (``invalid_client_metadata``, audited) redirect URIs the policy's hosts do not name."""
    refusal = ctx.config.admission.redirect_refusal(meta.redirect_uris)
    if refusal is not None:
        yield Emit(event=ClientRefused(client_id=client_id, cause=refusal.cause, at=at))
        raise InvalidClientMetadataError(refusal.reason)


def register_endpoint(req: Request, ctx: Context) -> Handler[Response]:
    if not ctx.config.admission.dcr:
        raise NotFoundError(REGISTRATION_OFF)
    raw = json_body(req)
    meta = validate_client_metadata(
        raw,
        supported_scopes=ctx.config.scopes_supported,
        device_grant=ctx.config.device.enabled,
    )
    yield from _check_admission(ctx, meta, None, "registration")
    b = ctx.config.bounds
    window = b.registration_window
    yield from take_slots(
        (
            Slot("register", per_source(ctx.source), b.registrations_per_address, window),
            Slot("register", "*", b.registrations_total, window),
        ),
        now=ctx.now,
    )
    client_id = new_secret(ctx.random, 16)
    secret: str | None = None
    if meta.token_endpoint_auth_method != "none":
        secret = new_secret(ctx.random, 32)
    registration_token = new_secret(ctx.random, 32)
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
        metadata=encode_echo(echo),
        issued_at=ctx.now,
        registration_token_hash=digest(registration_token),
    )
    # spec/security.md 28: a registration starts with the short unused lifetime; the token endpoint
    # extends it to the full one when the client completes a flow (client_lookup.touch_client).
    created = yield from persistence.create(
        "client", client_id, client, registration_expires_at(client, ctx.config) - ctx.now
    )
    if not created:  # 128 random bits collided: treat as an internal fault, not a client error
        raise ServerError("could not allocate a client id")
    yield Emit(event=client_registered(client))
    body = _client_body(ctx, client, echo)
    if secret is not None:
        body["client_secret"] = secret
        body["client_secret_expires_at"] = 0
    body["registration_access_token"] = registration_token
    return json_response(201, body, extra_headers=CORS)


def _client_body(
    ctx: Context, client: Client, echo: dict[str, Any] | None = None
) -> dict[str, Any]:
    # ``echo`` is what ``client.metadata`` encodes, when the caller still has it (no re-decoding).
    body: dict[str, Any] = (
        dict(echo)
        if echo is not None
        else {name: json.loads(value) for name, value in client.metadata}
    )
    body["client_id"] = client.client_id
    body["client_id_issued_at"] = client.issued_at
    body["registration_client_uri"] = registration_client_uri(ctx, client.client_id)
    return body


# --------------------------------------------------------------------------------------------------
# RFC 7592: the client configuration endpoint


def management_prefix(issuer: str) -> str:
    """The path prefix of every ``registration_client_uri`` (``/register/`` below the issuer)."""
    rest = issuer.partition("://")[2]
    slash = rest.find("/")
    return ("" if slash < 0 else rest[slash:]) + "/register/"


def _management_client_id(req: Request, ctx: Context) -> str:
    prefix = management_prefix(ctx.config.issuer)
    return req.path[len(prefix) :] if req.path.startswith(prefix) else ""


def _authorized(req: Request, ctx: Context) -> Handler[Client]:
    client_id = _management_client_id(req, ctx)
    token = bearer_credentials(req.headers).token
    if token is None:
        raise InvalidTokenError("a registration access token is required")
    client = None
    if client_id and "/" not in client_id and len(client_id) <= 128:
        client = yield from persistence.load("client", client_id, Client)
    expected = client.registration_token_hash if client is not None else None
    presented = digest(token)
    # One answer for an unknown client, a client without a token and a wrong token (RFC 7592 §2).
    if client is None or client.state != "active" or expected is None:
        equal(presented, presented)  # keep the timing of the comparison
        raise InvalidTokenError("the registration access token is not valid")
    if not equal(presented, expected):
        raise InvalidTokenError("the registration access token is not valid")
    return client


def client_configuration_endpoint(req: Request, ctx: Context) -> Handler[Response]:
    """GET, PUT and DELETE on ``registration_client_uri`` (RFC 7592 §2.1-2.3)."""
    if not ctx.config.admission.dcr:
        # Whatever the token: no answer here may tell whether a client exists (§2).
        raise NotFoundError(REGISTRATION_OFF)
    client = yield from _authorized(req, ctx)
    if req.method == "GET":
        return json_response(200, _client_body(ctx, client), extra_headers=CORS)
    if req.method == "DELETE":
        # §2.3: the server "SHOULD immediately invalidate all existing authorization grants and
        # currently-active access tokens associated with this client" (spec/security.md 34).
        yield from grants.revoke_client(ctx, client.client_id)
        yield from persistence.delete("client", client.client_id)
        yield Emit(event=ClientDeleted(client_id=client.client_id))
        return Response(status=204, headers=NO_STORE + CORS)
    return (yield from _update(req, ctx, client))


def _update(req: Request, ctx: Context, client: Client) -> Handler[Response]:
    raw = dict(json_body(req))
    # §2.2: "The client MUST include its client_id field in the request, and it MUST be the same as
    # its currently issued client identifier."
    if raw.get("client_id") != client.client_id:
        raise InvalidClientMetadataError("client_id must be included and unchanged")
    presented_secret = raw.pop("client_secret", None)
    if presented_secret is not None and (
        not isinstance(presented_secret, str)
        or client.secret_hash is None
        or not equal(digest(presented_secret), client.secret_hash)
    ):
        # §2.2: "If the client includes the client_secret field in the request, the value of this
        # field MUST match the currently issued client secret for that client."
        raise InvalidClientMetadataError("client_secret does not match")
    meta = validate_client_metadata(
        raw,
        supported_scopes=ctx.config.scopes_supported,
        device_grant=ctx.config.device.enabled,
    )
    yield from _check_admission(ctx, meta, client.client_id, "update")
    method = meta.token_endpoint_auth_method
    new_secret_value: str | None = None
    secret_hash = client.secret_hash
    if method == "none":
        secret_hash = None
    elif client.token_endpoint_auth_method not in _SECRET_METHODS or secret_hash is None:
        new_secret_value = new_secret(ctx.random, 32)
        secret_hash = digest(new_secret_value)
    echo = meta.to_json_dict()
    ttl = registration_expires_at(client, ctx.config) - ctx.now
    updated = yield from persistence.replace(
        "client",
        client.client_id,
        client,
        max(ttl, 1),
        secret_hash=secret_hash,
        token_endpoint_auth_method=method,
        redirect_uris=meta.redirect_uris,
        grant_types=meta.grant_types,
        scope=meta.scope,
        client_name=meta.client_name,
        application_type=meta.application_type,
        metadata=encode_echo(echo),
    )
    if updated is None:
        raise TemporarilyUnavailableError("the registration changed concurrently; retry")
    body = _client_body(ctx, updated)
    if new_secret_value is not None:
        body["client_secret"] = new_secret_value
        body["client_secret_expires_at"] = 0
    return json_response(200, body, extra_headers=CORS)
