"""The user's upstream access token, for a resource server that calls the provider's API on the
user's behalf (spec/architecture.md, "Tokens").

Upstream tokens never reach MCP clients (spec/security.md 18); this is the one explicit way for the
protected server itself to use them. An expired token is refreshed with the upstream refresh token
(RFC 6749 §6) and the grant is updated by compare-and-set, so two concurrent callers do not both
rotate a provider's refresh token: the loser re-reads the grant and uses the winner's token. An upstream
``invalid_grant`` revokes the proxy's grant (spec/security.md 21); transient failures (timeouts, 5xx,
429) raise ``temporarily_unavailable`` and revoke nothing; upstream error text is never relayed.

Rotating providers (GitHub Apps, Entra) invalidate the old refresh token on use. If two callers
race, the loser's refresh with the already-rotated token is refused upstream: before revoking, the
grant is re-read, and if the winner already stored new tokens the loser simply uses them. A refresh
token past its own expiry (GitHub Apps' ``refresh_token_expires_in``) is not sent at all: the grant is
revoked as the provider would. Providers that do not rotate (Google) send no new refresh token and
the old one is kept.

Only a principal from a user's grant has an upstream token (``upstream_access_for``,
spec/security.md 37): a token another issuer signed (``[[trusted_issuers]]``) or one minted from an
enterprise ID-JAG holds no grant of ours, and is refused before the store is read.
"""

from __future__ import annotations

import json
from typing import Any

import attrs

from .. import grants, persistence
from ..config import Context
from ..crypto import UnsealError, seal, unseal
from ..effects import Handler, HttpCall
from ..errors import InvalidGrantError, InvalidTokenError
from ..records import Grant
from ..states import EventData, GrantEvent, GrantState, grant_step
from ..tokens import Origin
from ..upstream import UpstreamDeniedError, build_refresh_request, parse_token_response
from .bearer import Principal

#: Refresh a little before the provider's expiry so a token handed out is still usable.
EARLY_REFRESH = 60


class NoUpstreamTokenError(InvalidGrantError):
    """The principal never had an upstream token: another issuer's token, one minted from an
    enterprise ID-JAG, or a machine client's grant (the client credentials grant signs nobody in at
    the provider). Not a failure of a user's grant: nothing to refresh, nothing revoked. A caller
    that serves both kinds (the gateway's ``forward_upstream_token``) tells it apart by its class."""


@attrs.frozen(kw_only=True)
class UpstreamAccess:
    access_token: str = attrs.field(repr=False)
    token_type: str
    expires_at: int | None
    scope: tuple[str, ...]


def upstream_access_for(ctx: Context, principal: Principal) -> Handler[UpstreamAccess]:
    """The upstream access token of ``principal``'s grant; ``InvalidGrantError`` for a principal
    that holds none (spec/security.md 37)."""
    if principal.origin is not Origin.GRANT or not principal.grant_id:
        raise NoUpstreamTokenError("this access was not granted by a user at the provider")
    return (yield from upstream_access_token(ctx, principal.grant_id))


def upstream_access_token(ctx: Context, grant_id: str) -> Handler[UpstreamAccess]:
    for _attempt in range(3):
        grant = yield from persistence.load("grant", grant_id, Grant)
        if (
            grant is None
            or grant.state != GrantState.active.value
            or (yield from grants.is_revoked(grant_id))
        ):
            raise InvalidTokenError("the grant was revoked")
        if (yield from grants.is_client_revoked(grant.client_id)):
            # RFC 7592 §2.3, spec/security.md 34: the client was deleted; its grant goes with it.
            yield from grants.revoke_grant(ctx, grant.id, GrantEvent.client_deleted)
            raise InvalidTokenError("the grant was revoked")
        if grant.upstream_sealed is None:
            raise NoUpstreamTokenError("no upstream token is held for this grant")
        try:
            stored = json.loads(unseal(ctx.keys, grant.upstream_sealed, "upstream|" + grant.id))
        except (UnsealError, ValueError):
            raise InvalidGrantError("upstream token unavailable") from None
        expires_at = stored.get("expires_at")
        fresh = expires_at is None or expires_at - EARLY_REFRESH > ctx.now
        if fresh or not stored.get("refresh_token"):
            return _access(stored)
        refresh_expires_at = stored.get("refresh_expires_at")
        if isinstance(refresh_expires_at, int) and refresh_expires_at <= ctx.now:
            yield from grants.revoke_grant(ctx, grant.id, GrantEvent.upstream_refused)
            raise InvalidTokenError("the provider's authorization has expired")
        profile = ctx.config.upstream
        result = yield HttpCall(
            request=build_refresh_request(
                profile, refresh_token=stored["refresh_token"], resource=grant.resource
            )
        )
        try:
            tokens = parse_token_response(result, now=ctx.now, profile=profile)
        except UpstreamDeniedError:
            current = yield from persistence.load("grant", grant_id, Grant)
            if current is not None and current.upstream_sealed != grant.upstream_sealed:
                continue  # another caller rotated the refresh token meanwhile: use its result
            yield from grants.revoke_grant(ctx, grant.id, GrantEvent.upstream_refused)
            raise InvalidTokenError("the provider revoked the user's authorization") from None
        renewed = {
            "access_token": tokens.access_token,
            "token_type": tokens.token_type,
            # Providers that do not rotate (Google) omit it: keep the one we have.
            "refresh_token": tokens.refresh_token or stored["refresh_token"],
            "expires_at": tokens.expires_at,
            "scope": list(tokens.scope) or stored.get("scope", []),
            "id_token": tokens.id_token or stored.get("id_token"),
            "refresh_expires_at": (
                tokens.refresh_expires_at
                if tokens.refresh_token
                else stored.get("refresh_expires_at")
            ),
        }
        sealed = seal(ctx.keys, ctx.random, json.dumps(renewed).encode(), "upstream|" + grant.id)
        ttl = max(grant.expires_at - ctx.now, 1)
        refreshed = grant_step(
            grant, GrantEvent.upstream_refreshed, EventData(now=ctx.now), upstream_sealed=sealed
        )
        updated = yield from persistence.commit("grant", grant.id, grant, refreshed, ttl)
        if updated is not None:
            return _access(renewed)
    raise InvalidGrantError("the upstream token is being refreshed elsewhere; retry")


def _access(stored: dict[str, Any]) -> UpstreamAccess:
    return UpstreamAccess(
        access_token=str(stored["access_token"]),
        token_type=str(stored.get("token_type") or "Bearer"),
        expires_at=stored.get("expires_at"),
        scope=tuple(stored.get("scope") or ()),
    )
