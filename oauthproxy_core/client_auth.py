"""Client authentication at the token and revocation endpoints (RFC 6749 §2.3, OAuth 2.1 §2.4).

A client authenticates only by the method it registered (spec/security.md 22): ``none`` (public client,
``client_id`` in the body), ``client_secret_post`` or ``client_secret_basic`` (RFC 6749 §2.3.1, with
the form-urlencoding of id and secret undone before comparison), or ``private_key_jwt`` (RFC 7523
§2.2 and §3, OpenID Connect Core §9, with the audience rule of draft-ietf-oauth-rfc7523bis: the
issuer identifier as a plain string, nothing else) for clients whose metadata document publishes
keys. Clients come from ``client_lookup.admitted_client`` (static, CIMD or registered; a client the
``[clients]`` admission policy refuses is ``invalid_client`` naming why). A failure raises
``InvalidClientError`` (401) before anything else is read or written, so it consumes nothing; the one
write of a successful assertion is its ``jti``, recorded last so that a replay fails.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any
from urllib.parse import unquote_plus

from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OKPKey, RSAKey
from joserfc.jws import JWSRegistry

from .cimd import JWKS, MAX_DOCUMENT_BYTES, fetch_document
from .client_lookup import admitted_client
from .config import Context
from .crypto import b64u_decode, digest, equal
from .effects import CompareAndSet, Handler
from .errors import InvalidClientError, InvalidRequestError
from .http import Request
from .records import Client
from .untrusted_json import UntrustedJsonError, parse_jose_segment, parse_json

#: RFC 7523 §2.2.
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: Accepted signature algorithms and the key each needs (``EdDSA`` is RFC 8037's name, ``Ed25519``
#: the fully specified one of RFC 9864). No ``HS*`` (a shared secret) and no ``none``.
ASSERTION_ALGS: dict[str, tuple[str, str | None]] = {
    "ES256": ("EC", "P-256"),
    "RS256": ("RSA", None),
    "EdDSA": ("OKP", "Ed25519"),
    "Ed25519": ("OKP", "Ed25519"),
}
#: RFC 7523 §3 leaves the lifetime to the server: at most five minutes, with this clock skew.
MAX_ASSERTION_LIFETIME = 300
ASSERTION_LEEWAY = 30
MAX_ASSERTION_LENGTH = 8192
_MIN_RSA_BITS = 2048
_REGISTRY = JWSRegistry()
_LOADERS: dict[str, Any] = {"EC": ECKey, "RSA": RSAKey, "OKP": OKPKey}


def _basic_credentials(header: str) -> tuple[str, str] | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidClientError("malformed Basic credentials") from None
    cid, sep, secret = decoded.partition(":")
    if not sep:
        raise InvalidClientError("malformed Basic credentials")
    return unquote_plus(cid), unquote_plus(secret)


def authenticate_client(req: Request, form: dict[str, str], ctx: Context) -> Handler[Client]:
    header = req.header("authorization")
    basic = _basic_credentials(header) if header else None
    body_id, body_secret = form.get("client_id"), form.get("client_secret")
    if "client_assertion" in form or "client_assertion_type" in form:
        if basic is not None or body_secret is not None:
            raise InvalidRequestError("use one client authentication method")
        return (yield from _authenticate_assertion(form, ctx))
    secret: str | None
    if basic is not None:
        if body_secret is not None:
            raise InvalidRequestError("use one client authentication method")
        if body_id is not None and body_id != basic[0]:
            raise InvalidClientError("client_id does not match the credentials")
        client_id, secret, method = basic[0], basic[1], "client_secret_basic"
    elif body_id:
        client_id, secret = body_id, body_secret
        method = "client_secret_post" if body_secret is not None else "none"
    else:
        raise InvalidClientError("client authentication required")
    client = yield from admitted_client(client_id, ctx)
    if client is None or client.state != "active":
        raise InvalidClientError("unknown client")
    if method != client.token_endpoint_auth_method:
        raise InvalidClientError("client authentication method not allowed for this client")
    if method != "none" and (
        client.secret_hash is None
        or secret is None
        or not equal(digest(secret), client.secret_hash)
    ):
        raise InvalidClientError("client authentication failed")
    return client


# --------------------------------------------------------------------------------------------------
# private_key_jwt (RFC 7523 §2.2, §3)


def _segment_json(segment: str) -> dict[str, Any]:
    # Bounded before decoding (untrusted_json): a header nested a few thousand levels deep used to
    # raise RecursionError here, a 500 at /token and /revoke.
    try:
        return parse_jose_segment(segment, max_bytes=MAX_ASSERTION_LENGTH)
    except UntrustedJsonError:
        raise InvalidClientError("malformed client assertion") from None


def _authenticate_assertion(form: dict[str, str], ctx: Context) -> Handler[Client]:
    if form.get("client_assertion_type") != ASSERTION_TYPE:
        raise InvalidClientError("unsupported client_assertion_type")
    assertion = form.get("client_assertion") or ""
    parts = assertion.split(".")
    if len(assertion) > MAX_ASSERTION_LENGTH or len(parts) != 3 or not all(parts):
        raise InvalidClientError("malformed client assertion")
    header, claims = _segment_json(parts[0]), _segment_json(parts[1])
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in ASSERTION_ALGS:
        raise InvalidClientError("client assertion algorithm not accepted")
    if "crit" in header:
        raise InvalidClientError("client assertion uses unsupported critical headers")
    # RFC 7523 §3: iss and sub are the client_id; a client_id in the body must agree (RFC 7521 §4.2).
    client_id = claims.get("iss")
    if not isinstance(client_id, str) or not client_id or claims.get("sub") != client_id:
        raise InvalidClientError("client assertion iss and sub must be the client_id")
    if form.get("client_id") not in (None, client_id):
        raise InvalidClientError("client_id does not match the assertion")
    client = yield from admitted_client(client_id, ctx)
    if client is None or client.token_endpoint_auth_method != "private_key_jwt":
        raise InvalidClientError("client authentication method not allowed for this client")
    keys = yield from _client_keys(client, ctx)
    signing_input = f"{parts[0]}.{parts[1]}".encode("ascii", "replace")
    try:
        signature = b64u_decode(parts[2])
    except (ValueError, binascii.Error):
        raise InvalidClientError("malformed client assertion") from None
    if not _verify(alg, header.get("kid"), keys, signing_input, signature):
        raise InvalidClientError("client assertion signature invalid")
    exp = _check_claims(claims, ctx)
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti or len(jti) > 256:
        raise InvalidClientError("client assertion needs a jti")
    # RFC 7523 §3 item 7: the server "MAY ensure that JWTs are not replayed by maintaining the set of
    # used jti values for the length of time for which the JWT would be considered valid".
    fresh = yield CompareAndSet(
        kind="jti",
        key=digest(client_id + "\x1f" + jti),
        expected_version=0,
        value=b"",
        ttl=max(exp - ctx.now + ASSERTION_LEEWAY, 1),
    )
    if not fresh:
        raise InvalidClientError("client assertion was already used")
    return client


def _client_keys(client: Client, ctx: Context) -> Handler[list[dict[str, Any]]]:
    meta = dict(client.metadata)
    jwks: Any = None
    try:
        if "jwks" in meta:
            jwks = parse_json(meta["jwks"], max_bytes=MAX_DOCUMENT_BYTES)
        elif "jwks_uri" in meta:
            uri = parse_json(meta["jwks_uri"], max_bytes=MAX_DOCUMENT_BYTES)
            if isinstance(uri, str):
                jwks = yield from fetch_document(
                    uri,
                    now=ctx.now,
                    purpose=JWKS,
                    bounds=ctx.config.bounds,
                    source=ctx.source,
                )
    except UntrustedJsonError:
        jwks = None
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
        raise InvalidClientError("the client's keys are unavailable")
    return [k for k in jwks["keys"][:10] if isinstance(k, dict)]


def _verify(
    alg: str, kid: Any, keys: list[dict[str, Any]], signing_input: bytes, signature: bytes
) -> bool:
    kty, crv = ASSERTION_ALGS[alg]
    if kid is not None:
        keys = [k for k in keys if k.get("kid") == kid]
        if not keys:
            raise InvalidClientError("client assertion names an unknown key")
    model = _REGISTRY.algorithms["Ed25519" if alg == "EdDSA" else alg]
    for jwk in keys:
        if jwk.get("kty") != kty or (crv is not None and jwk.get("crv") != crv):
            continue
        if jwk.get("use", "sig") != "sig" or jwk.get("alg", alg) != alg:
            continue
        public = {k: v for k, v in jwk.items() if k not in ("d", "p", "q", "dp", "dq", "qi", "k")}
        try:
            key = _LOADERS[kty].import_key(public)
            if kty == "RSA" and key.raw_value.key_size < _MIN_RSA_BITS:
                continue
            if model.verify(signing_input, signature, key):
                return True
        except (JoseError, ValueError, TypeError, KeyError, AttributeError):
            continue
    return False


def _check_claims(claims: dict[str, Any], ctx: Context) -> int:
    now, skew = ctx.now, ASSERTION_LEEWAY
    # draft-ietf-oauth-rfc7523bis (updating RFC 7523 §3 item 3): the audience is the authorization
    # server's issuer identifier as its sole value, a JSON string "and not a single-valued JSON
    # array", and the token endpoint URL "MUST NOT be used". RFC 7523 let servers also accept the
    # token endpoint URL and arrays naming other parties; the 2025 audience-injection disclosure
    # showed an assertion made out to one server being replayed at another that accepted a URL or
    # an array entry it shared. Simple string comparison (RFC 3986 §6.2.1): no normalising.
    if claims.get("aud") != ctx.config.issuer:
        raise InvalidClientError("client assertion audience must be this server's issuer")
    exp = claims.get("exp")
    if not isinstance(exp, int) or isinstance(exp, bool):
        raise InvalidClientError("client assertion needs exp")
    if exp <= now - skew:
        raise InvalidClientError("client assertion expired")
    iat = claims.get("iat")
    if iat is not None:
        if not isinstance(iat, int) or isinstance(iat, bool) or iat > now + skew:
            raise InvalidClientError("client assertion iat invalid")
        if exp - iat > MAX_ASSERTION_LIFETIME:
            raise InvalidClientError("client assertion lifetime too long")
    if exp - now > MAX_ASSERTION_LIFETIME + skew:
        raise InvalidClientError("client assertion lifetime too long")
    nbf = claims.get("nbf")
    if nbf is not None and (not isinstance(nbf, int) or nbf > now + skew):
        raise InvalidClientError("client assertion not yet valid")
    return exp
