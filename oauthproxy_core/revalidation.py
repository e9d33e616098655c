"""Re-validation at refresh: the provider is asked about the user again, and the ``[access]`` rules
are applied again, before a refresh family lives on (spec/security.md 33).

Once ``Lifetimes.revalidate_after`` has passed since the provider last confirmed the user
(``Grant.confirmed_at``), a refresh with the family's current token first:

1. takes the grant for a moment (``revalidation_started``, a compare-and-set that sets
   ``revalidating_until``), so that only one instance talks to the provider for a family at a time:
   providers that rotate refresh tokens (Entra, GitHub Apps, most OIDC servers) would see two
   concurrent upstream refreshes as a replay and revoke the user;
2. refreshes the upstream token (RFC 6749 §6) when one is held, and reads the identity again from
   the refreshed ID token or the UserInfo endpoint (``upstream_identity.establish``). Without an
   upstream refresh token (GitHub OAuth Apps) the identity endpoint is called with the stored token;
3. then either confirms (``revalidated``: new ``confirmed_at``, the new sealed upstream tokens, the
   display claims and groups read now), or revokes the family (``access_withdrawn`` when the rules
   no longer admit the user or the provider now names another subject, ``upstream_refused`` when the
   provider answers ``invalid_grant`` or 401), and the client gets ``invalid_grant``;
4. or, on a transient failure (a timeout, a 5xx, a rate limit, an answer the proxy cannot read),
   releases the hold (``revalidation_deferred``) and answers ``temporarily_unavailable``: nothing is
   revoked and the presented refresh token stays the current one, so the client simply retries.

A refresh that arrives while another instance holds the grant is answered ``temporarily_unavailable``
with a ``Retry-After`` of the hold; once the holder has rotated, the same request is a retry inside
the grace window and gets the holder's answer (spec/security.md 20). A holder that dies leaves a hold
that lapses by itself after ``HOLD_SECONDS``.

When a refresh answer carries no ID token for a profile that reads the identity only from ID tokens,
nothing can be read again: the provider's acceptance of the refresh is the confirmation, and the
rules keep their last decision. ``Lifetimes.refresh_absolute`` bounds such families in any case.
"""

from __future__ import annotations

import json
from typing import Any

import attrs

from . import grants, persistence
from .config import Context
from .crypto import UnsealError, seal, unseal
from .domain_events import AccessDecided
from .effects import Emit, Handler, HttpCall
from .errors import InvalidGrantError, OAuthError, TemporarilyUnavailableError
from .records import Grant
from .resource_servers import decide_for
from .states import Absorbed, EventData, GrantEvent, grant_step
from .upstream import (
    UpstreamDeniedError,
    UpstreamTokens,
    build_refresh_request,
    parse_token_response,
    stored_tokens_json,
)
from .upstream_identity import Established, establish

__all__ = ["HOLD_SECONDS", "revalidate", "revalidation_due"]

#: How long one instance holds a grant while it asks the provider: longer than the provider's
#: timeouts for the two or three calls a re-validation makes, short enough that a crashed holder
#: delays the family's next refresh only briefly.
HOLD_SECONDS = 45


def revalidation_due(ctx: Context, grant: Grant) -> bool:
    """Whether this refresh must ask the provider first."""
    if grant.upstream_sealed is None:
        return False  # nothing to ask the provider with (a grant from before upstream tokens)
    confirmed = grant.confirmed_at or grant.created_at
    return ctx.now - confirmed >= ctx.config.lifetimes.revalidate_after


def revalidate(ctx: Context, grant: Grant, presented_hash: str) -> Handler[Grant | None]:
    """Re-validate ``grant``; return it as stored afterwards, or ``None`` when another request
    changed it first (the caller re-reads). Raises ``InvalidGrantError`` when the family was
    revoked, ``TemporarilyUnavailableError`` when the provider could not be asked."""
    if grant.revalidating_until > ctx.now:
        raise TemporarilyUnavailableError(
            "the user's authorization is being re-validated; retry",
            retry_after=grant.revalidating_until - ctx.now,
        )
    data = EventData(now=ctx.now, presented_hash=presented_hash)
    ttl = max(grant.expires_at - ctx.now, 1)
    try:
        hold = grant_step(
            grant, GrantEvent.revalidation_started, data, revalidating_until=ctx.now + HOLD_SECONDS
        )
    except Absorbed:
        return None
    held = yield from persistence.commit("grant", grant.id, grant, hold, ttl)
    if held is None:
        return None
    if hold.failed_closed:
        raise InvalidGrantError("refresh token is invalid")
    tokens: UpstreamTokens | None = None
    try:
        tokens, renewed = yield from _current_tokens(ctx, held)
        established = yield from _read_again(ctx, tokens, renewed)
    except UpstreamDeniedError:
        yield from grants.revoke_grant(ctx, grant.id, GrantEvent.upstream_refused)
        raise InvalidGrantError("the provider no longer authorizes this user") from None
    except OAuthError:
        # Transient, or an answer we cannot read: never a reason to revoke (spec/security.md 33).
        # A provider that rotated its refresh token before the failure must find the new one next
        # time, so tokens already renewed are kept.
        yield from _release(ctx, held, ttl, tokens)
        raise TemporarilyUnavailableError(
            "the identity provider could not confirm the user; retry"
        ) from None
    changes: dict[str, Any] = {
        "confirmed_at": ctx.now,
        "revalidating_until": 0,
        "upstream_sealed": _sealed(ctx, held, tokens),
    }
    if established is not None:
        # [access], then the grant's resource's own rules (spec/security.md 40).
        server = ctx.config.resource_server(held.resource)
        decision = decide_for(ctx.config.access, server, established.facts)
        same_user = established.subject == held.subject
        yield Emit(
            event=AccessDecided(
                subject=held.subject,
                client_id=held.client_id,
                admitted=same_user and decision.admitted,
                rule=decision.rule if same_user else None,
                when="refresh",
            )
        )
        if not same_user or not decision.admitted:
            yield from grants.revoke_grant(ctx, grant.id, GrantEvent.access_withdrawn)
            raise InvalidGrantError("this account is no longer allowed to use this server")
        changes.update(claims=established.claims, groups=decision.groups)
    confirmed = grant_step(held, GrantEvent.revalidated, EventData(now=ctx.now), **changes)
    return (yield from persistence.commit("grant", held.id, held, confirmed, ttl))


