"""OpenID Connect ID tokens from the upstream provider: the JWK Set and the token's verification.

OIDC Core 1.0 §3.1.3.7 (ID Token Validation), RFC 7515 / RFC 7517 / RFC 7519 through joserfc, with
every claim checked explicitly (spec/style.md: ``jwt.decode`` checks only the signature):

- the signature, with the one key the header's ``kid`` names in the provider's JWK Set, under an
  algorithm the profile allows (never ``none``, never HMAC: a token "signed" with HS256 and the
  provider's *public* key must not verify, the classic algorithm-confusion attack);
- ``iss`` equal to the profile's issuer (or Entra's ``{tenantid}`` template filled with ``tid``);
- ``aud`` containing our ``client_id``; with several audiences, ``azp`` equal to it (§3.1.3.7 4-5);
- ``exp`` in the future and ``iat`` not in the future (``profile.clock_skew`` of leeway);
- ``nonce`` equal to the transaction's (§3.1.3.7 11), compared in constant time.

An unknown ``kid`` raises ``UnknownSigningKeyError`` so that the caller can fetch the JWK Set once
more (the provider rotated its keys, ``providers.jwks``) before giving up. Everything here is pure:
the JWK Set arrives as a parsed document, the clock as ``now``.
"""

from __future__ import annotations

import hmac
from typing import Any, ClassVar

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import import_key
from joserfc.jwt import JWTClaimsRegistry

from ..effects import HttpFailure, HttpRequest, HttpResponse
from ..untrusted_json import (
    UntrustedJsonError,
    check_compact_jws,
    parse_jose_segment,
    parse_json_object,
)
from ..upstream import (
    MAX_RESPONSE_BYTES,
    UpstreamProfile,
    UpstreamProtocolError,
    UpstreamUnavailableError,
    issuer_matches,
)

__all__ = [
    "IdTokenError",
    "UnknownSigningKeyError",
    "build_jwks_request",
    "parse_jwks_response",
    "verify_id_token",
]

MAX_ID_TOKEN_LENGTH = 16 * 1024
MAX_JWKS_KEYS = 64
# The key types each algorithm family may use (RFC 7518 §3.1). "oct" is never among them.
_ALG_KTY = {"RS": "RSA", "PS": "RSA", "ES": "EC"}


class IdTokenError(UpstreamProtocolError):
    """The upstream ID token is malformed, badly signed, or its claims do not hold (502)."""

    error: ClassVar[str] = "server_error"


class UnknownSigningKeyError(IdTokenError):
    """No key of the provider's JWK Set matches the ID token's ``kid`` and algorithm."""


def build_jwks_request(profile: UpstreamProfile) -> HttpRequest:
    """RFC 7517 §5: GET the provider's JWK Set (OIDC Discovery ``jwks_uri``)."""
    if profile.jwks_uri is None:
        raise ValueError(f"upstream profile {profile.name} has no jwks_uri")
    return HttpRequest(
        method="GET",
        url=profile.jwks_uri,
        headers=(("Accept", "application/json"),),
        timeout=profile.timeout,
        max_response_bytes=MAX_RESPONSE_BYTES,
    )


def parse_jwks_response(result: HttpResponse | HttpFailure) -> dict[str, Any]:
    """The JWK Set as ``{"keys": [...]}``; transient failures raise ``UpstreamUnavailableError``."""
    if isinstance(result, HttpFailure):
        raise UpstreamUnavailableError("upstream JWK Set unreachable")
    if result.status == 429 or result.status >= 500:
        raise UpstreamUnavailableError("upstream JWK Set temporarily unavailable")
    if result.status != 200 or len(result.body) > MAX_RESPONSE_BYTES:
        raise UpstreamProtocolError("upstream JWK Set answered an unexpected response")
    document = jwks_document(result.body)
    if document is None:
        raise UpstreamProtocolError("upstream JWK Set is malformed")
    return document


def jwks_document(body: bytes) -> dict[str, Any] | None:
    """RFC 7517 §5: a JSON object with a ``keys`` array of objects (bounded), else ``None``."""
    try:
        value = parse_json_object(body, max_bytes=MAX_RESPONSE_BYTES)
    except UntrustedJsonError:
        return None
    keys = value.get("keys")
    if not isinstance(keys, list) or len(keys) > MAX_JWKS_KEYS:
        return None
    if not all(isinstance(k, dict) for k in keys):
        return None
    return {"keys": keys}


