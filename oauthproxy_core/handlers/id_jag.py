"""The Identity Assertion JWT Authorization Grant at the token endpoint: an enterprise issuer's ID-JAG
redeemed for an access token of ours (draft-ietf-oauth-identity-assertion-authz-grant-03, "Access
Token Request" and its "Processing Rules"; the MCP extension
``io.modelcontextprotocol/enterprise-managed-authorization`` §5; RFC 7523 §2.1 and §3, RFC 7521 §4.1
and §5.2; spec/interop.md, "Enterprise-managed authorization"). The draft's sections are cited by
title: their numbers move between revisions.

``token.token_endpoint`` authenticates the client and calls ``redeem_id_jag`` for
``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer``, which is accepted only while an
``[[enterprise_issuers]]`` table exists. Every check below fails with a precise OAuth error and
stores nothing; the one write, the assertion's ``jti``, comes after all of them:

- the client: confidential (the draft's "Client Authentication" consideration asks for it, and the
  `mcp` SDK's provider always sends a secret) and
  listed in some enterprise issuer's ``clients`` (``unauthorized_client`` otherwise);
- ``assertion`` present (``invalid_request``); a signed JWT within the size bounds, its JOSE ``typ``
  ``oauth-id-jag+jwt`` (RFC 8725 §3.11; an ID token or access token of the same issuer is not a
  grant), its ``iss`` an enterprise issuer that lists this client, its signature valid under that
  issuer's algorithm list and JWK Set (``issuers.py``), ``exp`` and ``iat`` present and in date, a
  lifetime of at most ``MAX_ASSERTION_LIFETIME`` (RFC 7523 §3 leaves the bound to us);
- ``aud`` our issuer identifier, as a string or an array of exactly that one element (the draft's
  processing rules: anything else is ``invalid_grant``, against audience injection); ``client_id``
  the authenticated client (same rules, ``invalid_grant``); ``sub`` and ``jti`` present;
- ``resource`` naming one of our protected resources (required by the MCP profile's claim table,
  §4.3; optional in the draft); the request's own ``resource`` parameter, if sent, must be one of
  ours (RFC 8707 §2, ``invalid_target``) and named by the assertion; without it the token is for the
  first of our resources that the assertion names (with ``[[resources]]``, spec/security.md 40: the
  token still has exactly one audience);
- fail closed on what we do not implement: ``cnf`` (a key-bound grant needs a DPoP proof, the
  draft's "Proof-of-Possession" rules, which this server does not process),
  ``authorization_details`` (RFC 9396), ``act`` (a delegation chain), and the multi-tenant claims
  ``tenant`` and ``aud_tenant`` (they would make ``sub`` unique only within a tenant we cannot
  represent): ``invalid_grant``;
- scopes: those of the ``scope`` claim that this resource defines (absent: the default scopes), then
  narrowed by the request's ``scope`` (RFC 7521 §4.1; more than the assertion allows is
  ``invalid_scope``). Never wider than the assertion (spec/security.md 37);
- replay: the ``jti`` is recorded by a create-if-absent write (kind ``jti``, keyed by issuer and
  ``jti``) that lives until the assertion expires, so across every instance sharing the store an
  assertion is redeemed once (RFC 7523 §3 item 7). The draft lets a client present the same ID-JAG
  again when its access token expires; we refuse that: an ID-JAG lives minutes, clients fetch a
  fresh one per exchange (the `mcp` SDK's provider does), and a second use is indistinguishable from
  a stolen copy.

The answer has no refresh token (the draft's "Refresh Token": the ID-JAG replaces it). The access
token is ours, bound to the resource like every other (RFC 8707), names the subject
``<subject_prefix>:<sub>`` and carries the issuer that vouched (``tokens.ENTERPRISE_CLAIM``); the
bearer check honours it only while that issuer is configured and still lists the client
(``handlers/bearer.still_vouched``). It holds no grant, so it never reaches a user's upstream token.
"""

from __future__ import annotations

from typing import Any

from ..config import Context
from ..crypto import digest, new_secret
from ..domain_events import AssertionRedeemed
from ..effects import CompareAndSet, Emit, Handler
from ..errors import (
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
    InvalidTargetError,
    TemporarilyUnavailableError,
    UnauthorizedClientError,
)
from ..issuers import (
    LEEWAY,
    EnterpriseIssuer,
    ForeignTokenError,
    KeysUnavailableError,
    check_times,
    parse_foreign_jwt,
    verify_foreign_jwt,
)
from ..records import Client
from ..resources import canonical_resource
from ..scopes import format_scope, is_subset, parse_scope
from ..tokens import mint_access_token

