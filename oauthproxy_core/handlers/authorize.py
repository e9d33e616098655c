"""The authorization endpoint, OAuth 2.1 §4.1.1 (RFC 6749 §4.1.1 with RFC 7636 §4.3, RFC 8707 §2).

Order matters (spec/security.md 2; Authlib CVE-2026-41479 redirected before looking up the client): first
the client, then the redirect URI, both answered with a rendered page when wrong; only then may an error
travel to the redirect URI. A valid request creates a transaction in ``pkce_bound`` and sends the
browser to the proxy's consent page; the upstream provider is not contacted yet (spec/security.md 11).

Bounds (bounds.py; spec/security.md 28, 35): every request is counted against its source and the total
*before* the client is looked up, since a lookup may fetch a metadata document: a flood of made-up
client ids uses up its sender's budget, not the document-fetch budget everyone shares. Refused
there, nothing is validated yet, so the answer is a page (429 or 503), never a redirect. A valid
request then takes one of its client's pending slots *for its source*, so no few sources can fill a
client that thousands of users share; refused there, it is redirected ``temporarily_unavailable``.
"""

from __future__ import annotations

from .. import persistence
from ..admission import Refusal
from ..bounds import Slot, per_source, take_slot, take_slots
from ..cimd import looks_like_cimd
from ..client_lookup import find_client
from ..config import Context
from ..crypto import new_secret
from ..domain_events import transaction_changed
from ..effects import Emit, Handler
from ..errors import (
    InvalidRequestError,
    OAuthError,
    PageError,
    ServerError,
    TemporarilyUnavailableError,
    UnauthorizedClientError,
    UnknownClientError,
    UnsupportedResponseTypeError,
)
from ..http import Request, Response, form_body, parse_params
from ..pkce import validate_code_challenge
from ..records import Client, Transaction
from ..redirect_uris import is_acceptable_redirect_uri, match_redirect_uri
from ..redirects import error_redirect
from ..resources import select_resource
from ..scopes import parse_scope, resolve_scopes
from ..states import EXPIRY_NOTICE, EventData, Step, TxEvent, TxState, new_transaction, step
from .consent import remembered_consent, start_upstream


def authorize_endpoint(req: Request, ctx: Context) -> Handler[Response]:
    params = parse_params(req.query) if req.method == "GET" else form_body(req)

    # 1. The client (a PageError, rendered as a page, on failure).
    client_id = params.get("client_id")
    if not client_id:
        raise PageError("The request names no client.")
    b, window = ctx.config.bounds, ctx.config.lifetimes.transaction
    # Before any lookup or fetch (module docstring). Raises 429 / 503: rendered as a page.
    yield from take_slots(
        (
            Slot("authorize-address", per_source(ctx.source), b.authorizations_per_address, window),
            Slot("authorize", "*", b.authorizations_total, window, shared=True),
        ),
        now=ctx.now,
    )
    client = yield from _client(client_id, ctx)

    # 2. The redirect URI (a PageError, rendered as a page, on failure).
    requested = params.get("redirect_uri")
    if requested is None:
        if len(client.redirect_uris) != 1:
            raise PageError("The request must name a redirect URI.")
        redirect_uri, sent = client.redirect_uris[0], False
    else:
        matched = match_redirect_uri(
            client.redirect_uris, requested, allow_localhost_port=ctx.config.allow_localhost_port
        )
        if matched is None:
            raise PageError("The redirect URI is not registered.")
        redirect_uri, sent = requested, True
    if not is_acceptable_redirect_uri(redirect_uri):
        raise PageError("The redirect URI is not acceptable.")

    # 3. Everything else may be reported to the validated redirect URI.
    client_state = params.get("state")
    try:
        bound = _new_transaction(params, client, redirect_uri, sent, ctx)
        tx = bound.record
    except OAuthError as err:
        return error_redirect(
            redirect_uri, err, client_state=client_state, issuer=ctx.config.issuer
        )

    ttl = tx.expires_at - ctx.now + EXPIRY_NOTICE
    try:
        yield from take_slot(
            Slot(
                "authorize-client",
                per_source(ctx.source, client.client_id),
                b.authorizations_per_client,
                window,
            ),
            now=ctx.now,
        )
    except OAuthError as err:
        # RFC 6749 §4.1.2.1 temporarily_unavailable, sent to the validated redirect URI.
        busy = TemporarilyUnavailableError(err.description)
        return error_redirect(
            redirect_uri, busy, client_state=client_state, issuer=ctx.config.issuer
        )
    stored = yield from persistence.create("tx", tx.id, tx, ttl)
    if stored is None:
        raise ServerError("could not allocate a transaction")
    tx = stored
    yield Emit(event=transaction_changed(bound, applied=True))

    if (yield from remembered_consent(req, ctx, tx)):
        return (yield from start_upstream(ctx, tx, req=req))
    location = f"{ctx.config.issuer}/consent?txn={tx.id}"
    return Response(status=302, headers=(("Location", location), ("Cache-Control", "no-store")))


def _client(client_id: str, ctx: Context) -> Handler[Client]:
    """Static, CIMD (fetched and validated here) or registered, and admitted by ``[clients]``
    (client_lookup.py); else an ``UnknownClientError``, a page, never a redirect (spec/security.md 2)."""
    client = yield from find_client(client_id, ctx)
    if isinstance(client, Refusal):
        raise UnknownClientError(f"This application is not admitted here: {client.reason}.")
    if client is None:
        if looks_like_cimd(client_id, allow_loopback=True):
            raise UnknownClientError(
                "This application's metadata document could not be fetched or is not valid."
            )
        raise UnknownClientError("This application is not registered.")
    return client


def _new_transaction(
    params: dict[str, str], client: Client, redirect_uri: str, sent: bool, ctx: Context
) -> Step[Transaction]:
    if params.get("response_type") != "code":
        raise UnsupportedResponseTypeError("response_type must be code")
    if "authorization_code" not in client.grant_types:
        raise UnauthorizedClientError("client may not use the authorization code grant")
    if "request" in params or "request_uri" in params:
        raise InvalidRequestError("request objects are not supported")
    challenge = validate_code_challenge(
        params.get("code_challenge"), params.get("code_challenge_method")
    )
    requested = parse_scope(params.get("scope"))
    # RFC 8707 §2: one of the protected resources (spec/security.md 40); the default one when the
    # client names none. Its baseline scopes are what an authorization asking for none gets.
    resource = select_resource(params.get("resource"), ctx.config.resource_urls)
    scopes = resolve_scopes(
        requested,
        supported=ctx.config.scopes_supported,
        default=ctx.config.baseline_scopes(resource),
        # A registration's `scope` is what the client says it will use (RFC 7591 §2): it narrows
        # the defaults when nothing is asked for, but caps no request. MCP clients step up by
        # asking the same registration for more (MCP 2025-11-25, "Scope Challenge Handling"; the
        # mcp SDK registers with the first challenge's scope and never again), and every scope
        # asked for is shown on the consent page and must be supported.
        client_allowed=None if requested else client.scope or None,
    )
    tx = new_transaction(
        id=new_secret(ctx.random, 16),
        client_id=client.client_id,
        redirect_uri=redirect_uri,
        redirect_uri_sent=sent,
        client_state=params.get("state"),
        code_challenge=challenge,
        scopes=scopes,
        resource=resource,
        created_at=ctx.now,
        expires_at=ctx.now + ctx.config.lifetimes.transaction,
    )
    bound = step(tx, TxEvent.challenge_bound, EventData(now=ctx.now))
    if bound.state != TxState.pkce_bound.value:
        raise InvalidRequestError("code_challenge rejected")
    return bound
