"""Refresh-token families: minting, rotation with an idempotent grace window, reuse detection and
revocation (OAuth 2.1 §4.3, RFC 9700 §4.14.2, spec/security.md 19-21, 34).

A refresh token is ``<grant id>.<secret>``; the store keeps only the secret's digest in the grant.
Rotation is a compare-and-set on the grant's version, so of two concurrent refreshes of the same token
one rotates and the other finds it in ``previous_hash`` and, inside the grace window, receives the very
same response (sealed in the grant). Outside the window, or for an older generation, presenting the
token is reuse: the whole family is revoked. Every change of a grant is a transition of
``states.GrantMachine``; revocation moves the grant to ``revoked`` (dropping its sealed secrets) and
writes a marker keyed by grant id that the bearer verifier consults, so every access token of the
family dies with it.

Deleting a registration (RFC 7592 §2.3: the server "SHOULD immediately invalidate all existing
authorization grants and currently-active access tokens associated with this client") writes a
second marker, keyed by the client, that the bearer verifier and the upstream-token API consult as
well: the store has no index of a client's grants, and needs none, since every access token and
every grant names its client. The deleted client's refresh tokens and codes already fail client
authentication (the client is unknown); a grant found under the marker is revoked on sight
(``client_deleted``). Both markers outlive everything they cover, so a revocation takes effect at
the next request, on every instance sharing the store (spec/security.md 34: the staleness bound is
zero; the adapters' token cache skips only the signature check, never these look-ups).
"""

from __future__ import annotations

import json
import re
from typing import Any

from . import persistence
from .config import Context
from .crypto import digest, new_secret, seal
from .domain_events import GrantChanged, grant_issued
from .effects import Emit, Handler
from .records import Grant
from .states import EventData, GrantEvent, GrantState, grant_step
from .tokens import mint_access_token
from .upstream_session import end_sessions

REVOKED = "revoked"
CLIENT_REVOKED = "revoked-client"
RETIRED_KEEP = 32
_REFRESH_RE = re.compile(r"([A-Za-z0-9_-]{22})\.([A-Za-z0-9_-]{43})")


def split_refresh_token(token: str) -> tuple[str, str] | None:
    m = _REFRESH_RE.fullmatch(token)
    return (m.group(1), m.group(2)) if m else None


def token_response(
    ctx: Context, grant: Grant, scopes: tuple[str, ...], refresh_token: str | None
) -> dict[str, Any]:
    access, expires_in = mint_access_token(
        ctx,
        subject=grant.subject,
        client_id=grant.client_id,
        scopes=scopes,
        resource=grant.resource,
        grant_id=grant.id,
        jti=new_secret(ctx.random, 16),
        claims=grant.claims,
        groups=grant.groups,
    )
    body: dict[str, Any] = {
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": expires_in,
        "scope": " ".join(scopes),
    }
    if refresh_token is not None:
        body["refresh_token"] = refresh_token
    return body


def start_family(
    ctx: Context,
    *,
    grant_type: str,
    with_refresh: bool,
    grant_id: str,
    client_id: str,
    subject: str,
    scopes: tuple[str, ...],
    resource: str,
    claims: tuple[tuple[str, str], ...],
    groups: tuple[str, ...],
    upstream_sealed: str | None,
) -> Handler[dict[str, Any]]:
    """Store the refresh-token family a user's consent creates (a redeemed code or device code),
    tell the observers, and return the token response; a refresh token only ``with_refresh``."""
    refresh, refresh_hash = new_refresh_secret(ctx, grant_id) if with_refresh else (None, "")
    lifetimes = ctx.config.lifetimes
    grant = Grant(
        id=grant_id,
        client_id=client_id,
        subject=subject,
        scopes=scopes,
        resource=resource,
        claims=claims,
        groups=groups,
        created_at=ctx.now,
        expires_at=ctx.now + min(lifetimes.refresh_token, lifetimes.refresh_absolute),
        absolute_expires_at=ctx.now + lifetimes.refresh_absolute,
        confirmed_at=ctx.now,
        refresh_hash=refresh_hash,
        upstream_sealed=upstream_sealed,
    )
    yield from persistence.put("grant", grant.id, grant, grant.expires_at - ctx.now)
    yield Emit(event=grant_issued(grant, grant_type))
    return token_response(ctx, grant, grant.scopes, refresh)


