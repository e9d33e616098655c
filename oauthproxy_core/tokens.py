"""The proxy's own access tokens (RFC 9068 JWT profile) and their verification (RFC 6750).

Access tokens are JWTs with ``typ: at+jwt`` (RFC 9068 §2.1) signed by the active signing key, with
``aud`` = the canonical resource URL (RFC 8707 §2, spec/security.md 18; FastMCP CVE-2025-69196 took the
audience from the server's base URL instead). ``gid`` names the grant so that revoking the grant
revokes every access token minted from it (spec/security.md 21).

joserfc's ``jwt.decode`` checks only the signature (spec/style.md), so verification also checks ``typ``,
``iss``, ``aud``, ``exp``, ``nbf`` and ``iat`` explicitly, with the context's clock.

``own_token_claims`` reads a token the proxy has *just minted* without its signature check, with the
same claim checks: the adapters use it to put the access token of their own token response into their
verified-token cache, so that its first use costs no ES256 verification. It is never applied to a
token a client presents.

Where a verified token came from is part of its claims (``Origin``, spec/security.md 37): a token
minted from a user's grant (code or refresh), one minted from an enterprise ID-JAG (it carries
``jag_iss``, the enterprise issuer that vouched, and is honoured only while that issuer is still
configured: ``handlers/bearer.authorize_unrevoked``), or another issuer's access token
(``trusted_tokens.py``). Only the first holds a grant with a user's upstream token.
"""

from __future__ import annotations

import enum
from typing import Any

import attrs
from joserfc import jwt
from joserfc.errors import JoseError

from .config import Context
from .errors import InvalidTokenError
from .untrusted_json import UntrustedJsonError, check_compact_jws, parse_jose_segment

#: Tolerated clock skew between proxy instances (seconds).
LEEWAY = 30
#: Longest access token accepted (ours are about 600 characters; a few custom claims fit).
MAX_TOKEN_LENGTH = 8192
#: Largest JOSE header accepted (ours is ``alg``, ``typ`` and ``kid``: under 100 bytes).
MAX_HEADER_BYTES = 1024
#: The claim of an access token minted from an ID-JAG: the enterprise issuer that vouched for it.
ENTERPRISE_CLAIM = "jag_iss"


class Origin(enum.Enum):
    """Where the identity behind a verified token comes from (spec/security.md 37)."""

    #: A user's grant: the authorization code flow and its refresh family (a ``Grant`` record).
    GRANT = "grant"
    #: Minted from an enterprise issuer's ID-JAG (``handlers/id_jag.py``): no grant record.
    ENTERPRISE = "enterprise"
    #: Another issuer's access token (``[[trusted_issuers]]``, ``trusted_tokens.py``): not ours.
    TRUSTED_ISSUER = "trusted_issuer"


@attrs.frozen(kw_only=True)
class AccessClaims:
    """What a verified access token says."""

    subject: str
    client_id: str
    scopes: tuple[str, ...]
    resource: str
    grant_id: str
    expires_at: int
    issued_at: int
    jti: str
    claims: tuple[tuple[str, str], ...] = ()
    #: The groups the ``[access]`` decision saw (``groups``, a JSON array; access.py).
    groups: tuple[str, ...] = ()
    origin: Origin = Origin.GRANT
    #: The issuer that vouched: the enterprise issuer (``ENTERPRISE``) or the token's issuer
    #: (``TRUSTED_ISSUER``); ``None`` for the proxy's own grants.
    issuer: str | None = None


_RESERVED = frozenset(
    {
        "iss",
        "sub",
        "aud",
        "client_id",
        "scope",
        "iat",
        "exp",
        "jti",
        "gid",
        "nbf",
        "groups",
        ENTERPRISE_CLAIM,
    }
)


def mint_access_token(
    ctx: Context,
    *,
    subject: str,
    client_id: str,
    scopes: tuple[str, ...],
    resource: str,
    grant_id: str,
    jti: str,
    claims: tuple[tuple[str, str], ...] = (),
    groups: tuple[str, ...] = (),
    enterprise_issuer: str | None = None,
) -> tuple[str, int]:
    """Return ``(token, expires_in)``. ``enterprise_issuer``: the token is minted from that issuer's
    ID-JAG (``Origin.ENTERPRISE``); identity ``claims`` never set a reserved claim."""
    lifetime = ctx.config.lifetimes.access_token
    body: dict[str, Any] = {
        "iss": ctx.config.issuer,
        "sub": subject,
        "aud": resource,
        "client_id": client_id,
        "scope": " ".join(scopes),
        "iat": ctx.now,
        "exp": ctx.now + lifetime,
        "jti": jti,
        "gid": grant_id,
    }
    if groups:
        body["groups"] = list(groups)
    if enterprise_issuer is not None:
        body[ENTERPRISE_CLAIM] = enterprise_issuer
    for name, value in claims:
        if name not in _RESERVED:
            body.setdefault(name, value)
    key = ctx.keys.active_signing
    header = {"alg": ctx.keys.active_signing_alg, "typ": "at+jwt", "kid": key.kid}
    return jwt.encode(header, body, key), lifetime


