"""Issuers of JWTs the proxy accepts besides its own: their configuration, their keys, their signatures.

Two tables of ``proxy.toml`` name them (spec/interop.md, "Tokens from other issuers"):

- ``[[trusted_issuers]]`` (``TrustedIssuer``): an identity provider whose *access tokens* the bearer
  check accepts for the protected resource (``trusted_tokens.py``);
- ``[[enterprise_issuers]]`` (``EnterpriseIssuer``): an enterprise identity provider whose Identity
  Assertion JWT Authorization Grants (ID-JAGs) the token endpoint redeems for an access token of ours
  (``handlers/id_jag.py``; draft-ietf-oauth-identity-assertion-authz-grant, MCP extension
  ``io.modelcontextprotocol/enterprise-managed-authorization``).

What both need is here:

- **Their JWK Set**, fetched only through the SSRF-safe fetcher (the ``FetchDocument`` effect with
  purpose ``jwks``, spec/security.md 23), cached in the store (kind ``jwks``, keyed by the digest of
  ``"issuer|" + jwks_uri``, so every instance shares one copy) for the response's ``max-age`` clamped
  to [60 s, 1 h] (5 min without one), and kept a day longer for when the issuer cannot be reached
  (RFC 9111 §4.2.4 lets a cache serve a stale response then). A token whose ``kid`` the set does not
  know causes one refetch (the issuer rotated its keys; OIDC Core §10.1.1 asks the same of relying
  parties), but at most once per ``REFETCH_INTERVAL`` per JWK Set across all instances: a
  create-if-absent marker (kind ``jwks-refetch``) decides which request may fetch, so tokens made up
  with random ``kid`` values cost a store write each, never a flood of fetches at the issuer.
- **The signature**, checked with the configured algorithm list only (RFC 8725 §3.1: never ``none``,
  never an HMAC, never the algorithm the header merely names; the key type must fit the algorithm, so
  a token "signed" with HS256 and a public RSA key cannot verify), the key chosen by ``kid`` (without
  a ``kid``, only when exactly one key fits), no ``crit`` header we would have to understand (RFC 7515
  §4.1.11), every segment bounded before it is decoded (``untrusted_json``, spec/security.md 29).
- **Times**: ``exp`` required, ``nbf`` and ``iat`` honoured, each with ``LEEWAY`` seconds of skew
  (RFC 7519 §4.1.4, §4.1.5; RFC 7523 §3 items 4 to 6).

Claims other than the times are the callers' to check, since what they mean differs: an access token
is for an audience (RFC 9068 §4), an ID-JAG for an authorization server and a client.
"""

from __future__ import annotations

import binascii
import functools
import json
import re
from collections.abc import Iterable
from typing import Any

import attrs
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OKPKey, RSAKey
from joserfc.jws import JWSRegistry

from . import persistence
from .cimd import FETCH_TIMEOUT, JWKS, MAX_DOCUMENT_BYTES, PRIVATE_JWK_MEMBERS, freshness
from .crypto import b64u_decode, digest
from .effects import CompareAndSet, FetchDocument, Handler, HttpFailure, HttpResponse
from .untrusted_json import UntrustedJsonError, parse_jose_segment, parse_json_object
from .url_policy import provider_url_problem

__all__ = [
    "ALGORITHMS",
    "DEFAULT_ALGORITHMS",
    "LEEWAY",
    "MAX_TOKEN_LENGTH",
    "REFETCH_INTERVAL",
    "EnterpriseIssuer",
    "ForeignJwt",
    "ForeignTokenError",
    "KeysUnavailableError",
    "TrustedIssuer",
    "UnknownKeyError",
    "check_times",
    "issuer_url_problem",
    "parse_foreign_jwt",
    "subject_prefix_problem",
    "verify_foreign_jwt",
]

