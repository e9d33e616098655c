"""``Proxy`` and ``AsyncProxy``: the core bound to a store, an HTTP client, the clock and randomness.

A proxy that accepts Client ID Metadata Document clients also needs ``fetch``, the SSRF-safe document
fetcher (``safe_fetch.SyncSafeFetcher`` / ``AsyncSafeFetcher``); without one every document fetch is
refused (the driver fails closed), so such clients are simply not found.

Every framework adapter (ASGI, WSGI, the h11 server, the gateway, the `mcp` SDK verifier) holds one of
these and nothing else; none repeats protocol logic. They also offer the resource-server side:
bearer verification (with a small verified-token cache that skips the signature check, and repeats
the revocation look-ups at most every ``[lifetimes] revocation_staleness`` seconds, so a revoked grant
or a deleted client is refused on every instance within that bound: spec/security.md 34) and the
user's upstream access token.

A token whose ``iss`` names a ``[[trusted_issuers]]`` issuer is verified under that issuer's rules
alone, through the driver (its JWK Set comes from the store or the safe fetcher,
``trusted_tokens.py``); its claims are cached like ours, and having no grant they need no
revocation look-up (spec/security.md 37). ``upstream_token`` refuses any principal that does not hold
a user's grant.

The cache also receives the access token of every successful response of the proxy's own token
endpoint, read with ``tokens.own_token_claims`` (same claim checks, no signature check: the token was
signed in this process a moment ago), so that the first request made with a fresh token costs no
ES256 verification either.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Generator, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import attrs

from oauthproxy_core import AuthorizationServer, Context, Keyring, ProxyConfig, Request, Response
from oauthproxy_core.bearer_header import BearerCredentials
from oauthproxy_core.errors import InvalidTokenError, OAuthError
from oauthproxy_core.front_door import FrontDoor, is_protected, protected_prefixes
from oauthproxy_core.handlers.bearer import (
    Challenge,
    Principal,
    authorize_claims,
    authorize_unrevoked,
    challenge,
    credentials_of,
    missing_token,
)
from oauthproxy_core.handlers.upstream_token import UpstreamAccess, upstream_access_for
from oauthproxy_core.issuers import ForeignJwt, TrustedIssuer
from oauthproxy_core.routes import RESOURCE_ENDPOINT
from oauthproxy_core.tokens import AccessClaims, own_token_claims, verify_access_token
from oauthproxy_core.trusted_tokens import trusted_issuer_for, verify_trusted_token

from .audit import observe as audit_observe
from .driver import (
    AsyncFetch,
    AsyncHttp,
    Observer,
    SyncFetch,
    SyncHttp,
    refuse_fetch,
    refuse_fetch_async,
    run,
    run_async,
)
from .stores.base import AsyncStore, SyncStore

if TYPE_CHECKING:
    from .metrics import Metrics

Clock = Callable[[], float]


@attrs.frozen
class _Foreign:
    """A token that is not ours and names a trusted issuer: verified through the driver (its keys
    may have to be fetched), not inline."""

    token: str = attrs.field(repr=False)
    issuer: TrustedIssuer
    jwt: ForeignJwt


class TokenCache:
    """Verified access-token claims by token string, bounded, expiring with the token.

    Each entry also remembers until when its revocation look-ups hold: ``Lifetimes.
    revocation_staleness`` seconds after the last look-up that found the token unrevoked
    (spec/security.md 34). ``get`` says whether that time has passed.
    """

    def __init__(self, max_entries: int = 10_000) -> None:
        self.max_entries = max_entries
        self._entries: dict[str, tuple[AccessClaims, int]] = {}
        self._lock = threading.Lock()  # threaded WSGI servers share one cache

    def get(self, token: str, now: int) -> tuple[AccessClaims, bool] | None:
        """``(claims, unrevoked_recently)``, or ``None`` for a token not (or no longer) cached."""
        entry = self._entries.get(token)
        if entry is None:
            return None
        claims, checked_until = entry
        if claims.expires_at <= now:
            self._entries.pop(token, None)
            return None
        return claims, now < checked_until

    def put(self, token: str, claims: AccessClaims, checked_until: int = 0) -> None:
        with self._lock:
            if token not in self._entries and len(self._entries) >= self.max_entries:
                self._entries.pop(next(iter(self._entries)), None)
            self._entries[token] = (claims, checked_until)

    def checked(self, token: str, claims: AccessClaims, until: int) -> None:
        """The revocation look-ups for ``token`` found it unrevoked; trust that until ``until``."""
        if until > 0:
            self.put(token, claims, until)


class _Base:
    def __init__(
        self,
        config: ProxyConfig,
        keys: Keyring,
        *,
        clock: Clock = time.time,
        random: Callable[[int], bytes] = os.urandom,
        token_cache: bool = True,
        audit: bool = True,
        metrics: Metrics | None = None,
    ) -> None:
        self.config = config
        self.keys = keys
        self.server = AuthorizationServer(config, keys)
        self.clock = clock
        self.random = random
        self.cache = TokenCache() if token_cache else None
        self._token_path = urlsplit(config.token_endpoint).path
        self._audit = audit
        #: Emits ``oauthproxy.audit`` events (audit.py) when that logger is enabled for INFO.
        self.observe: Observer | None = audit_observe if audit else None
        #: Optional Prometheus metrics (metrics.py): the observer then also counts the domain
        #: events and times every store and HTTP effect the drivers run.
        self.metrics = metrics
        self._endpoint: Callable[[str], str | None] | None = None
        if metrics is not None:
            self._endpoint = metrics.endpoint_names(self.server)

    def _observe_store(self, store: object) -> None:
        if self.metrics is not None:
            self.observe = self.metrics.observer(
                audit_log=self._audit, store=store, config=self.config
            )
        #: The bearer check emits no domain event, so only metrics (store timings) observe it:
        #: without metrics it runs with no observer at all, on the per-request hot path.
        self.observe_bearer: Observer | None = self.observe if self.metrics is not None else None

    def _count(self, path: str, resp: Response) -> None:
        if self.metrics is not None and self._endpoint is not None:
            endpoint = self._endpoint(path)
            if endpoint is not None:
                self.metrics.count_response(endpoint, resp)

    def _count_challenge(self, verdict: Principal | Challenge) -> None:
        if self.metrics is not None and isinstance(verdict, Challenge) and verdict.error:
            self.metrics.count_error(RESOURCE_ENDPOINT, verdict.error)

    def now(self) -> int:
        return int(self.clock())

    def handles(self, path: str) -> bool:
        return self.server.handles(path)

    def front_door(self, protect: Sequence[str] | None = None) -> FrontDoor:
        """The front-door decision for an adapter guarding ``protect`` (default: the MCP path)."""
        return FrontDoor(self.server.routes, protected_prefixes(self.config, protect))

    def _remember_issued(self, req: Request, resp: Response) -> None:
        """Cache the claims of the access token our own token endpoint has just issued."""
        if self.cache is None or resp.status != 200 or req.path != self._token_path:
            return
        try:
            token = json.loads(resp.body)["access_token"]
            if not isinstance(token, str):
                return
            ctx = self.server.context(now=self.now(), random=self.random)
            claims = self._issued_claims(ctx, token)
        except (ValueError, KeyError, TypeError, InvalidTokenError):
            return  # not a token response of ours for this resource: nothing to cache
        # Minted a moment ago from a grant the token endpoint found unrevoked.
        self.cache.put(token, claims, ctx.now + self.config.lifetimes.revocation_staleness)

    def _issued_claims(self, ctx: Context, token: str) -> AccessClaims:
        """The claims of a token our token endpoint issued for one of our resources (its one
        audience, spec/security.md 40). Raises ``InvalidTokenError``."""
        for resource in self.config.resource_urls[1:]:
            try:
                return own_token_claims(ctx, token, audience=resource)
            except InvalidTokenError:
                continue
        return own_token_claims(ctx, token, audience=self.config.resource)

    def _verify_signature(
        self,
        ctx: Context,
        authorization: str | BearerCredentials | None,
        resource: str | None = None,
    ) -> tuple[str, AccessClaims, bool] | Challenge | _Foreign:
        """``(token, claims, unrevoked_recently)`` for a token whose signature verifies, or the
        token a trusted issuer must verify. ``resource``: the protected resource the request is
        for (default: the default resource); a cached token of another resource is refused by
        ``authorize_unrevoked``, a fresh one here by its audience (spec/security.md 40)."""
        credentials = credentials_of(authorization)
        token = credentials.token
        if token is None:
            return missing_token(ctx, credentials, (), resource)
        if self.cache is not None:
            hit = self.cache.get(token, ctx.now)
            if hit is not None:
                return token, hit[0], hit[1]
        # A token naming a trusted issuer is never ours: that issuer's rules alone, no ES256 try.
        trusted = trusted_issuer_for(ctx, token)
        if trusted is not None:
            return _Foreign(token, *trusted)
        try:
            claims = verify_access_token(ctx, token, audience=resource or self.config.resource)
        except InvalidTokenError:
            return challenge(ctx, status=401, error="invalid_token", scopes=(), resource=resource)
        if self.cache is not None:
            self.cache.put(token, claims)
        return token, claims, False

    def _trusted_verified(
        self, token: str, claims: AccessClaims | Challenge
    ) -> tuple[str, AccessClaims, bool] | Challenge:
        if isinstance(claims, Challenge):
            return claims
        if self.cache is not None:
            self.cache.put(token, claims)
        return token, claims, False

    def _remember_checked(
        self, ctx: Context, token: str, claims: AccessClaims, verdict: Principal | Challenge
    ) -> None:
        if self.cache is not None and isinstance(verdict, Principal):
            until = ctx.now + self.config.lifetimes.revocation_staleness
            self.cache.checked(token, claims, until)


def _verify_trusted(
    ctx: Context, issuer: TrustedIssuer, jwt: ForeignJwt
) -> Generator[Any, Any, AccessClaims | Challenge]:
    try:
        return (yield from verify_trusted_token(ctx, issuer, jwt))
    except InvalidTokenError:
        return challenge(ctx, status=401, error="invalid_token", scopes=())


def _with_scopes(
    verdict: Challenge, ctx_challenge: Callable[..., Challenge], required: Sequence[str]
) -> Challenge:
    if not required:
        return verdict
    return ctx_challenge(status=verdict.status, error=verdict.error, scopes=required)


class Proxy(_Base):
    """Blocking: for WSGI applications and threads."""

    def __init__(
        self,
        config: ProxyConfig,
        keys: Keyring,
        store: SyncStore,
        http: SyncHttp,
        fetch: SyncFetch | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(config, keys, **kw)
        self.store = store
        self.http = http
        self.fetch: SyncFetch = fetch if fetch is not None else refuse_fetch
        self._observe_store(store)

    def handle(self, req: Request) -> Response:
        gen = self.server.handle(req, now=self.now(), random=self.random)
        resp = run(gen, self.store, self.http, self.observe, fetch=self.fetch)
        self._remember_issued(req, resp)
        if self.metrics is not None:
            self._count(req.path, resp)
        return resp

    def verify(
        self,
        authorization: str | BearerCredentials | None,
        required_scopes: Sequence[str] = (),
        resource: str | None = None,
    ) -> Principal | Challenge:
        """The verdict on a request's bearer token: its ``Authorization`` value, or the credentials
        ``bearer_header.parse_bearer`` read from all its ``Authorization`` fields. ``resource``:
        the protected resource the request is for (default: the default resource)."""
        ctx = self.server.context(now=self.now(), random=self.random)
        verified = self._verify_signature(ctx, authorization, resource)
        if isinstance(verified, _Foreign):
            verified = self._trusted_verified(
                verified.token,
                run(
                    _verify_trusted(ctx, verified.issuer, verified.jwt),
                    self.store,
                    observe=self.observe_bearer,
                    fetch=self.fetch,
                ),
            )
        if isinstance(verified, Challenge):
            self._count_challenge(verified)
            return _with_scopes(
                verified, lambda **kw: challenge(ctx, resource=resource, **kw), required_scopes
            )
        token, claims, recent = verified
        if recent:
            result = authorize_unrevoked(claims, ctx, required_scopes, resource)
        else:
            result = run(
                authorize_claims(claims, ctx, required_scopes, resource),
                self.store,
                observe=self.observe_bearer,
            )
            self._remember_checked(ctx, token, claims, result)
        self._count_challenge(result)
        return result

    def upstream_token(self, principal: Principal) -> UpstreamAccess:
        """The user's upstream access token (refreshed when expired). Raises ``OAuthError``."""
        ctx = self.server.context(now=self.now(), random=self.random)
        return run(upstream_access_for(ctx, principal), self.store, self.http, self.observe)


