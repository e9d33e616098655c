"""The upstream side: the proxy as one pre-registered confidential client of an identity provider.

Toward the upstream provider (GitHub, Google, Entra, any OAuth 2.0 / OIDC server) the proxy is an
ordinary authorization-code client with one fixed redirect URI and its own PKCE (spec/architecture.md,
"the problem in one paragraph"). This module describes a provider as data (``UpstreamProfile``)
and turns that description into HTTP requests and back, without doing any I/O: builders return
URLs or ``effects.HttpRequest`` values, parsers take ``effects.HttpResponse | effects.HttpFailure``.

Specifications followed:

- RFC 6749 §4.1 (authorization code grant): §4.1.1 the authorization request, §4.1.3 the token
  request, §2.3.1 client password authentication (form-urlencoding before HTTP Basic).
- RFC 6749 §5.1 / §5.2: successful and error token responses; §6: refreshing an access token.
- RFC 7636: PKCE, ``S256`` only.
- RFC 9207: the ``iss`` authorization response parameter, checked against the expected issuer
  (§2.4) to defeat mix-up attacks.
- OpenID Connect Core 1.0 §5.3: the UserInfo endpoint, read as a JSON object with a stable subject.
- OpenID Connect Core 1.0 §5.1 and §5.7: ``sub`` is the only claim that identifies the user ("a
  locally unique and never reassigned identifier"); ``email``, ``preferred_username`` and ``name``
  may change and may be reused, and ``email_verified`` says whether the provider vouches for the
  address.
- RFC 8707: ``resource`` is forwarded upstream only when the profile opts in (spec/interop.md: many
  providers reject unknown resources with ``invalid_target``).

Identity, spec/security.md 32 ("only claims the provider vouches for become identity"): the subject
(``<provider>:<immutable upstream id>``) is the identity; every other claim is display data. An
``email`` is kept only when the provider vouches for it: the profile's ``email_verified_claim`` is
``true`` in the same document (OIDC ``email_verified``; Entra ``xms_edov``; ``email_vouched`` says
which values count), or, for GitHub, it is the primary and verified address of ``GET
/user/emails`` (``verified_email_url``). Otherwise it is dropped: never forwarded, never put in a
token, so no access rule can match it. The incident is "nOAuth" (Descope, 2023): applications
keyed accounts on Entra's ``email``, which any tenant's administrator can set to any address. For
the same reason mutable claims (``MUTABLE_CLAIMS``) are refused as the subject and as ``login``,
and an ``email`` is kept exactly or not at all (never truncated or stripped into another address).

Provider quirks handled here (spec/interop.md, "Upstream providers: the quirks"): GitHub answers
form-encoded unless asked for JSON, reports failures as HTTP 200 with an ``error`` field, sends no
``expires_in`` for OAuth Apps, separates granted scopes with commas, identifies users by a
numeric ``id`` and reports the token's granted scopes in the ``X-OAuth-Scopes`` header of
``GET /user`` (``scopes_header``); GitHub Apps add ``refresh_token_expires_in``. Entra ID needs
custom-API scopes prefixed with the application ID URI (``scope_prefix``, removed again from the
scopes it returns) and, for multi-tenant apps, an issuer template (``{tenantid}``). The per-provider
factories live in ``oauthproxy_core.providers``; ID token verification (OIDC Core §3.1.3.7) in
``oauthproxy_core.providers.id_token``.

The OIDC ``nonce`` (OIDC Core §3.1.2.1) is not stored: it is derived from the upstream ``state``
(``nonce_for_state``: base64url(SHA-256("nonce|" + state))). The state is 256 random bits known
only to this transaction's browser and the proxy, the callback receives it back, and SHA-256 is one
way, so the nonce is unguessable, unique per transaction, and an ID token carrying it cannot be
replayed into another transaction; the state cannot be recovered from an ID token that leaks.

Every exception raised by a parser is an ``UpstreamError``, itself an ``errors.OAuthError``. Their
descriptions are our own fixed words: upstream text (``error_description``, unknown error codes,
body fragments) is never copied into them, and neither is any secret.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import unicodedata
from collections.abc import Iterable
from typing import Any, ClassVar
from urllib.parse import parse_qsl, quote, quote_plus, urlencode, urlsplit, urlunsplit

import attrs

from .effects import HttpFailure, HttpRequest, HttpResponse
from .errors import (
    InvalidGrantError,
    InvalidRequestError,
    OAuthError,
    ServerError,
    TemporarilyUnavailableError,
)
from .untrusted_json import UntrustedJsonError, parse_json, parse_json_object
from .url_policy import provider_url_problem

__all__ = [
    "MAX_RESPONSE_BYTES",
    "MUTABLE_CLAIMS",
    "TOKEN_AUTH_METHODS",
    "UpstreamDeniedError",
    "UpstreamError",
    "UpstreamIdentity",
    "UpstreamMixUpError",
    "UpstreamProfile",
    "UpstreamProtocolError",
    "UpstreamTokens",
    "UpstreamUnavailableError",
    "OIDC_SCOPES",
    "build_authorize_url",
    "build_refresh_request",
    "build_token_request",
    "build_userinfo_request",
    "build_verified_email_request",
    "check_callback_issuer",
    "email_vouched",
    "identity_from_claims",
    "issuer_matches",
    "nonce_for_state",
    "parse_identity",
    "parse_token_response",
    "parse_verified_email",
    "requested_scopes",
    "unprefix_scopes",
    "wants_verified_email",
    "with_verified_email",
]

#: Upstream bodies larger than this are refused (also sent as ``HttpRequest.max_response_bytes``).
MAX_RESPONSE_BYTES = 1 << 20
TOKEN_AUTH_METHODS = ("client_secret_post", "client_secret_basic", "none")

#: Ten years: a longer ``expires_in`` is a provider bug, and adding it to ``now`` must stay sane.
MAX_EXPIRES_IN = 10 * 366 * 24 * 3600
MAX_TOKEN_LENGTH = 64 * 1024
MAX_SUBJECT_LENGTH = 255
MAX_CLAIM_LENGTH = 256
MAX_RETRY_AFTER = 3600
_MAX_FORM_FIELDS = 64

IDENTITY_SOURCES = ("userinfo", "id_token", "both")
#: Asymmetric JWS algorithms accepted for ID tokens (RFC 7518 §3.1). ``none`` and the HMAC family
#: are never accepted: an HS256 token "signed" with a provider's public key must not verify.
ID_TOKEN_ALGS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
#: Scopes defined by OIDC Core §5.4 / §11 rather than by an API: never prefixed (Entra accepts them
#: next to one resource's scopes).
OIDC_SCOPES = frozenset({"openid", "profile", "email", "address", "phone", "offline_access"})
#: Entra ID's multi-tenant issuer template (``https://login.microsoftonline.com/{tenantid}/v2.0``).
TENANT_PLACEHOLDER = "{tenantid}"
_TENANT_ID_RE = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
#: Upstream fields that the user or a tenant administrator can change, or that are reused after a
#: rename (OIDC Core §5.7: only ``sub`` is stable; Microsoft: ``preferred_username``, ``upn``,
#: ``email`` and ``unique_name`` are mutable and must not be used for authorization decisions).
#: They are display data: never the subject, never our ``login`` (spec/security.md 32).
MUTABLE_CLAIMS = frozenset(
    {
        "email",
        "mail",
        "upn",
        "unique_name",
        "preferred_username",
        "name",
        "nickname",
        "given_name",
        "family_name",
    }
)
# A user's handle (GitHub's `login`) is renamed and then reused by someone else: a display claim,
# never the subject.
_MUTABLE_SUBJECTS = MUTABLE_CLAIMS | {"login", "username"}
#: Entries of GitHub's ``GET /user/emails`` looked at (it pages at 30 by default, 100 at most).
MAX_EMAIL_ENTRIES = 100
# Names of the proxy's own access token claims (tokens.py): a claim map may not shadow them.
_RESERVED_CLAIMS = frozenset(
    {"iss", "sub", "aud", "client_id", "scope", "iat", "exp", "jti", "gid", "nbf", "azp", "cnf"}
)

# Parameters the builders set themselves. RFC 6749 §3.1: "Request and response parameters MUST NOT
# be included more than once", so extra parameters may not repeat them.
_AUTHORIZE_PARAMS = frozenset(
    {
        "response_type",
        "client_id",
        "redirect_uri",
        "state",
        "scope",
        "code_challenge",
        "code_challenge_method",
        "resource",
        "nonce",
    }
)
_TOKEN_PARAMS = frozenset(
    {
        "grant_type",
        "code",
        "redirect_uri",
        "code_verifier",
        "refresh_token",
        "client_id",
        "client_secret",
        "resource",
    }
)

# Error codes at the token endpoint meaning "this grant is no good": the user must authorize again.
# bad_verification_code and bad_refresh_token are GitHub's spellings of invalid_grant.
_DENIED_CODES = frozenset(
    {
        "invalid_grant",
        "access_denied",
        "unauthorized_client",
        "bad_verification_code",
        "bad_refresh_token",
    }
)
# The proxy's own registration is wrong: an operator problem, not the user's.
_CREDENTIAL_CODES = frozenset({"invalid_client", "incorrect_client_credentials"})
_TRANSIENT_CODES = frozenset({"temporarily_unavailable", "server_error"})

_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
# RFC 6749 Appendix A.4: scope-token = 1*NQCHAR, NQCHAR = %x21 / %x23-5B / %x5D-7E.
_SCOPE_TOKEN_RE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
# RFC 6749 Appendix A.12 / A.17: access-token and refresh-token = 1*VSCHAR (%x20-7E). Checking it
# also keeps CR/LF out of the Authorization header we later build from an access token.
_VSCHAR_RE = re.compile(r"[\x20-\x7e]+")
_HTTP_FAILURE_REASONS = frozenset({"timeout", "connect", "too_large", "protocol"})


# --------------------------------------------------------------------------------------------------
# Errors


class UpstreamError(OAuthError):
    """Base of every failure talking to the upstream provider: 502, the upstream failed."""

    error: ClassVar[str] = "server_error"
    status: ClassVar[int] = 502


class UpstreamDeniedError(InvalidGrantError, UpstreamError):
    """The upstream refused the grant (invalid or expired code, revoked refresh token, denied user).

    ``invalid_grant`` / 400, so an MCP client re-authorizes (spec/interop.md, token endpoint errors).
    """

    error: ClassVar[str] = "invalid_grant"
    status: ClassVar[int] = 400


class UpstreamUnavailableError(TemporarilyUnavailableError, UpstreamError):
    """Timeout, connection failure, 5xx or 429 upstream: transient, nothing was revoked.

    ``temporarily_unavailable`` / 503; ``retry_after`` carries the upstream's bounded hint, if any.
    """

    error: ClassVar[str] = "temporarily_unavailable"
    status: ClassVar[int] = 503


class UpstreamProtocolError(ServerError, UpstreamError):
    """The upstream answered something we cannot use, or rejected the proxy's own configuration.

    ``server_error`` / 502 (bad gateway): the MCP client did nothing wrong; retrying will not help.
    """

    error: ClassVar[str] = "server_error"
    status: ClassVar[int] = 502


class UpstreamMixUpError(InvalidRequestError, UpstreamError):
    """RFC 9207 §2.4: the callback's ``iss`` is missing where required, or names another issuer.

    ``invalid_request`` / 400: the authorization response must not be used.
    """

    error: ClassVar[str] = "invalid_request"
    status: ClassVar[int] = 400


# --------------------------------------------------------------------------------------------------
# Records


def _str_tuple(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


def _pair_tuple(value: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    return tuple((k, v) for k, v in value)


def _check_url(_: Any, attribute: attrs.Attribute[Any], value: str | None) -> None:
    # https, or http on loopback only; no fragment (RFC 6749 §3.1 / §3.2): url_policy.py.
    problem = None if value is None else provider_url_problem(value)
    if problem is not None:
        raise ValueError(f"{attribute.name}: {problem}")


def _check_extra(reserved: frozenset[str]) -> Any:
    def check(_: Any, attribute: attrs.Attribute[Any], value: tuple[tuple[str, str], ...]) -> None:
        names = [name for name, _v in value]
        if len(set(names)) != len(names):
            raise ValueError(f"{attribute.name} repeats a parameter")
        clash = sorted(set(names) & reserved)
        if clash:
            raise ValueError(f"{attribute.name} may not set {', '.join(clash)}")

    return check


def _check_claim_map(
    _: Any, attribute: attrs.Attribute[Any], value: tuple[tuple[str, str], ...]
) -> None:
    ours = [name for name, _field in value]
    if len(set(ours)) != len(ours):
        raise ValueError(f"{attribute.name} names a claim twice")
    for name, field in value:
        if not _NAME_RE.fullmatch(name.lower()) or name in _RESERVED_CLAIMS:
            raise ValueError(f"{attribute.name}: {name!r} is not a usable claim name")
        if not field or len(field) > 64:
            raise ValueError(
                f"{attribute.name}: the upstream field for {name} is empty or too long"
            )
        # spec/security.md 32: the provider vouches (email_verified, xms_edov, /user/emails) for its
        # `email` field only; an `email` read from another field would be trusted unvouched.
        if name == "email" and field != "email":
            raise ValueError(f"{attribute.name}: email can only come from the email field")
        # `login` reads as the user's handle; a tenant-controlled, mutable field under that name
        # is the nOAuth confusion (Entra's preferred_username).
        if name == "login" and field in MUTABLE_CLAIMS:
            raise ValueError(
                f"{attribute.name}: login may not come from the mutable field {field!r}; "
                f"map it under its own name ({field} = {field!r})"
            )


@attrs.frozen(kw_only=True)
class UpstreamProfile:
    """One upstream provider as data: where its endpoints are and how the proxy authenticates.

    ``name`` prefixes subjects (``github:12345``), so it is a short lower-case token. Build one with
    the factories of ``oauthproxy_core.providers`` (``github_profile``, ``google_profile``, ...);
    every field has a safe default, so a profile is also plain data a test can write by hand.
    Every endpoint URL is https, or http on a loopback host (``url_policy.py``); a profile that
    exists obeys that rule, however it was built.
    """

    name: str = attrs.field()
    authorize_url: str = attrs.field(validator=_check_url)
    token_url: str = attrs.field(validator=_check_url)
    client_id: str = attrs.field()
    client_secret: str = attrs.field(default="", repr=False, eq=False)
    scopes: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    token_auth_method: str = attrs.field(
        default="client_secret_post", validator=attrs.validators.in_(TOKEN_AUTH_METHODS)
    )
    #: Send RFC 8707 ``resource`` upstream (off by default: many providers reject it).
    forward_resource: bool = False
    #: Expected RFC 9207 ``iss`` at the callback when the provider sends one.
    issuer: str | None = None
    #: The provider advertises ``authorization_response_iss_parameter_supported``.
    require_iss: bool = False
    #: GET with the upstream access token as Bearer; answers a JSON identity.
    userinfo_url: str | None = attrs.field(default=None, validator=_check_url)
    #: Field of the userinfo JSON holding the stable user id (``"id"`` for GitHub).
    subject_field: str = "sub"
    identity_fields: tuple[str, ...] = attrs.field(
        default=("login", "email", "name", "preferred_username"), converter=_str_tuple
    )
    extra_authorize_params: tuple[tuple[str, str], ...] = attrs.field(
        default=(), converter=_pair_tuple, validator=_check_extra(_AUTHORIZE_PARAMS)
    )
    extra_token_params: tuple[tuple[str, str], ...] = attrs.field(
        default=(), converter=_pair_tuple, validator=_check_extra(_TOKEN_PARAMS)
    )
    use_pkce: bool = True
    timeout: float = 10.0
    #: Where the user's identity comes from: the UserInfo endpoint, the verified ID token, or both
    #: (subject from the ID token, which must equal UserInfo's ``sub``: OIDC Core §5.3.2).
    identity_source: str = attrs.field(
        default="userinfo", validator=attrs.validators.in_(IDENTITY_SOURCES)
    )
    #: The provider's JWK Set (OIDC Discovery ``jwks_uri``), fetched through ``HttpCall`` and cached.
    jwks_uri: str | None = attrs.field(default=None, validator=_check_url)
    #: Seconds a fetched JWK Set is cached (record kind ``jwks``); an unknown ``kid`` refetches once.
    jwks_cache_ttl: int = 3600
    #: JWS algorithms accepted on ID tokens: a subset of ``ID_TOKEN_ALGS``.
    id_token_signing_algs: tuple[str, ...] = attrs.field(default=("RS256",), converter=_str_tuple)
    #: Further ``iss`` values accepted in ID tokens (Google also uses ``accounts.google.com``).
    id_token_issuers: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    #: Send an OIDC ``nonce`` (derived from the upstream state) and require it in the ID token.
    nonce: bool = False
    #: Seconds of clock skew tolerated on ID token ``exp`` / ``iat`` / ``nbf``.
    clock_skew: int = 60
    #: Prefix for API scopes (Entra: the application ID URI plus ``/``); OIDC scopes are exempt.
    scope_prefix: str = ""
    #: Our claim name -> upstream field (``login`` -> ``preferred_username``). Empty: each of
    #: ``identity_fields`` under its own name.
    claim_map: tuple[tuple[str, str], ...] = attrs.field(
        default=(), converter=_pair_tuple, validator=_check_claim_map
    )
    #: Entra tenant (``common``, ``organizations``, ``consumers`` or a GUID); informational.
    tenant: str | None = None
    #: Response header of the userinfo call listing the token's granted scopes (GitHub:
    #: ``X-OAuth-Scopes``); it replaces the token response's ``scope`` when present.
    scopes_header: str | None = None
    #: The claim that must be true (``email_vouched``) in the same identity document for its
    #: ``email`` to be kept (OIDC Core §5.1 ``email_verified``; Entra ``xms_edov``). ``None``: the
    #: provider never vouches for an address in its identity document, which is then dropped
    #: (spec/security.md 32). The safe default for a profile written by hand.
    email_verified_claim: str | None = None
    #: GitHub's ``GET /user/emails``: the primary address is kept only if GitHub marks it verified.
    verified_email_url: str | None = attrs.field(default=None, validator=_check_url)
    #: ``verified_email_url`` is asked only when one of these scopes was granted (GitHub:
    #: ``user:email`` or ``user``); empty: always (a GitHub App's permissions decide).
    verified_email_scopes: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    #: A field that qualifies the subject (Entra: ``tid`` with ``oid``, an object id being unique
    #: only within its tenant): the subject becomes ``<qualifier>:<subject>``.
    subject_qualifier_field: str | None = None
    #: GitHub's ``GET /user/orgs`` and ``GET /user/teams`` (memberships.py), asked only when
    #: ``[access] github_orgs`` rules exist.
    org_membership_url: str | None = attrs.field(default=None, validator=_check_url)
    team_membership_url: str | None = attrs.field(default=None, validator=_check_url)
    #: Microsoft Graph's ``getMemberObjects``, asked only on an Entra group overage while
    #: ``[access] allowed_groups`` rules exist (memberships.py).
    group_overage_url: str | None = attrs.field(default=None, validator=_check_url)

    @name.validator
    def _check_name(self, _: attrs.Attribute[str], value: str) -> None:
        if not _NAME_RE.fullmatch(value):
            raise ValueError("name must match [a-z0-9][a-z0-9._-]{0,63}")

    @client_id.validator
    def _check_client_id(self, _: attrs.Attribute[str], value: str) -> None:
        if not value:
            raise ValueError("client_id must not be empty")

    @scopes.validator
    def _check_scopes(self, _: attrs.Attribute[tuple[str, ...]], value: tuple[str, ...]) -> None:
        for scope in value:
            if not _SCOPE_TOKEN_RE.fullmatch(scope):
                raise ValueError("each scope must be one RFC 6749 §3.3 scope-token")

    # Long by nature: Validation of a provider profile at construction: one check per field, so a
    # profile that exists is valid.
    def __attrs_post_init__(self) -> None:  # noqa: C901, PLR0912
        if self.issuer is not None and not self.issuer:
            raise ValueError("issuer must be None or non-empty")
        if self.require_iss and self.issuer is None:
            # Every callback would be rejected: nothing to compare `iss` with.
            raise ValueError("require_iss needs issuer")
        if not self.subject_field:
            raise ValueError("subject_field must not be empty")
        if self.subject_field in _MUTABLE_SUBJECTS:
            # spec/security.md 32: the subject is the identity; it must be the provider's immutable id.
            raise ValueError(
                f"subject_field {self.subject_field!r} can change or be reused: use the provider's "
                "immutable user id (sub, id, oid)"
            )
        for name in (self.email_verified_claim, self.subject_qualifier_field):
            if name is not None and (not name or len(name) > 64 or name in _MUTABLE_SUBJECTS):
                raise ValueError(f"{name!r} cannot vouch for an email or qualify the subject")
        if not (math.isfinite(self.timeout) and self.timeout > 0):
            raise ValueError("timeout must be a positive number of seconds")
        if self.issuer is not None and TENANT_PLACEHOLDER in self.issuer.replace(
            TENANT_PLACEHOLDER, "", 1
        ):
            raise ValueError("issuer may contain {tenantid} at most once")
        if self.identity_source != "userinfo":
            if self.jwks_uri is None or self.issuer is None:
                raise ValueError(
                    f"identity_source {self.identity_source} needs jwks_uri and issuer"
                )
            if self.identity_source == "both" and self.userinfo_url is None:
                raise ValueError("identity_source both needs userinfo_url")
            if "openid" not in self.scopes:
                # OIDC Core §3.1.2.1: "OpenID Connect requests MUST contain the openid scope value".
                raise ValueError(f"identity_source {self.identity_source} needs the openid scope")
        if not self.id_token_signing_algs or not set(self.id_token_signing_algs) <= set(
            ID_TOKEN_ALGS
        ):
            raise ValueError(f"id_token_signing_algs must be a non-empty subset of {ID_TOKEN_ALGS}")
        if not 1 <= self.jwks_cache_ttl <= 7 * 24 * 3600:
            raise ValueError("jwks_cache_ttl must be between 1 second and 7 days")
        if not 0 <= self.clock_skew <= 600:
            raise ValueError("clock_skew must be between 0 and 600 seconds")
        if self.scope_prefix and (
            any(c.isspace() or c in '"\\' for c in self.scope_prefix)
            or not self.scope_prefix.endswith("/")
        ):
            raise ValueError("scope_prefix must end with '/' and hold no spaces or quotes")
        if self.scopes_header is not None and not re.fullmatch(
            r"[A-Za-z0-9-]+", self.scopes_header
        ):
            raise ValueError("scopes_header must be an HTTP header name")

    @property
    def uses_id_token(self) -> bool:
        return self.identity_source != "userinfo"

    @property
    def claim_pairs(self) -> tuple[tuple[str, str], ...]:
        """``(our claim name, upstream field)`` pairs read from an identity document."""
        return self.claim_map or tuple((f, f) for f in self.identity_fields)


@attrs.frozen(kw_only=True)
class UpstreamTokens:
    """RFC 6749 §5.1: an upstream token response, validated. Kept server-side, sealed at rest."""

    access_token: str = attrs.field(repr=False, eq=False)
    #: Always ``"Bearer"`` (the only type accepted).
    token_type: str
    refresh_token: str | None = attrs.field(repr=False, eq=False, default=None)
    #: Absolute epoch seconds (``now + expires_in``); ``None`` if the provider sent no lifetime.
    expires_at: int | None
    #: Scopes as granted, from ``scope`` (spaces or GitHub's commas); ``()`` if absent.
    scope: tuple[str, ...] = attrs.field(converter=_str_tuple)
    id_token: str | None = attrs.field(repr=False, eq=False, default=None)
    #: Absolute expiry of the refresh token (GitHub Apps: ``refresh_token_expires_in``), if sent.
    refresh_expires_at: int | None = None


def stored_tokens_json(tokens: UpstreamTokens) -> bytes:
    """``tokens`` as a grant keeps them, sealed (spec/security.md 24); read back by
    ``handlers.upstream_token`` and ``revalidation``."""
    return json.dumps(
        {
            "access_token": tokens.access_token,
            "token_type": tokens.token_type,
            "refresh_token": tokens.refresh_token,
            "expires_at": tokens.expires_at,
            "scope": list(tokens.scope),
            "id_token": tokens.id_token,
            "refresh_expires_at": tokens.refresh_expires_at,
        }
    ).encode()


@attrs.frozen(kw_only=True)
class UpstreamIdentity:
    """Who the upstream says the user is (OIDC Core §5.3, or GitHub's ``GET /user``).

    ``subject`` is the identity; ``claims`` are display data (spec/security.md 32).
    """

    #: Stable upstream user id as a string (GitHub's numeric id becomes ``"12345"``; Entra's
    #: ``oid`` becomes ``"<tid>:<oid>"``).
    subject: str
    #: ``claim_pairs`` present in the document, in profile order: display text cleaned and bounded;
    #: ``email`` only when the provider vouched for it, exactly as sent.
    claims: tuple[tuple[str, str], ...] = attrs.field(converter=_pair_tuple)
    #: Granted scopes reported with the identity (GitHub's ``X-OAuth-Scopes``); ``None`` if absent.
    scopes: tuple[str, ...] | None = None


def nonce_for_state(state: str) -> str:
    """OIDC Core §3.1.2.1 ``nonce`` for the transaction whose upstream ``state`` is ``state``.

    base64url(SHA-256("nonce|" + state)): unguessable and unique because the state is (256 random
    bits, spec/security.md 11), recomputable at the callback (which receives the state back) without
    storing anything, and one-way, so a leaked ID token does not reveal the state.
    """
    raw = hashlib.sha256(("nonce|" + state).encode("utf-8", "surrogatepass")).digest()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def requested_scopes(profile: UpstreamProfile) -> tuple[str, ...]:
    """The scopes as sent upstream: API scopes get ``scope_prefix`` (Entra: ``api://<app>/x``)."""
    prefix = profile.scope_prefix
    if not prefix:
        return profile.scopes
    return tuple(
        s if s in OIDC_SCOPES or s.startswith(prefix) or "://" in s else prefix + s
        for s in profile.scopes
    )


def unprefix_scopes(profile: UpstreamProfile, scopes: Iterable[str]) -> tuple[str, ...]:
    """Granted scopes under the names the profile uses (``api://<app>/x`` -> ``x``)."""
    prefix = profile.scope_prefix
    out = (s.removeprefix(prefix) if prefix and len(s) > len(prefix) else s for s in scopes)
    return tuple(dict.fromkeys(out))


def issuer_matches(expected: str, iss: str, *, tenant_id: str | None = None) -> bool:
    """RFC 9207 §2.4 / OIDC Core §3.1.3.7: exact string comparison, except for a ``{tenantid}``.

    With the template, ``{tenantid}`` must stand for ``tenant_id`` when one is known (the ID token's
    ``tid``), else for some tenant GUID; everything around it is compared exactly.
    """
    if TENANT_PLACEHOLDER not in expected:
        return iss == expected
    head, _, tail = expected.partition(TENANT_PLACEHOLDER)
    if not (iss.startswith(head) and iss.endswith(tail) and len(iss) > len(head) + len(tail)):
        return False
    tenant = iss[len(head) : len(iss) - len(tail)]
    if not _TENANT_ID_RE.fullmatch(tenant):
        return False
    return tenant_id is None or tenant == tenant_id


# --------------------------------------------------------------------------------------------------
# Request builders


def build_authorize_url(
    profile: UpstreamProfile,
    *,
    redirect_uri: str,
    state: str,
    code_challenge: str | None,
    resource: str | None,
) -> str:
    """RFC 6749 §4.1.1 authorization request URL, with RFC 7636 §4.3 PKCE parameters.

    Parameters already in ``profile.authorize_url`` (e.g. a tenant selector) are kept. RFC 6749
    §3.1: the endpoint URI "MAY include an application/x-www-form-urlencoded formatted query
    component, which MUST be retained when adding additional query parameters".
    """
    params: list[tuple[str, str]] = [
        ("response_type", "code"),
        ("client_id", profile.client_id),
        ("redirect_uri", redirect_uri),
        ("state", state),
    ]
    if profile.scopes:
        params.append(("scope", " ".join(requested_scopes(profile))))
    if profile.use_pkce:
        if not code_challenge:
            raise ValueError("profile uses PKCE: code_challenge is required")
        params.append(("code_challenge", code_challenge))
        params.append(("code_challenge_method", "S256"))
    if profile.forward_resource and resource:
        params.append(("resource", resource))
    if profile.nonce:
        params.append(("nonce", nonce_for_state(state)))
    params.extend(profile.extra_authorize_params)

    parts = urlsplit(profile.authorize_url)
    added = urlencode(params, quote_via=quote, safe="")
    query = f"{parts.query}&{added}" if parts.query else added
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


def build_token_request(
    profile: UpstreamProfile,
    *,
    code: str,
    redirect_uri: str,
    code_verifier: str | None,
    resource: str | None,
) -> HttpRequest:
    """RFC 6749 §4.1.3 access token request (with the RFC 7636 §4.5 ``code_verifier``)."""
    params: list[tuple[str, str]] = [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect_uri),
    ]
    if profile.use_pkce:
        if not code_verifier:
            raise ValueError("profile uses PKCE: code_verifier is required")
        params.append(("code_verifier", code_verifier))
    return _token_endpoint_request(profile, params, resource)


def build_refresh_request(
    profile: UpstreamProfile, *, refresh_token: str, resource: str | None
) -> HttpRequest:
    """RFC 6749 §6 refresh request. ``scope`` is omitted: the grant keeps its original scope."""
    params = [("grant_type", "refresh_token"), ("refresh_token", refresh_token)]
    return _token_endpoint_request(profile, params, resource)


def _token_endpoint_request(
    profile: UpstreamProfile, params: list[tuple[str, str]], resource: str | None
) -> HttpRequest:
    headers: list[tuple[str, str]] = [
        ("Content-Type", "application/x-www-form-urlencoded"),
        # GitHub answers form-encoded without it (spec/interop.md).
        ("Accept", "application/json"),
    ]
    method = profile.token_auth_method
    if method == "client_secret_basic":
        headers.append(("Authorization", _basic_credentials(profile)))
    elif method == "client_secret_post":
        # RFC 6749 §2.3.1 allows the credentials in the body as client_id / client_secret.
        params += [("client_id", profile.client_id), ("client_secret", profile.client_secret)]
    else:
        # RFC 6749 §4.1.3: a client that does not authenticate sends its client_id.
        params.append(("client_id", profile.client_id))
    if profile.forward_resource and resource:
        params.append(("resource", resource))
    params.extend(profile.extra_token_params)
    return HttpRequest(
        method="POST",
        url=profile.token_url,
        headers=tuple(headers),
        body=urlencode(params).encode("ascii"),
        timeout=profile.timeout,
        max_response_bytes=MAX_RESPONSE_BYTES,
    )


def _basic_credentials(profile: UpstreamProfile) -> str:
    # RFC 6749 §2.3.1: "The client identifier is encoded using the application/x-www-form-urlencoded
    # encoding algorithm ..., and the encoded value is used as the username; the client password is
    # encoded using the same algorithm and used as the password." A secret holding ':' or '%' breaks
    # against strict servers without this step.
    user = quote_plus(profile.client_id, safe="")
    password = quote_plus(profile.client_secret, safe="")
    token = base64.b64encode(f"{user}:{password}".encode("ascii")).decode("ascii")
    return f"Basic {token}"


def build_userinfo_request(profile: UpstreamProfile, *, access_token: str) -> HttpRequest:
    """OIDC Core §5.3.1 UserInfo request (GitHub: ``GET /user``), the upstream token as Bearer."""
    if profile.userinfo_url is None:
        raise ValueError(f"upstream profile {profile.name} has no userinfo_url")
    return _bearer_get(profile, profile.userinfo_url, access_token)


def _bearer_get(profile: UpstreamProfile, url: str, access_token: str) -> HttpRequest:
    """RFC 6750 §2.1: ``GET url`` with the upstream access token in the Authorization header."""
    if not _VSCHAR_RE.fullmatch(access_token) or len(access_token) > MAX_TOKEN_LENGTH:
        raise ValueError("access token is not a valid bearer token")
    return HttpRequest(
        method="GET",
        url=url,
        headers=(("Authorization", f"Bearer {access_token}"), ("Accept", "application/json")),
        timeout=profile.timeout,
        max_response_bytes=MAX_RESPONSE_BYTES,
    )


# --------------------------------------------------------------------------------------------------
# Response parsers


def parse_token_response(
    result: HttpResponse | HttpFailure, *, now: int, profile: UpstreamProfile | None = None
) -> UpstreamTokens:
    """Read an upstream token endpoint answer (RFC 6749 §5.1 success, §5.2 error).

    With ``profile``, granted scopes lose the profile's ``scope_prefix``. Raises
    ``UpstreamUnavailableError`` (transport failure, 429, 5xx), ``UpstreamDeniedError`` (the
    grant was refused: re-authorize) or ``UpstreamProtocolError`` (anything else unusable).
    """
    response = _usable_response(result, "token endpoint")
    params = _decode_body(response)
    if params is not None and params.get("error") is not None:
        raise _token_error(params["error"])
    if not 200 <= response.status < 300:
        if response.status == 401:
            raise UpstreamProtocolError("upstream rejected the proxy's client credentials")
        raise UpstreamProtocolError("upstream token endpoint answered an unexpected status")
    if params is None:
        raise UpstreamProtocolError("upstream token response is not JSON or form-encoded")

    access_token = _token_field(params, "access_token")
    if access_token is None:
        raise UpstreamProtocolError("upstream token response has no access_token")
    token_type = _optional_str(params, "token_type")
    # RFC 6749 §7.1: the client MUST NOT use a token whose type it does not understand.
    if token_type is not None and token_type.lower() != "bearer":
        raise UpstreamProtocolError("upstream issued a token type other than Bearer")
    expires_in = _expires_in(params)
    refresh_token = _token_field(params, "refresh_token")
    # GitHub Apps: "refresh_token_expires_in" (the refresh token's own lifetime, six months).
    refresh_expires_in = _expires_in(params, "refresh_token_expires_in")
    scope = _granted_scope(params)
    return UpstreamTokens(
        access_token=access_token,
        token_type="Bearer",
        refresh_token=refresh_token,
        expires_at=None if expires_in is None else now + expires_in,
        scope=scope if profile is None else unprefix_scopes(profile, scope),
        id_token=_token_field(params, "id_token"),
        refresh_expires_at=(
            None
            if refresh_expires_in is None or refresh_token is None
            else now + refresh_expires_in
        ),
    )


def parse_identity(
    profile: UpstreamProfile, result: HttpResponse | HttpFailure
) -> UpstreamIdentity:
    """Read a UserInfo answer (OIDC Core §5.3.2) into a stable subject and a few display claims."""
    response = _usable_response(result, "userinfo endpoint")
    status = response.status
    if status in (401, 403):
        if status == 403 and _rate_limited(response):
            # GitHub signals its primary rate limit with 403 and X-RateLimit-Remaining: 0.
            raise UpstreamUnavailableError(
                "upstream userinfo endpoint is rate limited", retry_after=_retry_after(response)
            )
        # RFC 6750 §3.1: the upstream token is invalid, expired, revoked or lacks scope.
        raise UpstreamDeniedError("upstream rejected the access token at its userinfo endpoint")
    if not 200 <= status < 300:
        raise UpstreamProtocolError("upstream userinfo endpoint answered an unexpected status")
    document = _json_object(response.body)
    if document is None:
        raise UpstreamProtocolError("upstream userinfo response is not a JSON object")
    identity = identity_from_claims(profile, document, source="userinfo")
    if profile.scopes_header is None:
        return identity
    header = response.header(profile.scopes_header)
    if header is None:
        return identity
    # GitHub: "X-OAuth-Scopes: repo, user" lists the scopes the token actually carries (the user
    # may have granted fewer than requested); an empty header means no scopes at all.
    tokens = header.replace(",", " ").split()
    if not all(_SCOPE_TOKEN_RE.fullmatch(t) for t in tokens) or len(tokens) > 256:
        raise UpstreamProtocolError("upstream userinfo scopes header is malformed")
    return attrs.evolve(identity, scopes=unprefix_scopes(profile, tokens))


def identity_from_claims(
    profile: UpstreamProfile, document: dict[str, Any], *, source: str = "ID token"
) -> UpstreamIdentity:
    """A stable subject and the mapped display claims from a UserInfo object or ID token claims.

    The subject is ``document[profile.subject_field]`` (GitHub's numeric ``id`` becomes a string),
    qualified by ``profile.subject_qualifier_field`` when set; claims follow ``profile.claim_pairs``.
    The ``email`` field is kept only when ``email_vouched`` (spec/security.md 32), and then exactly as
    sent: an address that is too long or holds unprintable characters or spaces is dropped, never cut
    or cleaned into another address. Other claims are display text, cleaned and bounded.
    """
    subject = _subject_part(document.get(profile.subject_field), source)
    if profile.subject_qualifier_field is not None:
        qualifier = _subject_part(document.get(profile.subject_qualifier_field), source)
        subject = _subject_part(f"{qualifier}:{subject}", source)

    vouched = email_vouched(profile, document)
    claims: list[tuple[str, str]] = []
    for name, field in profile.claim_pairs:
        value = document.get(field)
        if field == "email":
            address = _exact_email(value) if vouched else None
            if address is not None:
                claims.append((name, address))
            continue
        if isinstance(value, bool) or not isinstance(value, str | int):
            continue  # absent, null (GitHub's private email) or not a scalar: skip it
        text = "".join(c for c in str(value) if not _is_control(c))[:MAX_CLAIM_LENGTH]
        if text:
            claims.append((name, text))
    return UpstreamIdentity(subject=subject, claims=tuple(claims))


def email_vouched(profile: UpstreamProfile, document: dict[str, Any]) -> bool:
    """Whether ``document`` vouches for its own ``email`` (spec/security.md 32).

    True only when the profile names a vouching claim and it is JSON ``true``, or the exact string
    ``"true"``: AWS Cognito's UserInfo endpoint sends ``email_verified`` as a string (pomerium
    #792, coreos/go-oidc #249, zitadel/oidc #139), as Google's did in 2013-2014
    (google-api-java-client #828). ``false``, ``"false"``, ``"True"``, ``1``, ``"1"`` and ``null``
    are not true, and neither is an absent claim: Entra, which never sends ``email_verified``,
    vouches only through its optional ``xms_edov`` claim.
    """
    claim = profile.email_verified_claim
    if claim is None:
        return False
    value = document.get(claim)
    # `value == True` would also accept 1 and 1.0: compare by identity and by exact string.
    return value is True or (isinstance(value, str) and value == "true")


def _subject_part(raw: object, source: str) -> str:
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        raise UpstreamProtocolError(f"upstream {source} has no usable subject")
    subject = str(raw)
    # OIDC Core §5.1: sub is "a locally unique and never reassigned identifier ... MUST NOT exceed
    # 255 ASCII characters in length". Control characters would corrupt logs and keys.
    if not subject or len(subject) > MAX_SUBJECT_LENGTH or any(map(_is_control, subject)):
        raise UpstreamProtocolError(f"upstream {source} has no usable subject")
    return subject


def _exact_email(value: object) -> str | None:
    """``value`` if it is an address we can forward unchanged, else ``None``."""
    if not isinstance(value, str) or not value or len(value) > MAX_CLAIM_LENGTH:
        return None
    # Control, format (zero-width), private-use and separator characters have no place in an
    # address and could make two different strings display alike.
    if "@" not in value or not value.isprintable() or any(c.isspace() for c in value):
        return None
    return value


def wants_verified_email(profile: UpstreamProfile, granted: Iterable[str]) -> bool:
    """Whether to ask ``profile.verified_email_url`` for a token with the ``granted`` scopes."""
    if profile.verified_email_url is None:
        return False
    if not profile.verified_email_scopes:
        return True
    return not set(profile.verified_email_scopes).isdisjoint(granted)


def build_verified_email_request(profile: UpstreamProfile, *, access_token: str) -> HttpRequest:
    """GitHub's ``GET /user/emails`` (REST "List email addresses for the authenticated user")."""
    if profile.verified_email_url is None:
        raise ValueError(f"upstream profile {profile.name} has no verified_email_url")
    return _bearer_get(profile, profile.verified_email_url, access_token)


def parse_verified_email(result: HttpResponse | HttpFailure) -> str | None:
    """The primary address GitHub marks ``verified``, or ``None``.

    The list is display data, so nothing here fails a sign-in: a missing permission (403, 404), an
    outage or an answer we cannot read means no email, never an unverified one.
    """
    if isinstance(result, HttpFailure) or not 200 <= result.status < 300:
        return None
    if len(result.body) > MAX_RESPONSE_BYTES:
        return None
    entries = _json_array(result.body)
    if entries is None:
        return None
    for entry in entries[:MAX_EMAIL_ENTRIES]:
        if (
            isinstance(entry, dict)
            and entry.get("primary") is True
            and entry.get("verified") is True
        ):
            return _exact_email(entry.get("email"))
    return None


def with_verified_email(
    profile: UpstreamProfile, identity: UpstreamIdentity, email: str | None
) -> UpstreamIdentity:
    """``identity`` with ``email`` as every claim mapped from the ``email`` field, in profile order."""
    if email is None:
        return identity
    claims = dict(identity.claims)
    for name, field in profile.claim_pairs:
        if field == "email":
            claims[name] = email
    ordered = tuple((name, claims[name]) for name, _f in profile.claim_pairs if name in claims)
    return attrs.evolve(identity, claims=ordered)


def check_callback_issuer(profile: UpstreamProfile, iss: str | None) -> None:
    """RFC 9207 §2.4: validate the ``iss`` parameter of the upstream authorization response.

    "Clients MUST compare the iss parameter value to the issuer identifier of the authorization
    server where the authorization request was sent" (simple string comparison, no normalization);
    and a client that knows the server supports the parameter "MUST reject authorization responses
    without the iss parameter". An ``iss`` we have nothing to compare with is rejected too.
    """
    if iss is None:
        if profile.require_iss:
            raise UpstreamMixUpError("upstream authorization response lacks the iss parameter")
        return
    if profile.issuer is None:
        raise UpstreamMixUpError("upstream sent an iss parameter but no issuer is configured")
    if not issuer_matches(profile.issuer, iss):
        raise UpstreamMixUpError("upstream authorization response came from another issuer")


# --------------------------------------------------------------------------------------------------
# Internals


def _usable_response(result: HttpResponse | HttpFailure, what: str) -> HttpResponse:
    if isinstance(result, HttpFailure):
        # `reason` comes from our own driver, but echo only the documented values.
        reason = result.reason if result.reason in _HTTP_FAILURE_REASONS else "failure"
        raise UpstreamUnavailableError(f"upstream {what} unreachable ({reason})")
    if len(result.body) > MAX_RESPONSE_BYTES:
        raise UpstreamProtocolError(f"upstream {what} response too large")
    if result.status == 429 or result.status >= 500:
        raise UpstreamUnavailableError(
            f"upstream {what} temporarily unavailable", retry_after=_retry_after(result)
        )
    return result


def _retry_after(response: HttpResponse) -> int | None:
    # RFC 9110 §10.2.3 delay-seconds only; an HTTP-date needs a clock we do not have here.
    value = (response.header("retry-after") or "").strip()
    if not (value.isascii() and value.isdigit()) or len(value) > 10:
        return None
    return min(int(value), MAX_RETRY_AFTER)


def _rate_limited(response: HttpResponse) -> bool:
    remaining = (response.header("x-ratelimit-remaining") or "").strip()
    return remaining == "0" or response.header("retry-after") is not None


def _media_type(response: HttpResponse) -> str:
    return (response.header("content-type") or "").split(";", 1)[0].strip().lower()


def _decode_body(response: HttpResponse) -> dict[str, Any] | None:
    """A JSON object or a form-encoded body as a dict; ``None`` if it is neither."""
    if _media_type(response) == "application/x-www-form-urlencoded":
        # GitHub without Accept: application/json.
        decoders = (_form_object, _json_object)
    else:
        decoders = (_json_object, _form_object)
    for decode in decoders:
        value = decode(response.body)
        if value is not None:
            return value
    return None


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        return parse_json_object(body, max_bytes=MAX_RESPONSE_BYTES)
    except UntrustedJsonError:
        return None


def _json_array(body: bytes) -> list[Any] | None:
    try:
        value = parse_json(body, max_bytes=MAX_RESPONSE_BYTES)
    except UntrustedJsonError:
        return None
    return value if isinstance(value, list) else None


def _form_object(body: bytes) -> dict[str, Any] | None:
    try:
        text = body.decode("ascii")
        pairs = parse_qsl(
            text,
            keep_blank_values=True,
            strict_parsing=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=_MAX_FORM_FIELDS,
        )
    except ValueError:  # also UnicodeDecodeError
        return None
    out: dict[str, Any] = {}
    for name, value in pairs:
        if name in out:
            return None  # RFC 6749 §3.1: parameters MUST NOT be repeated
        # Form fields carry no null: an empty value means "not sent".
        out[name] = value or None
    return out


def _token_error(code: object) -> UpstreamError:
    if not isinstance(code, str):
        return UpstreamProtocolError("upstream token error response is malformed")
    if code in _DENIED_CODES:
        return UpstreamDeniedError("upstream refused the authorization grant")
    if code in _CREDENTIAL_CODES:
        return UpstreamProtocolError("upstream rejected the proxy's client credentials")
    if code in _TRANSIENT_CODES:
        return UpstreamUnavailableError("upstream token endpoint temporarily unavailable")
    # invalid_request, unsupported_grant_type, invalid_scope, invalid_target, redirect_uri_mismatch:
    # the proxy's profile disagrees with the provider's registration. Not the user's fault.
    return UpstreamProtocolError("upstream rejected the proxy's token request")


def _optional_str(params: dict[str, Any], name: str) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise UpstreamProtocolError(f"upstream token response field {name} is not a string")
    return value or None


def _token_field(params: dict[str, Any], name: str) -> str | None:
    value = _optional_str(params, name)
    if value is not None and (len(value) > MAX_TOKEN_LENGTH or not _VSCHAR_RE.fullmatch(value)):
        raise UpstreamProtocolError(f"upstream token response field {name} is malformed")
    return value


def _expires_in(params: dict[str, Any], name: str = "expires_in") -> int | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 12:
        seconds = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    else:
        raise UpstreamProtocolError(f"upstream token response field {name} is malformed")
    if not 0 <= seconds <= MAX_EXPIRES_IN:
        raise UpstreamProtocolError(f"upstream token response field {name} is out of range")
    return seconds


def _granted_scope(params: dict[str, Any]) -> tuple[str, ...]:
    value = _optional_str(params, "scope")
    if value is None:
        return ()
    # RFC 6749 §3.3 separates with spaces; GitHub uses commas ("repo,user").
    tokens = value.replace(",", " ").split()
    if not all(_SCOPE_TOKEN_RE.fullmatch(token) for token in tokens):
        raise UpstreamProtocolError("upstream token response field scope is malformed")
    return tuple(dict.fromkeys(tokens))  # ordered de-duplication


def _is_control(char: str) -> bool:
    return unicodedata.category(char) == "Cc"