#: The signature algorithms an issuer may be configured with, and the key each needs: key type and
#: curve (RFC 7518 §3.1, RFC 8037 §3.1; ``EdDSA`` is RFC 8037's name for Ed25519, ``Ed25519`` the
#: fully specified one of RFC 9864). No ``HS*`` (a secret shared with the issuer) and no ``none``.
ALGORITHMS: dict[str, tuple[str, str | None]] = {
    "RS256": ("RSA", None),
    "RS384": ("RSA", None),
    "RS512": ("RSA", None),
    "PS256": ("RSA", None),
    "PS384": ("RSA", None),
    "PS512": ("RSA", None),
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "ES512": ("EC", "P-521"),
    "EdDSA": ("OKP", "Ed25519"),
    "Ed25519": ("OKP", "Ed25519"),
}
#: What most identity providers sign with (Entra, Okta, Auth0, Keycloak, Google: RS256).
DEFAULT_ALGORITHMS = ("RS256", "ES256")
#: Tolerated clock skew between the issuer and us (seconds).
LEEWAY = 30
#: Longest token accepted: an access token or ID-JAG with a few dozen claims fits.
MAX_TOKEN_LENGTH = 16 * 1024
MAX_HEADER_BYTES = 2048
#: An unknown ``kid`` refetches an issuer's JWK Set at most this often (seconds), across instances.
REFETCH_INTERVAL = 60
#: A fetched JWK Set is fresh for its ``max-age`` clamped to [60 s, this]; keys an issuer withdraws
#: stop verifying within this bound.
MAX_KEYS_FRESH = 3600
#: Kept this long after it went stale, for when the issuer cannot be reached.
STALE_KEEP = 24 * 3600
MAX_KEYS = 64
_MIN_RSA_BITS = 2048
_KEYS_KIND = "jwks"
_REFETCH_KIND = "jwks-refetch"
_REGISTRY = JWSRegistry()
_LOADERS: dict[str, Any] = {"EC": ECKey, "RSA": RSAKey, "OKP": OKPKey}
#: ``corp``, ``acme-idp``: what goes before the ``:`` of the subjects an issuer's tokens name.
_PREFIX = re.compile(r"[a-z0-9][a-z0-9._-]{0,31}")
_CLAIM_NAME = re.compile(r"[A-Za-z0-9_.:/-]{1,64}")


class ForeignTokenError(Exception):
    """A token from another issuer does not verify. The message is fixed words, never token text."""


class UnknownKeyError(ForeignTokenError):
    """No key of the issuer's JWK Set fits the token's ``kid`` and algorithm."""


class KeysUnavailableError(ForeignTokenError):
    """The issuer's JWK Set could not be had, fresh or stale."""


# --------------------------------------------------------------------------------------------------
# Configuration


def issuer_url_problem(value: object) -> str | None:
    """``None`` if ``value`` may name another issuer, else the rule it breaks.

    The issuer is compared with ``iss`` as a plain string (RFC 7519 §4.1.1, RFC 8414 §2), but must
    still be a URL an operator meant: https, or http on a loopback host; no query, fragment or
    userinfo. A trailing slash is kept: many providers' issuers end with one.
    """
    problem = provider_url_problem(value)
    if problem is None and isinstance(value, str) and "?" in value:
        problem = "must not have a query"
    return problem


def subject_prefix_problem(value: object) -> str | None:
    """``None`` if ``value`` may be a ``subject_prefix``, else the rule it breaks."""
    if isinstance(value, str) and _PREFIX.fullmatch(value):
        return None
    return "must be 1 to 32 of a-z, 0-9, '.', '_', '-' (starting with a letter or digit)"


def _issuer_url(_inst: object, attribute: attrs.Attribute[str], value: str) -> None:
    problem = issuer_url_problem(value)
    if problem is not None:
        raise ValueError(f"{attribute.name} {problem}")


def _prefix(_inst: object, attribute: attrs.Attribute[str], value: str) -> None:
    problem = subject_prefix_problem(value)
    if problem is not None:
        raise ValueError(f"{attribute.name} {problem}")


def _algorithms(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(value))


def _check_algorithms(
    _inst: object, attribute: attrs.Attribute[Any], value: tuple[str, ...]
) -> None:
    unknown = [a for a in value if a not in ALGORITHMS]
    if not value or unknown:
        raise ValueError(f"{attribute.name} must be a non-empty list of {', '.join(ALGORITHMS)}")