def verify_access_token(ctx: Context, token: str, *, audience: str) -> AccessClaims:
    """Verify signature, type and claims; raise ``InvalidTokenError`` (description is generic)."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        raise InvalidTokenError("malformed token")
    try:
        # The presented header is decoded by joserfc before any signature is checked: bound it
        # (and the claims) first, as every JSON from outside is (untrusted_json).
        check_compact_jws(
            token, max_header_bytes=MAX_HEADER_BYTES, max_payload_bytes=MAX_TOKEN_LENGTH
        )
        decoded = jwt.decode(token, ctx.keys.keyset, algorithms=list(ctx.keys.algorithms))
    except (JoseError, ValueError, TypeError, KeyError):
        # Covers upstream tokens presented to us: they never verify under our keys (no passthrough).
        raise InvalidTokenError("token signature invalid") from None
    return _access_claims(ctx, decoded.header, decoded.claims, audience)


def own_token_claims(ctx: Context, token: str, *, audience: str) -> AccessClaims:
    """The claims of an access token this process minted, read WITHOUT checking its signature.

    Only for the ``access_token`` of a response the proxy's own token endpoint has just produced
    (it was signed here, moments ago). Never call it on a token someone presents: that is what
    ``verify_access_token`` is for. Raises ``InvalidTokenError`` like it.
    """
    parts = token.split(".")
    if len(parts) != 3 or len(token) > MAX_TOKEN_LENGTH:
        raise InvalidTokenError("malformed token")
    try:
        header = parse_jose_segment(parts[0], max_bytes=MAX_HEADER_BYTES)
        claims = parse_jose_segment(parts[1], max_bytes=MAX_TOKEN_LENGTH)
    except UntrustedJsonError:
        raise InvalidTokenError("malformed token") from None
    return _access_claims(ctx, header, claims, audience)


def _access_claims(
    ctx: Context, header: dict[str, Any], c: dict[str, Any], audience: str
) -> AccessClaims:
    if header.get("typ") != "at+jwt":
        raise InvalidTokenError("not an access token")
    now = ctx.now
    try:
        exp, iat = c["exp"], c["iat"]
        if not (isinstance(exp, int) and isinstance(iat, int)):
            raise InvalidTokenError("malformed token")
        if c["iss"] != ctx.config.issuer:
            raise InvalidTokenError("wrong issuer")
        if c["aud"] != audience:
            raise InvalidTokenError("token is for another resource")
        if exp <= now - LEEWAY or iat > now + LEEWAY:
            raise InvalidTokenError("token expired")
        nbf = c.get("nbf")
        if nbf is not None and (not isinstance(nbf, int) or nbf > now + LEEWAY):
            raise InvalidTokenError("token not yet valid")
        scope, sub, cid, gid, jti = c["scope"], c["sub"], c["client_id"], c["gid"], c["jti"]
        if not all(isinstance(x, str) for x in (scope, sub, cid, gid, jti)):
            raise InvalidTokenError("malformed token")
    except KeyError:
        raise InvalidTokenError("malformed token") from None
    extra = tuple((k, v) for k, v in c.items() if k not in _RESERVED and isinstance(v, str))
    raw_groups = c.get("groups", [])
    if not isinstance(raw_groups, list) or not all(isinstance(g, str) for g in raw_groups):
        raise InvalidTokenError("malformed token")
    enterprise = c.get(ENTERPRISE_CLAIM)
    if enterprise is not None and not isinstance(enterprise, str):
        raise InvalidTokenError("malformed token")
    return AccessClaims(
        subject=sub,
        client_id=cid,
        scopes=tuple(scope.split()),
        resource=audience,
        grant_id=gid,
        expires_at=exp,
        issued_at=iat,
        jti=jti,
        claims=extra,
        groups=tuple(raw_groups),
        origin=Origin.GRANT if enterprise is None else Origin.ENTERPRISE,
        issuer=enterprise,
    )
