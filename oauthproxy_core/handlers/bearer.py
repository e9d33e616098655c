"""Bearer-token verification for the protected MCP resource (RFC 6750 §2.1, §3; RFC 9728 §5.1; MCP
authorization spec, "Authorization Server Discovery" and "Token Handling"). The token is read from
the ``Authorization`` field by ``bearer_header.parse_bearer``.

A pure function of (token, keys, clock) plus two revocation look-ups (the grant's and the client's,
spec/security.md 21 and 34), which an adapter's verified-token cache repeats at most every
``Lifetimes.revocation_staleness`` seconds (``authorize_unrevoked`` serves the requests between).
It returns either a ``Principal`` or the exact challenge to send: 401 with
``resource_metadata`` and ``scope`` (and ``error="invalid_token"`` when a token was presented), or
403 ``insufficient_scope``. spec/interop.md: the TypeScript client parses only a header starting with
``Bearer ``, so there is exactly one challenge.
Tokens for another audience and upstream tokens never verify (spec/security.md 18, no passthrough).
With several protected resources (``[[resources]]``) each check names the resource the request is
for (``resource``; default: the default resource), and a token whose one audience is another
resource is refused there with that resource's challenge (spec/security.md 40).

A token whose ``iss`` names one of the ``[[trusted_issuers]]`` is judged under that issuer's rules
alone (``trusted_tokens.py``); every other token under ours. Its principal says so
(``Principal.origin``): it holds no grant, has no revocation marker of ours, and never reaches a
user's upstream token (spec/security.md 37). A token minted from an enterprise ID-JAG is honoured
only while its issuer is still configured, with the client still listed for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

import attrs

from .. import grants
from ..bearer_header import BearerCredentials, parse_bearer_value
from ..config import Context
from ..effects import Handler
from ..errors import InvalidTokenError
from ..http import Response, json_response
from ..scopes import without_offline_access
from ..tokens import AccessClaims, Origin, verify_access_token
from ..trusted_tokens import trusted_issuer_for, verify_trusted_token


@attrs.frozen(kw_only=True)
class Principal:
    """Who is calling: the proxy's subject (``<provider>:<upstream id>``), client and scopes.

    ``subject`` is the user's identity: key accounts and access decisions on it. ``claims`` are
    display data from the provider (``login``, ``name``, ...); an ``email`` is among them only when
    the provider vouched for it (spec/security.md 32).
    """

    subject: str
    client_id: str
    scopes: tuple[str, ...]
    resource: str
    grant_id: str
    expires_at: int
    claims: tuple[tuple[str, str], ...] = ()
    #: The groups the ``[access]`` decision saw at sign-in or the last re-validation (access.py).
    groups: tuple[str, ...] = ()
    #: Where the identity comes from (spec/security.md 37): only ``Origin.GRANT`` holds a grant of
    #: ours, and with it the user's upstream token.
    origin: Origin = Origin.GRANT


@attrs.frozen(kw_only=True)
class Challenge:
    """The response to send instead of serving the request."""

    status: int
    www_authenticate: str
    error: str | None = None

    def response(self) -> Response:
        body = {
            "error": self.error or "invalid_token",
            "error_description": "authorization required",
        }
        return json_response(
            self.status, body, extra_headers=(("WWW-Authenticate", self.www_authenticate),)
        )


def resource_metadata_url(resource: str) -> str:
    """RFC 9728 §3.1: the well-known segment goes between the resource's host and its path."""
    parts = urlsplit(resource)
    return f"{parts.scheme}://{parts.netloc}/.well-known/oauth-protected-resource{parts.path}"


def prm_url(ctx: Context, resource: str | None = None) -> str:
    return resource_metadata_url(resource or ctx.config.resource)


def challenge(
    ctx: Context,
    *,
    status: int,
    error: str | None,
    scopes: Sequence[str],
    resource: str | None = None,
) -> Challenge:
    """The challenge of ``resource`` (default: the default resource): its metadata URL, and the
    scopes asked for or else its baseline (spec/security.md 40)."""
    url = resource or ctx.config.resource
    scope = " ".join(without_offline_access(scopes or ctx.config.baseline_scopes(url)))
    return challenge_for(url, status=status, error=error, scope=scope)


def challenge_for(resource: str, *, status: int, error: str | None, scope: str) -> Challenge:
    """The challenge for ``resource`` (its metadata URL, ``scope`` when not empty, ``error``)."""
    parts = [f'resource_metadata="{resource_metadata_url(resource)}"']
    if scope:
        parts.append(f'scope="{scope}"')
    if error:
        parts.append(f'error="{error}"')
    return Challenge(status=status, www_authenticate="Bearer " + ", ".join(parts), error=error)


def step_up(resource: str, scopes: Sequence[str]) -> Challenge:
    """403 ``insufficient_scope`` naming the scopes to ask for (RFC 6750 §3.1; MCP 2025-11-25,
    "Scope Challenge Handling"), for a resource known by its URL: the gateway's tool rules
    (``jsonrpc_inspection.refusal``) know the caller's ``Principal.resource``, not a ``Context``."""
    return challenge_for(resource, status=403, error="insufficient_scope", scope=" ".join(scopes))