def _nonempty_text(_inst: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value or any(ord(c) < 0x21 for c in value):
        raise ValueError(f"{attribute.name} must be a non-empty string without spaces")


def _claim_name(_inst: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not _CLAIM_NAME.fullmatch(value):
        raise ValueError(f"{attribute.name} must be a claim name")


def _client_ids(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(value))


def _check_client_ids(
    _inst: object, attribute: attrs.Attribute[Any], value: tuple[str, ...]
) -> None:
    if not value or not all(isinstance(c, str) and c for c in value):
        raise ValueError(f"{attribute.name} must name at least one pre-registered client")


@attrs.frozen(kw_only=True)
class TrustedIssuer:
    """``[[trusted_issuers]]``: an identity provider whose access tokens the bearer check accepts.

    A token it signed is accepted for the protected resource when its ``iss`` is ``issuer``, its
    ``aud`` names ``audience``, it is in date, and its signature verifies with a key of ``jwks_uri``
    under one of ``algorithms``. The MCP server then sees ``<subject_prefix>:<sub>``, the scopes of
    ``scopes_claim`` that the proxy knows, and a client id ``<subject_prefix>:<client_id>`` (or
    ``azp``) when the token names one. Such a principal has no grant of ours: it never reaches the
    user's upstream token (spec/security.md 37).
    """

    issuer: str = attrs.field(validator=_issuer_url)
    jwks_uri: str = attrs.field(validator=_nonempty_text)
    #: The ``aud`` value the tokens must carry: the protected resource's URL unless configured.
    audience: str = attrs.field(validator=_nonempty_text)
    subject_prefix: str = attrs.field(validator=_prefix)
    scopes_claim: str = attrs.field(default="scope", validator=_claim_name)
    algorithms: tuple[str, ...] = attrs.field(
        default=DEFAULT_ALGORITHMS, converter=_algorithms, validator=_check_algorithms
    )
    #: The canonical protected resource its tokens are accepted at, and refused by every other
    #: (spec/security.md 40); empty: the default resource.
    resource: str = ""


@attrs.frozen(kw_only=True)
class EnterpriseIssuer:
    """``[[enterprise_issuers]]``: an enterprise identity provider whose ID-JAGs the token endpoint
    redeems (grant type ``urn:ietf:params:oauth:grant-type:jwt-bearer``).

    Only the pre-registered confidential clients in ``clients`` may present its assertions, each only
    an assertion made out to itself (``client_id`` claim). The access token minted names the subject
    ``<subject_prefix>:<sub>``.
    """

    issuer: str = attrs.field(validator=_issuer_url)
    jwks_uri: str = attrs.field(validator=_nonempty_text)
    subject_prefix: str = attrs.field(validator=_prefix)
    clients: tuple[str, ...] = attrs.field(converter=_client_ids, validator=_check_client_ids)
    algorithms: tuple[str, ...] = attrs.field(
        default=DEFAULT_ALGORITHMS, converter=_algorithms, validator=_check_algorithms
    )


# --------------------------------------------------------------------------------------------------
# Parsing


@attrs.frozen(kw_only=True)
class ForeignJwt:
    """A compact JWS split and its header and claims decoded, nothing verified yet."""

    token: str = attrs.field(repr=False)
    header: dict[str, Any] = attrs.field(repr=False)
    claims: dict[str, Any] = attrs.field(repr=False)

    @property
    def issuer(self) -> str | None:
        """The ``iss`` the token claims (unverified: only to choose which issuer's keys to try)."""
        iss = self.claims.get("iss")
        return iss if isinstance(iss, str) else None


def parse_foreign_jwt(token: str) -> ForeignJwt:
    """Split and decode ``token`` under the size and depth bounds. Raises ``ForeignTokenError``.

    A JWE (five segments) or an unsecured JWT (empty signature, RFC 7519 §6) is not a signed token.
    """
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
        raise ForeignTokenError("malformed token")
    parts = token.split(".")
    if len(parts) != 3 or not all(parts):
        raise ForeignTokenError("malformed token")
    try:
        header = parse_jose_segment(parts[0], max_bytes=MAX_HEADER_BYTES)
        claims = parse_jose_segment(parts[1], max_bytes=MAX_TOKEN_LENGTH)
    except UntrustedJsonError:
        raise ForeignTokenError("malformed token") from None
    return ForeignJwt(token=token, header=header, claims=claims)


# --------------------------------------------------------------------------------------------------
# Keys


def _cache_key(jwks_uri: str) -> str:
    return digest("issuer|" + jwks_uri)


def _keys_of(document: dict[str, Any]) -> list[dict[str, Any]] | None:
    keys = document.get("keys")
    if not isinstance(keys, list) or len(keys) > MAX_KEYS:
        return None
    # Only the public members are ever used: a private or symmetric member is dropped, not trusted.
    return [
        {k: v for k, v in key.items() if k not in PRIVATE_JWK_MEMBERS}
        for key in keys
        if isinstance(key, dict)
    ]


def _cached(raw: bytes | None) -> tuple[list[dict[str, Any]], int] | None:
    """``(keys, fresh_until)`` of the proxy's own cache record, or ``None``."""
    if raw is None:
        return None
    try:
        entry = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get("fresh_until"), int):
        return None
    keys = entry.get("keys")
    if not isinstance(keys, list) or not all(isinstance(k, dict) for k in keys):
        return None
    return keys, entry["fresh_until"]


def _fetch(jwks_uri: str, *, now: int) -> Handler[list[dict[str, Any]] | None]:
    """GET the JWK Set through the safe fetcher and cache it; ``None`` when it cannot be had."""
    result = yield FetchDocument(
        url=jwks_uri, purpose=JWKS, timeout=FETCH_TIMEOUT, max_bytes=MAX_DOCUMENT_BYTES
    )
    if isinstance(result, HttpFailure) or not isinstance(result, HttpResponse):
        return None
    if result.status != 200 or len(result.body) > MAX_DOCUMENT_BYTES:
        return None
    try:
        keys = _keys_of(parse_json_object(result.body, max_bytes=MAX_DOCUMENT_BYTES))
    except UntrustedJsonError:
        return None
    if keys is None:
        return None
    ttl = min(freshness(result.header("cache-control")), MAX_KEYS_FRESH)
    entry = {"v": 1, "keys": keys, "fresh_until": now + ttl}
    value = json.dumps(entry, separators=(",", ":"), sort_keys=True).encode()
    yield from persistence.put_raw(_KEYS_KIND, _cache_key(jwks_uri), value, ttl + STALE_KEEP)
    return keys


def _current_keys(jwks_uri: str, *, now: int) -> Handler[tuple[list[dict[str, Any]], bool]]:
    """``(keys, fetched_now)``: the cached set while fresh, else a new fetch, else the stale copy."""
    cached = _cached((yield from persistence.get_raw(_KEYS_KIND, _cache_key(jwks_uri))))
    if cached is not None and cached[1] > now:
        return cached[0], False
    fetched = yield from _fetch(jwks_uri, now=now)
    if fetched is not None:
        return fetched, True
    if cached is not None:
        return cached[0], False
    raise KeysUnavailableError("the issuer's keys are unavailable")


def _may_refetch(jwks_uri: str) -> Handler[bool]:
    """Whether this request is the one allowed to refetch the set in this interval."""
    first = yield CompareAndSet(
        kind=_REFETCH_KIND,
        key=_cache_key(jwks_uri),
        expected_version=0,
        value=b"",
        ttl=REFETCH_INTERVAL,
    )
    return bool(first)


# --------------------------------------------------------------------------------------------------
# Signatures


def _select_keys(keys: list[dict[str, Any]], kid: object, alg: str) -> list[dict[str, Any]]:
    kty, crv = ALGORITHMS[alg]
    fitting = []
    for jwk in keys:
        if jwk.get("kty") != kty or (crv is not None and jwk.get("crv") != crv):
            continue  # also every "oct" key: no HMAC with a public key (RFC 8725 §2.1)
        if jwk.get("use", "sig") != "sig" or jwk.get("alg", alg) != alg:
            continue
        if kid is not None and jwk.get("kid") != kid:
            continue
        fitting.append(jwk)
    if not fitting or (kid is None and len(fitting) != 1):
        # Without a kid, only an unambiguous set names the key (RFC 7515 §4.1.4).
        raise UnknownKeyError("the token is signed with an unknown key")
    return fitting


@functools.lru_cache(maxsize=MAX_KEYS)
def _imported(kty: str, jwk_json: str) -> Any:
    """The key object of a public JWK (its canonical JSON), or ``None`` when it is unusable.

    Memoised: importing an EC or RSA key costs about as much as verifying a signature with it, and
    an issuer signs every token with one of a handful of keys. Pure: same JWK, same key.
    """
    try:
        key = _LOADERS[kty].import_key(json.loads(jwk_json))
        if kty == "RSA" and key.raw_value.key_size < _MIN_RSA_BITS:
            return None
    except (JoseError, ValueError, TypeError, KeyError, AttributeError):
        return None
    return key


def _signature_holds(jwt: ForeignJwt, alg: str, keys: list[dict[str, Any]]) -> bool:
    head, body, sig = jwt.token.split(".")
    signing_input = f"{head}.{body}".encode("ascii", "replace")
    try:
        signature = b64u_decode(sig)
    except (ValueError, binascii.Error):
        raise ForeignTokenError("malformed token") from None
    model = _REGISTRY.algorithms["Ed25519" if alg == "EdDSA" else alg]
    kty = ALGORITHMS[alg][0]
    for jwk in _select_keys(keys, jwt.header.get("kid"), alg):
        key = _imported(kty, json.dumps(jwk, sort_keys=True, separators=(",", ":")))
        if key is None:
            continue
        try:
            if model.verify(signing_input, signature, key):
                return True
        except (JoseError, ValueError, TypeError, KeyError, AttributeError):
            continue
    return False


def _check_header(jwt: ForeignJwt, algorithms: tuple[str, ...]) -> str:
    alg = jwt.header.get("alg")
    # RFC 8725 §3.1: the configured list decides, never the header; "none" and HS* are never listed.
    if not isinstance(alg, str) or alg not in algorithms:
        raise ForeignTokenError("the token's algorithm is not accepted for its issuer")
    if "crit" in jwt.header:
        raise ForeignTokenError("the token uses a critical header extension")
    return alg


def verify_foreign_jwt(
    jwt: ForeignJwt, *, jwks_uri: str, algorithms: tuple[str, ...], now: int
) -> Handler[dict[str, Any]]:
    """The claims of ``jwt`` once its signature verifies with the issuer's keys, and its times hold.

    The keys come from the cache or a fetch; a ``kid`` the set does not know refetches it once (at
    most once per ``REFETCH_INTERVAL`` across instances, and never twice in one call). Raises
    ``ForeignTokenError`` (``UnknownKeyError``, ``KeysUnavailableError``).
    """
    alg = _check_header(jwt, algorithms)
    keys, fetched_now = yield from _current_keys(jwks_uri, now=now)
    try:
        verified = _signature_holds(jwt, alg, keys)
    except UnknownKeyError:
        if fetched_now or not (yield from _may_refetch(jwks_uri)):
            raise
        refetched = yield from _fetch(jwks_uri, now=now)
        if refetched is None:
            raise
        verified = _signature_holds(jwt, alg, refetched)
    if not verified:
        raise ForeignTokenError("the token's signature does not verify")
    check_times(jwt.claims, now=now)
    return jwt.claims


def _numeric_date(value: object) -> bool:
    # RFC 7519 §2 NumericDate: a JSON number; integers here (fractions are legal but nobody sends them
    # in these tokens, and a bool is not a number).
    return isinstance(value, int) and not isinstance(value, bool)


def check_times(claims: dict[str, Any], *, now: int, require_iat: bool = False) -> int:
    """``exp`` (required), ``nbf`` and ``iat`` against ``now`` with ``LEEWAY``; returns ``exp``."""
    exp = claims.get("exp")
    if not _numeric_date(exp):
        raise ForeignTokenError("the token has no valid exp")
    assert isinstance(exp, int)
    if exp <= now - LEEWAY:
        raise ForeignTokenError("the token has expired")
    nbf = claims.get("nbf")
    if nbf is not None and (not _numeric_date(nbf) or nbf > now + LEEWAY):
        raise ForeignTokenError("the token is not valid yet")
    iat = claims.get("iat")
    if iat is None and require_iat:
        raise ForeignTokenError("the token has no iat")
    if iat is not None and (not _numeric_date(iat) or iat > now + LEEWAY):
        raise ForeignTokenError("the token was issued in the future")
    return exp