def verify_id_token(
    profile: UpstreamProfile,
    id_token: str,
    jwks_document: dict[str, Any],
    *,
    now: int,
    nonce: str | None,
) -> dict[str, Any]:
    """Verify ``id_token`` (OIDC Core §3.1.3.7) and return its claims.

    ``nonce`` is the value the authorization request carried (``None``: none was sent, and then an
    ID token carrying one is still accepted). Raises ``UnknownSigningKeyError`` when no key matches
    (the caller may refetch the JWK Set once) and ``IdTokenError`` for everything else.
    """
    if profile.issuer is None:
        raise ValueError(f"upstream profile {profile.name} has no issuer")
    if not isinstance(id_token, str) or not id_token or len(id_token) > MAX_ID_TOKEN_LENGTH:
        raise IdTokenError("upstream ID token is malformed")
    header = _header(id_token)
    alg = header.get("alg")
    # §3.1.3.7 7: the alg "SHOULD be the default of RS256 or the algorithm sent by the Client in the
    # id_token_signed_response_alg parameter": we accept exactly the profile's list.
    if not isinstance(alg, str) or alg not in profile.id_token_signing_algs:
        raise IdTokenError("upstream ID token uses an algorithm the profile does not allow")
    key = _select_key(jwks_document, header.get("kid"), alg)
    try:
        # joserfc decodes the claims once the signature holds; bound them first all the same.
        check_compact_jws(
            id_token, max_header_bytes=MAX_ID_TOKEN_LENGTH, max_payload_bytes=MAX_ID_TOKEN_LENGTH
        )
        token = jwt.decode(id_token, key, algorithms=[alg])
    except (JoseError, ValueError, TypeError, KeyError):
        raise IdTokenError("upstream ID token signature does not verify") from None
    claims = token.claims
    _check_claims(profile, claims, now=now, nonce=nonce)
    return claims


def _header(id_token: str) -> dict[str, Any]:
    parts = id_token.split(".")
    if len(parts) != 3 or not all(parts):
        # A JWE (five parts) or an unsigned token (empty signature) is not a signed ID token.
        raise IdTokenError("upstream ID token is malformed")
    try:
        header = parse_jose_segment(parts[0], max_bytes=MAX_ID_TOKEN_LENGTH)
    except UntrustedJsonError:
        raise IdTokenError("upstream ID token is malformed") from None
    if header.get("crit") is not None:
        # RFC 7515 §4.1.11: we understand no extension, so a critical one must be rejected.
        raise IdTokenError("upstream ID token uses a critical header extension")
    return header


def _select_key(document: dict[str, Any], kid: object, alg: str) -> Any:
    kty = _ALG_KTY[alg[:2]]
    candidates = []
    for entry in document.get("keys", ()):
        if not isinstance(entry, dict) or entry.get("kty") != kty:
            continue  # also drops every "oct" (symmetric) key
        if entry.get("use") not in (None, "sig"):
            continue
        if entry.get("alg") not in (None, alg):
            continue
        if kid is not None and entry.get("kid") != kid:
            continue
        candidates.append(entry)
    if kid is None and len(candidates) != 1:
        # Without a kid only an unambiguous key set can name the key (RFC 7515 §4.1.4).
        raise UnknownSigningKeyError("upstream ID token names no key and the JWK Set is ambiguous")
    if not candidates:
        raise UnknownSigningKeyError("upstream ID token is signed with an unknown key")
    try:
        return import_key(candidates[0])
    except (JoseError, ValueError, TypeError, KeyError):
        raise IdTokenError("upstream JWK Set holds an unusable key") from None


def _check_claims(
    profile: UpstreamProfile, claims: dict[str, Any], *, now: int, nonce: str | None
) -> None:
    skew = profile.clock_skew
    # exp / iat are essential; joserfc checks exp (and nbf) against the injected clock.
    registry = JWTClaimsRegistry(
        now=now,
        leeway=skew,
        exp={"essential": True},
        iat={"essential": True},
        sub={"essential": True},
    )
    try:
        registry.validate(claims)
    except (JoseError, ValueError, TypeError):
        raise IdTokenError("upstream ID token is expired or lacks required claims") from None
    exp, iat = claims["exp"], claims["iat"]
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (exp, iat)):
        raise IdTokenError("upstream ID token times are malformed")
    if exp <= now - skew:  # also enforced above; stated here so the rule is visible
        raise IdTokenError("upstream ID token is expired")
    if iat > now + skew:
        raise IdTokenError("upstream ID token was issued in the future")

    iss = claims.get("iss")
    tid = claims.get("tid")
    assert profile.issuer is not None
    if not isinstance(iss, str) or not (
        issuer_matches(profile.issuer, iss, tenant_id=tid if isinstance(tid, str) else "")
        or iss in profile.id_token_issuers
    ):
        # §3.1.3.7 2: "The Issuer Identifier ... MUST exactly match the value of the iss Claim."
        raise IdTokenError("upstream ID token comes from another issuer")

    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud
    if not isinstance(audiences, list) or profile.client_id not in audiences:
        # §3.1.3.7 3: "MUST reject the ID Token if it does not list the Client as a valid audience".
        raise IdTokenError("upstream ID token is for another client")
    azp = claims.get("azp")
    if (len(audiences) > 1 or azp is not None) and azp != profile.client_id:
        raise IdTokenError("upstream ID token is for another client")

    if nonce is not None:
        got = claims.get("nonce")
        if not isinstance(got, str) or not hmac.compare_digest(
            got.encode("utf-8", "surrogatepass"), nonce.encode("utf-8", "surrogatepass")
        ):
            # §3.1.3.7 11: replay defence; the nonce binds the token to this transaction.
            raise IdTokenError("upstream ID token nonce does not match this sign-in")