__all__ = [
    "GRANT_PROFILE",
    "GRANT_TYPE",
    "ID_JAG_TYPE",
    "MAX_ASSERTION_LIFETIME",
    "grant_types",
    "redeem_id_jag",
]

#: RFC 7523 §2.1.
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
#: The draft's value of ``authorization_grant_profiles_supported`` ("Resource Authorization Server
#: Metadata").
GRANT_PROFILE = "urn:ietf:params:oauth:grant-profile:id-jag"
#: The JOSE ``typ`` of an ID-JAG (the draft's "ID-JAG Claims"), compared without ``application/``
#: and case (RFC 7515 §4.1.9).
ID_JAG_TYPE = "oauth-id-jag+jwt"
#: The longest-lived assertion accepted (seconds from ``iat``, and from now, to ``exp``): its
#: ``jti`` record lives that long.
MAX_ASSERTION_LIFETIME = 3600
MAX_SUBJECT_LENGTH = 255
MAX_JTI_LENGTH = 256
#: Claims whose meaning this server does not implement: an assertion carrying one is refused.
UNSUPPORTED_CLAIMS = ("cnf", "authorization_details", "act", "tenant", "aud_tenant")
_JTI_KIND = "jti"


def grant_types(ctx: Context) -> tuple[str, ...]:
    """The grant types this module adds to the token endpoint: the jwt-bearer grant while an
    enterprise issuer is configured, else none."""
    return (GRANT_TYPE,) if ctx.config.enterprise_issuers else ()


def _issuers_of(ctx: Context, client: Client) -> tuple[EnterpriseIssuer, ...]:
    return tuple(e for e in ctx.config.enterprise_issuers if client.client_id in e.clients)


def _text(value: object, limit: int) -> str | None:
    if not isinstance(value, str) or not value or len(value) > limit:
        return None
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        return None
    return value


def _named_resources(value: object) -> tuple[str, ...]:
    """The canonical resources the ``resource`` claim names; none when it is malformed."""
    entries = [value] if isinstance(value, str) else value
    if not isinstance(entries, list) or not 0 < len(entries) <= 16:
        return ()
    named: list[str] = []
    for entry in entries:
        if not isinstance(entry, str):
            return ()
        try:
            named.append(canonical_resource(entry))
        except InvalidTargetError:
            continue
    return tuple(named)


def _target(ctx: Context, requested: str | None, claims: dict[str, Any]) -> str:
    """The one resource the token will be for: the requested one, else the first of ours that the
    assertion names (our order: the default resource first)."""
    named = _named_resources(claims.get("resource"))
    if requested is not None:
        if requested in named:
            return requested
    else:
        for ours in ctx.config.resource_urls:
            if ours in named:
                return ours
    raise InvalidGrantError("the assertion is not for this resource")


def _allowed_scopes(ctx: Context, claims: dict[str, Any], resource: str) -> tuple[str, ...]:
    """What the assertion allows at ``resource``: its ``scope`` claim's scopes that we define
    (without the claim: the scopes the resource asks of every client)."""
    if "scope" not in claims:
        return ctx.config.baseline_scopes(resource)
    raw = claims["scope"]
    if not isinstance(raw, str):
        raise InvalidGrantError("the assertion's scope must be a string")
    try:
        listed = parse_scope(raw)
    except InvalidScopeError:
        raise InvalidGrantError("the assertion's scope is malformed") from None
    return tuple(s for s in listed if s in ctx.config.scopes_supported)


def _verified_claims(
    ctx: Context, client: Client, assertion: str
) -> Handler[tuple[EnterpriseIssuer, dict[str, Any]]]:
    try:
        jwt = parse_foreign_jwt(assertion)
    except ForeignTokenError:
        raise InvalidGrantError("the assertion is not a signed JWT") from None
    typ = jwt.header.get("typ")
    if not isinstance(typ, str) or typ.lower().removeprefix("application/") != ID_JAG_TYPE:
        raise InvalidGrantError("the assertion is not an identity assertion grant (typ)")
    issuer = next((e for e in _issuers_of(ctx, client) if e.issuer == jwt.issuer), None)
    if issuer is None:
        raise InvalidGrantError("the assertion's issuer is not trusted for this client")
    try:
        claims = yield from verify_foreign_jwt(
            jwt, jwks_uri=issuer.jwks_uri, algorithms=issuer.algorithms, now=ctx.now
        )
        exp = check_times(claims, now=ctx.now, require_iat=True)
    except KeysUnavailableError:
        raise TemporarilyUnavailableError(
            "the assertion's issuer cannot be reached; retry shortly", retry_after=5
        ) from None
    except ForeignTokenError as err:
        raise InvalidGrantError(f"the assertion is invalid: {err}") from None
    if (
        exp - claims["iat"] > MAX_ASSERTION_LIFETIME
        or exp - ctx.now > MAX_ASSERTION_LIFETIME + LEEWAY
    ):
        raise InvalidGrantError("the assertion lives too long")
    return issuer, claims


