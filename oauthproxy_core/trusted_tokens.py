"""Access tokens from trusted issuers (``[[trusted_issuers]]``), at the bearer check of the protected
resource (spec/interop.md, "Tokens from other issuers"; RFC 9068 §4, RFC 7519 §7.2, RFC 8725).

A backend that already holds a JWT from the organization's identity provider presents it directly.
``trusted_issuer_for`` picks the configured issuer the token *claims* (its unverified ``iss``; no
trusted issuer may be the proxy's issuer, and the proxy's own tokens all name it, so a token is
judged under exactly one issuer's rules and ours are never tried against another's keys), and
``verify_trusted_token`` checks it under that issuer's rules only:

- the signature, with the issuer's explicit algorithm list and JWK Set (``issuers.py``: cached,
  refetched on an unknown ``kid`` at most once per interval, fetched through the SSRF-safe fetcher);
- ``typ``: absent, ``JWT`` or ``at+jwt`` (RFC 9068 §2.1; RFC 8725 §3.11). An ID-JAG
  (``oauth-id-jag+jwt``), a DPoP proof, a logout token or any other explicitly typed JWT is not an
  access token, whatever else it says;
- ``iss`` equal to the configured issuer, ``aud`` naming the configured audience (a string, or an
  array containing it: RFC 7519 §4.1.3, RFC 9068 §4), ``exp``, ``nbf`` and ``iat`` with
  ``issuers.LEEWAY`` of skew, and a ``sub`` (a short string without control characters);
- the scopes: the value of ``scopes_claim`` (a space-separated string, or an array of strings, the two
  shapes providers use), keeping only the scopes this proxy knows (``scopes_supported``).

The result is ``AccessClaims`` with ``origin`` ``TRUSTED_ISSUER``: the subject is
``<subject_prefix>:<sub>``, the client id ``<subject_prefix>:<client_id or azp>`` (empty when the
token names none), there is no grant (``grant_id`` is empty) and so no revocation marker to consult
and no upstream token to reach (spec/security.md 37).
"""

from __future__ import annotations

from typing import Any

from .config import Context
from .effects import Handler
from .errors import InvalidTokenError
from .issuers import (
    ForeignJwt,
    ForeignTokenError,
    TrustedIssuer,
    parse_foreign_jwt,
    verify_foreign_jwt,
)
from .tokens import AccessClaims, Origin

__all__ = ["ACCESS_TOKEN_TYPES", "trusted_issuer_for", "verify_trusted_token"]

#: ``typ`` values of an access token (compared case-insensitively, with or without ``application/``,
#: RFC 7515 §4.1.9); a token without ``typ`` is accepted too, as most providers send none or ``JWT``.
ACCESS_TOKEN_TYPES = frozenset({"jwt", "at+jwt"})
MAX_SUBJECT_LENGTH = 255
MAX_SCOPES = 64
MAX_SCOPE_LENGTH = 128


def trusted_issuer_for(ctx: Context, token: str) -> tuple[TrustedIssuer, ForeignJwt] | None:
    """The configured trusted issuer ``token`` names in its ``iss``, with the parsed token, or
    ``None`` (no such issuer, or not a well-formed signed JWT)."""
    if not ctx.config.trusted_issuers:
        return None
    try:
        jwt = parse_foreign_jwt(token)
    except ForeignTokenError:
        return None
    for issuer in ctx.config.trusted_issuers:
        if jwt.issuer == issuer.issuer:
            return issuer, jwt
    return None


def _media_type(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    lowered = value.lower()
    return lowered.removeprefix("application/")


def _printable(value: object, limit: int) -> str | None:
    if not isinstance(value, str) or not value or len(value) > limit:
        return None
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        return None
    return value


def _scopes(issuer: TrustedIssuer, claims: dict[str, Any], ctx: Context) -> tuple[str, ...]:
    raw = claims.get(issuer.scopes_claim)
    if raw is None:
        return ()
    if isinstance(raw, str):
        values = raw.split(" ")
    elif isinstance(raw, list) and all(isinstance(v, str) for v in raw):
        values = raw
    else:
        raise InvalidTokenError("malformed token")
    if len(values) > MAX_SCOPES or any(len(v) > MAX_SCOPE_LENGTH for v in values):
        raise InvalidTokenError("malformed token")
    known = ctx.config.scopes_supported
    # Another issuer's vocabulary is not ours: only scopes this resource defines are forwarded.
    return tuple(dict.fromkeys(v for v in values if v in known))


def _audience_matches(aud: object, expected: str) -> bool:
    if isinstance(aud, str):
        return aud == expected
    return isinstance(aud, list) and 0 < len(aud) <= 16 and expected in aud


def verify_trusted_token(
    ctx: Context, issuer: TrustedIssuer, jwt: ForeignJwt
) -> Handler[AccessClaims]:
    """The claims of a trusted issuer's access token, or ``InvalidTokenError`` (fixed words)."""
    if (typ := jwt.header.get("typ")) is not None and _media_type(typ) not in ACCESS_TOKEN_TYPES:
        raise InvalidTokenError("not an access token")
    try:
        claims = yield from verify_foreign_jwt(
            jwt, jwks_uri=issuer.jwks_uri, algorithms=issuer.algorithms, now=ctx.now
        )
    except ForeignTokenError:
        raise InvalidTokenError("token signature invalid") from None
    if claims.get("iss") != issuer.issuer:
        raise InvalidTokenError("wrong issuer")
    if not _audience_matches(claims.get("aud"), issuer.audience):
        raise InvalidTokenError("token is for another resource")
    sub = _printable(claims.get("sub"), MAX_SUBJECT_LENGTH)
    if sub is None:
        raise InvalidTokenError("malformed token")
    client = claims.get("client_id", claims.get("azp"))
    client_id = _printable(client, MAX_SUBJECT_LENGTH)
    if client is not None and client_id is None:
        raise InvalidTokenError("malformed token")
    jti = claims.get("jti")
    iat = claims.get("iat")
    return AccessClaims(
        subject=f"{issuer.subject_prefix}:{sub}",
        client_id=f"{issuer.subject_prefix}:{client_id}" if client_id else "",
        scopes=_scopes(issuer, claims, ctx),
        resource=issuer.resource or ctx.config.resource,
        grant_id="",
        expires_at=claims["exp"],
        issued_at=iat if isinstance(iat, int) else ctx.now,
        jti=jti if isinstance(jti, str) else "",
        origin=Origin.TRUSTED_ISSUER,
        issuer=issuer.issuer,
    )