def _release(ctx: Context, held: Grant, ttl: int, renewed: UpstreamTokens | None) -> Handler[None]:
    changes: dict[str, Any] = {"revalidating_until": 0}
    if renewed is not None:
        changes["upstream_sealed"] = _sealed(ctx, held, renewed)
    released = grant_step(held, GrantEvent.revalidation_deferred, EventData(now=ctx.now), **changes)
    # Lost to a concurrent change: the hold lapses by itself.
    yield from persistence.commit("grant", held.id, held, released, ttl)


def _sealed(ctx: Context, grant: Grant, tokens: UpstreamTokens) -> str:
    return seal(ctx.keys, ctx.random, stored_tokens_json(tokens), "upstream|" + grant.id)


def _stored_tokens(ctx: Context, grant: Grant) -> dict[str, Any]:
    assert grant.upstream_sealed is not None  # revalidation_due checked it
    try:
        stored = json.loads(unseal(ctx.keys, grant.upstream_sealed, "upstream|" + grant.id))
    except (UnsealError, ValueError):
        raise InvalidGrantError("the upstream authorization is unreadable") from None
    if not isinstance(stored, dict) or not isinstance(stored.get("access_token"), str):
        raise InvalidGrantError("the upstream authorization is unreadable")
    return stored


def _current_tokens(ctx: Context, grant: Grant) -> Handler[tuple[UpstreamTokens, bool]]:
    """The upstream tokens to ask with: refreshed (RFC 6749 §6) when a refresh token is held,
    else the stored ones. The flag says whether they were refreshed."""
    try:
        stored = _stored_tokens(ctx, grant)
    except InvalidGrantError:
        # Nothing to ask the provider with: as good as the provider's refusal.
        raise UpstreamDeniedError("the upstream authorization is unreadable") from None
    profile = ctx.config.upstream
    refresh_token = stored.get("refresh_token")
    refresh_expires_at = stored.get("refresh_expires_at")
    if isinstance(refresh_expires_at, int) and refresh_expires_at <= ctx.now:
        raise UpstreamDeniedError("the provider's authorization has expired")
    if isinstance(refresh_token, str) and refresh_token:
        result = yield HttpCall(
            request=build_refresh_request(
                profile, refresh_token=refresh_token, resource=grant.resource
            )
        )
        fresh = parse_token_response(result, now=ctx.now, profile=profile)
        # Providers that do not rotate (Google) send no new refresh token: keep the one we have.
        renewed = attrs.evolve(
            fresh,
            refresh_token=fresh.refresh_token or refresh_token,
            refresh_expires_at=(
                fresh.refresh_expires_at if fresh.refresh_token else refresh_expires_at
            ),
        )
        return renewed, True
    expires_at = stored.get("expires_at")
    kept = UpstreamTokens(
        access_token=stored["access_token"],
        token_type="Bearer",
        expires_at=expires_at if isinstance(expires_at, int) else None,
        scope=tuple(s for s in stored.get("scope") or () if isinstance(s, str)),
        id_token=None,
    )
    return kept, False


def _read_again(ctx: Context, tokens: UpstreamTokens, renewed: bool) -> Handler[Established | None]:
    """The identity and facts behind ``tokens``, or ``None`` when nothing can be read again."""
    profile = ctx.config.upstream
    if not renewed:
        # No upstream refresh token (GitHub OAuth Apps): the identity endpoint answers for the
        # stored token, 401 once the user or an administrator revoked it.
        if profile.userinfo_url is None:
            return None  # nothing to ask: refresh_absolute bounds the family
        if profile.identity_source != "userinfo":
            profile = attrs.evolve(profile, identity_source="userinfo")
    return (
        yield from establish(
            profile, ctx.config.facts_policy, tokens, now=ctx.now, nonce=None, refreshed=True
        )
    )