class AsyncProxy(_Base):
    """asyncio: for ASGI applications, the h11 server and the gateway."""

    def __init__(
        self,
        config: ProxyConfig,
        keys: Keyring,
        store: AsyncStore,
        http: AsyncHttp,
        fetch: AsyncFetch | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(config, keys, **kw)
        self.store = store
        self.http = http
        self.fetch: AsyncFetch = fetch if fetch is not None else refuse_fetch_async
        self._observe_store(store)

    async def handle(self, req: Request) -> Response:
        gen = self.server.handle(req, now=self.now(), random=self.random)
        resp = await run_async(gen, self.store, self.http, self.observe, fetch=self.fetch)
        self._remember_issued(req, resp)
        if self.metrics is not None:
            self._count(req.path, resp)
        return resp

    async def verify(
        self,
        authorization: str | BearerCredentials | None,
        required_scopes: Sequence[str] = (),
        resource: str | None = None,
    ) -> Principal | Challenge:
        ctx = self.server.context(now=self.now(), random=self.random)
        verified = self._verify_signature(ctx, authorization, resource)
        if isinstance(verified, _Foreign):
            verified = self._trusted_verified(
                verified.token,
                await run_async(
                    _verify_trusted(ctx, verified.issuer, verified.jwt),
                    self.store,
                    observe=self.observe_bearer,
                    fetch=self.fetch,
                ),
            )
        if isinstance(verified, Challenge):
            self._count_challenge(verified)
            return _with_scopes(
                verified, lambda **kw: challenge(ctx, resource=resource, **kw), required_scopes
            )
        token, claims, recent = verified
        if recent:
            result = authorize_unrevoked(claims, ctx, required_scopes, resource)
        else:
            result = await run_async(
                authorize_claims(claims, ctx, required_scopes, resource),
                self.store,
                observe=self.observe_bearer,
            )
            self._remember_checked(ctx, token, claims, result)
        self._count_challenge(result)
        return result

    async def upstream_token(self, principal: Principal) -> UpstreamAccess:
        ctx = self.server.context(now=self.now(), random=self.random)
        return await run_async(
            upstream_access_for(ctx, principal), self.store, self.http, self.observe
        )


__all__ = [
    "AsyncProxy",
    "OAuthError",
    "Proxy",
    "TokenCache",
    "UpstreamAccess",
    "is_protected",
    "protected_prefixes",
]