def principal_of(claims: AccessClaims) -> Principal:
    return Principal(
        subject=claims.subject,
        client_id=claims.client_id,
        scopes=claims.scopes,
        resource=claims.resource,
        grant_id=claims.grant_id,
        expires_at=claims.expires_at,
        claims=claims.claims,
        groups=claims.groups,
        origin=claims.origin,
    )


def credentials_of(authorization: str | BearerCredentials | None) -> BearerCredentials:
    """``authorization`` as parsed credentials (an ``Authorization`` value is parsed, RFC 6750 §2.1)."""
    if isinstance(authorization, BearerCredentials):
        return authorization
    return parse_bearer_value(authorization)


def missing_token(
    ctx: Context,
    credentials: BearerCredentials,
    scopes: Sequence[str],
    resource: str | None = None,
) -> Challenge:
    """The challenge for a request without a usable bearer token: RFC 6750 §3.1, no error code when
    it carried no credentials at all, ``invalid_token`` when they were not one Bearer token."""
    error = "invalid_token" if credentials.presented else None
    return challenge(ctx, status=401, error=error, scopes=scopes, resource=resource)


def verify_bearer(
    authorization: str | BearerCredentials | None,
    ctx: Context,
    required_scopes: Sequence[str] = (),
    resource: str | None = None,
) -> Handler[Principal | Challenge]:
    """``authorization`` is the request's ``Authorization`` value, or its parsed credentials
    (``bearer_header.parse_bearer`` over every field, so that two fields are refused); ``resource``
    the protected resource the request is for (default: the default resource)."""
    credentials = credentials_of(authorization)
    token = credentials.token
    if token is None:
        return missing_token(ctx, credentials, required_scopes, resource)
    # A token naming a trusted issuer cannot be ours (no trusted issuer is our issuer, and ours
    # name us): it is judged by that issuer's rules only, without trying our keys first.
    trusted = trusted_issuer_for(ctx, token)
    try:
        if trusted is None:
            claims = verify_access_token(ctx, token, audience=resource or ctx.config.resource)
        else:
            claims = yield from verify_trusted_token(ctx, *trusted)
    except InvalidTokenError:
        return challenge(
            ctx, status=401, error="invalid_token", scopes=required_scopes, resource=resource
        )
    return (yield from authorize_claims(claims, ctx, required_scopes, resource))


def authorize_claims(
    claims: AccessClaims,
    ctx: Context,
    required_scopes: Sequence[str] = (),
    resource: str | None = None,
) -> Handler[Principal | Challenge]:
    """The checks after signature verification: expiry, revocation, scopes.

    Split out so that a verified-token cache (in the adapters) can skip the signature, and repeat
    the revocation look-ups at most every ``Lifetimes.revocation_staleness`` seconds: a revocation or
    a client's deletion is seen within that bound (spec/security.md 34).
    """
    if claims.expires_at <= ctx.now:
        return challenge(
            ctx, status=401, error="invalid_token", scopes=required_scopes, resource=resource
        )
    if claims.origin is Origin.TRUSTED_ISSUER:
        # Another issuer's token: nothing of ours to revoke (its issuer decides its life).
        return authorize_unrevoked(claims, ctx, required_scopes, resource)
    # spec/security.md 21, 34: a revoked grant or a deleted client ends its access tokens at once.
    if (yield from grants.is_revoked(claims.grant_id)) or (
        yield from grants.is_client_revoked(claims.client_id)
    ):
        return challenge(
            ctx, status=401, error="invalid_token", scopes=required_scopes, resource=resource
        )
    return authorize_unrevoked(claims, ctx, required_scopes, resource)


def authorize_unrevoked(
    claims: AccessClaims,
    ctx: Context,
    required_scopes: Sequence[str] = (),
    resource: str | None = None,
) -> Principal | Challenge:
    """``authorize_claims`` without the revocation look-ups, for claims whose look-ups an adapter
    made less than ``Lifetimes.revocation_staleness`` seconds ago (spec/security.md 34).

    Claims for another resource than ``resource`` are refused here too (spec/security.md 40):
    an adapter's cache holds claims by token, whatever resource first verified them."""
    if (
        claims.expires_at <= ctx.now
        or not still_vouched(claims, ctx)
        or claims.resource != (resource or ctx.config.resource)
    ):
        return challenge(
            ctx, status=401, error="invalid_token", scopes=required_scopes, resource=resource
        )
    missing = [s for s in required_scopes if s not in claims.scopes]
    if missing:
        return challenge(
            ctx,
            status=403,
            error="insufficient_scope",
            scopes=required_scopes,
            resource=resource,
        )
    return principal_of(claims)


def still_vouched(claims: AccessClaims, ctx: Context) -> bool:
    """Whether the issuer behind ``claims`` is still configured to vouch for them.

    A token minted from an ID-JAG is honoured only while its enterprise issuer is configured and
    still lists the token's client: removing either ends such tokens at once, on every instance
    configured so. A trusted issuer's token only while that issuer is configured.
    """
    if claims.origin is Origin.ENTERPRISE:
        return any(
            e.issuer == claims.issuer and claims.client_id in e.clients
            for e in ctx.config.enterprise_issuers
        )
    if claims.origin is Origin.TRUSTED_ISSUER:
        return any(t.issuer == claims.issuer for t in ctx.config.trusted_issuers)
    return True