def _check_claims(
    ctx: Context, client: Client, claims: dict[str, Any], requested: str | None
) -> tuple[str, str, str]:
    """``(sub, jti, resource)`` once the claims hold; ``InvalidGrantError`` naming the first that
    does not. ``requested``: the request's canonical ``resource`` parameter, if it sent one."""
    # Exactly our issuer, alone: no other string, no array naming anyone else as well.
    if claims.get("aud") not in (ctx.config.issuer, [ctx.config.issuer]):
        raise InvalidGrantError("the assertion's audience must be this server's issuer alone")
    if claims.get("client_id") != client.client_id:
        raise InvalidGrantError("the assertion was issued to another client")
    refused = [name for name in UNSUPPORTED_CLAIMS if name in claims]
    if refused:
        raise InvalidGrantError(f"the assertion carries {refused[0]}, which is not supported")
    resource = _target(ctx, requested, claims)
    sub = _text(claims.get("sub"), MAX_SUBJECT_LENGTH)
    if sub is None:
        raise InvalidGrantError("the assertion has no valid sub")
    jti = _text(claims.get("jti"), MAX_JTI_LENGTH)
    if jti is None:
        raise InvalidGrantError("the assertion has no valid jti")
    return sub, jti, resource


def _granted_scopes(
    ctx: Context, claims: dict[str, Any], form: dict[str, str], resource: str
) -> tuple[str, ...]:
    allowed = _allowed_scopes(ctx, claims, resource)
    requested = parse_scope(form.get("scope"))
    if requested and not is_subset(requested, allowed):
        raise InvalidScopeError("scope exceeds what the assertion allows")
    granted = requested or allowed
    if not granted:
        raise InvalidScopeError("the assertion allows no scope of this resource")
    return granted


def redeem_id_jag(ctx: Context, client: Client, form: dict[str, str]) -> Handler[dict[str, Any]]:
    """The token response for an ID-JAG presented by the authenticated ``client``."""
    if client.token_endpoint_auth_method == "none" or not _issuers_of(ctx, client):
        raise UnauthorizedClientError("client may not use this grant type")
    assertion = form.get("assertion")
    if not assertion:
        raise InvalidRequestError("assertion is required")
    requested: str | None = None
    if (requested_resource := form.get("resource")) is not None:
        try:
            requested = canonical_resource(requested_resource)
        except InvalidTargetError:
            requested = None
        if requested not in ctx.config.resource_urls:
            raise InvalidTargetError("resource is not one of this server's protected resources")
    issuer, claims = yield from _verified_claims(ctx, client, assertion)
    sub, jti, resource = _check_claims(ctx, client, claims, requested)
    scopes = _granted_scopes(ctx, claims, form, resource)
    fresh = yield CompareAndSet(
        kind=_JTI_KIND,
        key=digest("id-jag|" + issuer.issuer + "\x1f" + jti),
        expected_version=0,
        value=b"",
        ttl=max(claims["exp"] - ctx.now + LEEWAY, 1),
    )
    if not fresh:
        raise InvalidGrantError("the assertion was already used")
    subject = f"{issuer.subject_prefix}:{sub}"
    access, expires_in = mint_access_token(
        ctx,
        subject=subject,
        client_id=client.client_id,
        scopes=scopes,
        resource=resource,
        grant_id=new_secret(ctx.random, 16),
        jti=new_secret(ctx.random, 16),
        enterprise_issuer=issuer.issuer,
    )
    yield Emit(
        event=AssertionRedeemed(
            issuer=issuer.issuer, client_id=client.client_id, subject=subject, scopes=scopes
        )
    )
    return {
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": expires_in,
        "scope": format_scope(scopes),
    }