def new_refresh_secret(ctx: Context, grant_id: str) -> tuple[str, str]:
    secret = new_secret(ctx.random, 32)
    return f"{grant_id}.{secret}", digest(secret)


def rotation(
    ctx: Context, grant: Grant, presented_hash: str, response: dict[str, Any], new_hash: str
) -> dict[str, Any]:
    """The changes that rotate ``grant`` from ``presented_hash`` to ``new_hash``."""
    retired = grant.retired_hashes
    if grant.previous_hash:
        retired = ((grant.previous_hash, *retired))[:RETIRED_KEEP]
    return dict(
        generation=grant.generation + 1,
        refresh_hash=new_hash,
        previous_hash=presented_hash,
        grace_until=ctx.now + ctx.config.lifetimes.refresh_grace,
        previous_response_sealed=seal(
            ctx.keys, ctx.random, json.dumps(response).encode(), "refresh|" + grant.id
        ),
        retired_hashes=retired,
        expires_at=sliding_expiry(ctx, grant),
    )


def sliding_expiry(ctx: Context, grant: Grant) -> int:
    """``Lifetimes.refresh_token`` from now, never past the family's absolute end."""
    idle = ctx.now + ctx.config.lifetimes.refresh_token
    return min(idle, grant.absolute_expires_at) if grant.absolute_expires_at else idle


def _marker_ttl(ctx: Context) -> int:
    # Longer than any access token (or grant) issued before the revocation can live.
    lifetimes = ctx.config.lifetimes
    return max(lifetimes.refresh_token, lifetimes.access_token) + 60


#: Revocations that say the user, not one client's grant, lost access.
_ENDS_SESSIONS = frozenset(
    {GrantEvent.upstream_refused, GrantEvent.access_withdrawn, GrantEvent.operator_revoked}
)


def revoke_grant(ctx: Context, grant_id: str, reason: GrantEvent) -> Handler[None]:
    """Revoke the family ``grant_id`` for ``reason`` (a revoking ``GrantEvent``).

    The marker is written first and unconditionally: a code replay may revoke a grant that its
    racing winner has not stored yet, and the marker is what access tokens are checked against.
    """
    yield from persistence.put_raw(REVOKED, grant_id, b"1", _marker_ttl(ctx))
    for _attempt in range(3):
        grant = yield from persistence.load("grant", grant_id, Grant)
        if grant is None:
            # Revoked before its racing redemption stored it: the marker alone stands for it.
            yield Emit(
                event=GrantChanged(
                    grant_id=grant_id,
                    client_id=None,
                    subject=None,
                    cause=reason.value,
                    state=GrantState.revoked.value,
                    generation=None,
                    applied=True,
                )
            )
            return
        if grant.state != GrantState.active.value:
            return
        revoked = grant_step(
            grant,
            reason,
            EventData(now=ctx.now),
            upstream_sealed=None,
            previous_response_sealed=None,
        )
        stored = yield from persistence.commit(
            "grant", grant_id, grant, revoked, max(grant.expires_at - ctx.now, 60)
        )
        if stored is not None:
            if reason in _ENDS_SESSIONS:
                # spec/security.md 40: the provider, the rules or an operator took the user's
                # access away; no upstream session of theirs signs them in again.
                yield from end_sessions(ctx, grant.subject)
            return


def is_revoked(grant_id: str) -> Handler[bool]:
    marker = yield from persistence.get_raw(REVOKED, grant_id)
    return marker is not None


def revoke_client(ctx: Context, client_id: str) -> Handler[None]:
    """Every grant and access token of ``client_id`` is refused from now on (RFC 7592 §2.3).

    Written before the registration is deleted, so that no moment exists in which the client is
    gone but its tokens are still accepted.
    """
    yield from persistence.put_raw(CLIENT_REVOKED, client_id, b"1", _marker_ttl(ctx))


def is_client_revoked(client_id: str) -> Handler[bool]:
    marker = yield from persistence.get_raw(CLIENT_REVOKED, client_id)
    return marker is not None
