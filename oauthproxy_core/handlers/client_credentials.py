"""The client credentials grant (RFC 6749 §4.4, OAuth 2.1 §4.2; the MCP authorization extension
``io.modelcontextprotocol/oauth-client-credentials``) for pre-registered confidential clients.

A machine client (a CI job, a backend) is configured by the operator in ``[[clients.static]]`` with
``client_credentials`` among its grant types and a ``subject``, the identity its tokens carry. The
token endpoint (``handlers/token.py``) has already authenticated it by its configured method only
(``client_secret_basic``, ``client_secret_post`` or ``private_key_jwt``: ``client_auth.py``,
spec/security.md 22; an unknown client or a wrong secret is 401 ``invalid_client``, a replayed or
misaddressed assertion too) and refused a client whose grant types lack this one
(``unauthorized_client``). What is decided here:

- **Scope** (RFC 6749 §4.4.2, §3.3): every requested scope must be one of the client's ``scopes``
  (when its configuration names none, the server's ``scopes_supported``), else ``invalid_scope``;
  a request naming no scope gets all of them.
- **Resource** (RFC 8707 §2): absent, the protected resource; present, it must be that resource
  (``invalid_target``). The token's ``aud`` is that resource, as for every token of the proxy
  (spec/security.md 18).
- **Nothing more**: RFC 6749 §4.4.3, "A refresh token SHOULD NOT be included": none is; the
  provider plays no part, so there is no upstream token either.

The token's subject, scopes and audience come from the client's configuration, never from the
request except to narrow the scopes (spec/security.md 36). Every refusal happens before anything is
written; the only write a refused request can cause is the ``jti`` of a ``private_key_jwt``
assertion that authenticated, consumed by its first presentation whatever follows (RFC 7523 §3
item 7), so that a refused request cannot be retried with the same assertion.

Revocation. Every access token names a grant (``gid``) and a client, and the bearer check consults
the revocation markers of both (spec/security.md 21, 34). A token of this grant names its client's
*client-credentials family*: one ``Grant`` record per client (no refresh token, no upstream token),
found through the index record ``cc-family`` (client id -> grant id) and created by the first token
request, so that it is stored once per client and not once per token. So:

- ``oauthproxy grants list`` shows it (subject ``service:ci-bot``), and ``oauthproxy grants revoke
  --client ci-bot`` (or ``--subject``, or its grant id) revokes it: its marker refuses every token
  issued from it, on every instance;
- revoking one of its access tokens at ``/revoke`` (RFC 7009) revokes the family, so all of that
  client's outstanding tokens (RFC 7009 §2.1 lets a server revoke the tokens of the same grant);
- a revoked family is never reused: the next token request creates a new one, since the client's
  configuration, not a grant, decides whether it may have tokens (an operator who wants it gone
  removes it from the configuration, and rotates its secret or keys);
- a family is also replaced when the configured subject, scopes or resource no longer match it, and
  before it would expire while a token issued from it still lives, so the record always outlives
  its tokens and ``grants revoke`` can find every live token's family.

Two instances that create a family for the same client at the same moment each keep their own (the
index names the last one written); both are ``Grant`` records of that client, listed and revoked
alike.
"""

from __future__ import annotations

from typing import Any

from .. import grants, persistence
from ..config import Context, ProxyConfig
from ..crypto import new_secret
from ..domain_events import TokenIssued
from ..effects import Emit, Handler
from ..errors import InvalidScopeError, ServerError, UnauthorizedClientError
from ..records import Client, Grant
from ..resources import select_resource
from ..scopes import parse_scope
from ..states import GrantState
from ..tokens import mint_access_token

GRANT_TYPE = "client_credentials"
#: Index record kind: client id -> the id of its current client-credentials family (``Grant``).
FAMILY = "cc-family"


def machine_clients(config: ProxyConfig) -> tuple[Client, ...]:
    """The pre-registered clients allowed the client credentials grant."""
    return tuple(c for c in config.static_clients if GRANT_TYPE in c.grant_types)


def static_private_key_jwt(config: ProxyConfig) -> bool:
    """Whether a pre-registered client authenticates with ``private_key_jwt`` (RFC 7523 §2.2)."""
    return any(c.token_endpoint_auth_method == "private_key_jwt" for c in config.static_clients)


def allowed_scopes(ctx: Context, client: Client) -> tuple[str, ...]:
    """What the client may ask for: its configured ``scopes``, else every supported scope."""
    return client.scope or ctx.config.scopes_supported


def client_credentials_grant(
    ctx: Context, client: Client, form: dict[str, str]
) -> Handler[dict[str, Any]]:
    """The token response for an authenticated ``client`` (RFC 6749 §4.4.3)."""
    subject = client.subject
    # The configuration allows the grant only to confidential, pre-registered clients with a
    # subject (ProxyConfig); checked again so that no other kind of client reaches a token here.
    if subject is None or client.source != "static" or client.token_endpoint_auth_method == "none":
        raise UnauthorizedClientError("client may not use this grant type")
    allowed = allowed_scopes(ctx, client)
    requested = parse_scope(form.get("scope"))
    if any(scope not in allowed for scope in requested):
        raise InvalidScopeError("scope is not allowed for this client")
    scopes = requested or allowed
    resource = select_resource(form.get("resource"), ctx.config.resource_urls)

    family, created = yield from _family(ctx, client, subject, allowed, resource)
    access, expires_in = mint_access_token(
        ctx,
        subject=subject,
        client_id=client.client_id,
        scopes=scopes,
        resource=resource,
        grant_id=family.id,
        jti=new_secret(ctx.random, 16),
    )
    yield Emit(
        event=TokenIssued(
            grant_type=GRANT_TYPE,
            grant_id=family.id,
            client_id=client.client_id,
            subject=subject,
            scopes=scopes,
            new_grant=created,
        )
    )
    return {
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": expires_in,
        "scope": " ".join(scopes),
    }


def family_lifetime(ctx: Context) -> int:
    """How long a family's record lives: reused for ``refresh_idle`` seconds, and longer than any
    token issued from it by one access-token lifetime."""
    lifetimes = ctx.config.lifetimes
    return lifetimes.refresh_token + lifetimes.access_token


def _family(
    ctx: Context, client: Client, subject: str, scopes: tuple[str, ...], resource: str
) -> Handler[tuple[Grant, bool]]:
    """The client's current family if it may still issue tokens, else a new one (module
    docstring); and whether it was created now."""
    pointer = yield from persistence.get_raw(FAMILY, client.client_id)
    if pointer is not None:
        current = yield from persistence.load("grant", pointer.decode("ascii", "replace"), Grant)
        if (
            current is not None
            and current.state == GrantState.active.value
            and current.client_id == client.client_id
            and current.subject == subject
            and current.scopes == scopes
            and current.resource == resource
            # A token issued now must die before the record does (module docstring).
            and current.expires_at - ctx.now >= ctx.config.lifetimes.access_token
            and not (yield from grants.is_revoked(current.id))
        ):
            return current, False
    lifetime = family_lifetime(ctx)
    family = Grant(
        id=new_secret(ctx.random, 16),
        client_id=client.client_id,
        subject=subject,
        scopes=scopes,
        resource=resource,
        created_at=ctx.now,
        expires_at=ctx.now + lifetime,
        absolute_expires_at=ctx.now + lifetime,
        confirmed_at=ctx.now,
    )
    stored = yield from persistence.create("grant", family.id, family, lifetime)
    if stored is None:
        raise ServerError("could not allocate a grant")
    yield from persistence.put_raw(FAMILY, client.client_id, family.id.encode("ascii"), lifetime)
    return stored, True
