"""Generic OpenID Connect providers (by discovery document) and generic OAuth 2.0 providers.

OpenID Connect Discovery 1.0 is done here, once, without I/O: ``build_discovery_request`` is the
§4.1 request for ``<issuer>/.well-known/openid-configuration`` (an ``effects.HttpRequest`` the caller
executes: ``oauthproxy serve`` does it when it loads ``proxy.toml``), ``parse_discovery_response``
reads the answer, and ``discovered_endpoints`` checks the §3 document: §4.3, the ``issuer`` must be
the one it was fetched for (the mix-up defence RFC 9207 builds on), and every endpoint must pass the
provider URL policy (``url_policy.provider_url_problem``). RFC 9207 ``iss`` is then required at the
callback when the document advertises ``authorization_response_iss_parameter_supported``. Every problem is a
``DiscoveryError`` naming the document member it is about. Extra authorize/token parameters
(Auth0's ``audience``) and forwarding ``resource`` (RFC 8707, off by default: spec/interop.md) are
profile data.

``oauth2_profile`` is a provider with explicit endpoints and a UserInfo-like JSON endpoint.

spec/security.md 32: an OIDC provider vouches for ``email`` with ``email_verified`` (OIDC Core §5.1), so
the OIDC profile keeps an address only when that claim is true. A plain OAuth 2.0 provider has no
such convention: its ``email`` is dropped unless ``email_verified_claim`` names the field by which
it vouches.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..effects import HttpFailure, HttpRequest, HttpResponse
from ..untrusted_json import UntrustedJsonError, parse_json_object
from ..upstream import ID_TOKEN_ALGS, UpstreamProfile
from ..url_policy import provider_url_problem

__all__ = [
    "DEFAULT_OIDC_SCOPES",
    "DiscoveryError",
    "build_discovery_request",
    "discovered_endpoints",
    "discovery_url",
    "oauth2_profile",
    "oidc_profile_from_discovery",
    "parse_discovery_response",
]

#: Scopes asked for when none are configured: the identity a sign-in needs (OIDC Core §5.4).
DEFAULT_OIDC_SCOPES = ("openid", "profile", "email")
#: A discovery document is a few kilobytes; anything this large is not one.
MAX_DISCOVERY_BYTES = 256 * 1024
DISCOVERY_TIMEOUT = 10.0
_WELL_KNOWN = "/.well-known/openid-configuration"


class DiscoveryError(ValueError):
    """The discovery document is unusable. ``member`` names the document field at fault, if any."""

    def __init__(self, reason: str, *, member: str | None = None) -> None:
        super().__init__(reason if member is None else f"{member}: {reason}")
        self.reason = reason
        self.member = member


def discovery_url(issuer: str) -> str:
    """Discovery §4.1: "any terminating / MUST be removed before appending" the well-known path."""
    return issuer.rstrip("/") + _WELL_KNOWN


def build_discovery_request(issuer: str, *, timeout: float = DISCOVERY_TIMEOUT) -> HttpRequest:
    """Discovery §4.1: ``GET <issuer>/.well-known/openid-configuration``."""
    problem = provider_url_problem(issuer)
    if problem is not None:
        raise DiscoveryError(f"the issuer {problem}")
    return HttpRequest(
        method="GET",
        url=discovery_url(issuer),
        headers=(("Accept", "application/json"),),
        timeout=timeout,
        max_response_bytes=MAX_DISCOVERY_BYTES,
    )


def parse_discovery_response(result: HttpResponse | HttpFailure, *, issuer: str) -> dict[str, Any]:
    """Discovery §4.2: a 200 answer holding a JSON object (checked by ``discovered_endpoints``)."""
    url = discovery_url(issuer)
    if isinstance(result, HttpFailure):
        if result.reason == "too_large":
            raise DiscoveryError(f"the discovery document at {url} is too large")
        raise DiscoveryError(f"discovery at {url} failed ({result.reason})")
    if result.status != 200:
        raise DiscoveryError(f"discovery at {url} answered HTTP {result.status}")
    try:
        return parse_json_object(result.body, max_bytes=MAX_DISCOVERY_BYTES)
    except UntrustedJsonError:
        raise DiscoveryError(f"the discovery document at {url} is not a JSON object") from None


def discovered_endpoints(document: Mapping[str, Any], *, issuer: str) -> dict[str, Any]:
    """``UpstreamProfile`` fields from a discovery document; ``DiscoveryError`` says what is wrong."""
    if document.get("issuer") != issuer:
        # Discovery §4.3: "The issuer value returned MUST be identical to the Issuer URL that was
        # used as the prefix to /.well-known/openid-configuration".
        raise DiscoveryError(
            f"the discovery document at {discovery_url(issuer)} names another issuer"
        )

    def url(name: str, *, required: bool = True) -> str | None:
        value = document.get(name)
        if value is None and not required:
            return None
        if not isinstance(value, str) or not value:
            raise DiscoveryError("is missing", member=name)
        problem = provider_url_problem(value)
        if problem is not None:
            raise DiscoveryError(problem, member=name)
        return value

    methods = document.get("token_endpoint_auth_methods_supported", ["client_secret_basic"])
    if not isinstance(methods, list):
        methods = ["client_secret_basic"]
    if "client_secret_post" in methods:
        method = "client_secret_post"
    elif "client_secret_basic" in methods:
        # Discovery §3: "If omitted, the default is client_secret_basic".
        method = "client_secret_basic"
    else:
        raise DiscoveryError(
            "the provider supports neither client_secret_post nor client_secret_basic",
            member="token_endpoint_auth_methods_supported",
        )
    advertised = document.get("id_token_signing_alg_values_supported", ["RS256"])
    if not isinstance(advertised, list):
        advertised = ["RS256"]
    algs = tuple(a for a in ID_TOKEN_ALGS if a in advertised) or ("RS256",)
    return {
        "issuer": issuer,
        "authorize_url": url("authorization_endpoint"),
        "token_url": url("token_endpoint"),
        "userinfo_url": url("userinfo_endpoint", required=False),
        "jwks_uri": url("jwks_uri", required=False),
        "require_iss": document.get("authorization_response_iss_parameter_supported") is True,
        "token_auth_method": method,
        "id_token_signing_algs": algs,
    }


def oidc_profile_from_discovery(
    document: Mapping[str, Any],
    *,
    issuer: str,
    client_id: str,
    client_secret: str,
    name: str = "oidc",
    scopes: Iterable[str] = DEFAULT_OIDC_SCOPES,
    identity_source: str | None = None,
    **fields: Any,
) -> UpstreamProfile:
    """A generic OIDC provider. ``identity_source`` defaults to ``both`` (ID token verified, then
    UserInfo) when the document has a ``jwks_uri`` and a UserInfo endpoint, ``id_token`` with only
    a ``jwks_uri``, ``userinfo`` with only a UserInfo endpoint. A nonce is sent whenever the ID token
    is used. Explicit ``fields`` (endpoints, ``extra_authorize_params``, ...) win.
    """
    found = discovered_endpoints(document, issuer=issuer)
    if identity_source is None:
        if found["jwks_uri"] and found["userinfo_url"]:
            identity_source = "both"
        elif found["jwks_uri"]:
            identity_source = "id_token"
        else:
            identity_source = "userinfo"
    values: dict[str, Any] = {
        "name": name,
        "client_id": client_id,
        "client_secret": client_secret,
        "scopes": tuple(scopes),
        **found,
        "identity_source": identity_source,
        "nonce": identity_source != "userinfo",
        "email_verified_claim": "email_verified",
    }
    values.update(fields)
    if values["identity_source"] == "userinfo" and values.get("userinfo_url") is None:
        # Nothing would name the user: no UserInfo endpoint, and the ID token is not used.
        raise DiscoveryError(
            "is missing (and the ID token is not used)", member="userinfo_endpoint"
        )
    return UpstreamProfile(**values)


def oauth2_profile(
    *,
    authorize_url: str,
    token_url: str,
    userinfo_url: str,
    client_id: str,
    client_secret: str,
    name: str = "oauth2",
    scopes: Iterable[str] = (),
    subject_field: str = "sub",
    **fields: Any,
) -> UpstreamProfile:
    """A plain OAuth 2.0 provider: explicit endpoints, identity from ``userinfo_url``. Its
    ``email`` is dropped unless ``email_verified_claim`` is given (the profile default)."""
    values: dict[str, Any] = {
        "name": name,
        "authorize_url": authorize_url,
        "token_url": token_url,
        "userinfo_url": userinfo_url,
        "client_id": client_id,
        "client_secret": client_secret,
        "scopes": tuple(scopes),
        "subject_field": subject_field,
    }
    values.update(fields)
    return UpstreamProfile(**values)
