"""Upstream providers as data: profile factories plus the pure pieces OIDC adds (ID tokens, JWKS).

Every provider is an ``oauthproxy_core.upstream.UpstreamProfile``; there are no provider classes or
hooks. The request builders and response parsers in ``oauthproxy_core.upstream`` read the profile's
fields; ``id_token`` verifies OpenID Connect ID tokens; ``jwks`` caches the provider's JWK Set in the
store through effects. spec/architecture.md, "Layers": "providers: upstream profiles as data + pure
request builders / response parsers".
"""

from __future__ import annotations

from .entra import entra_issuer, entra_profile
from .github import github_app_profile, github_profile
from .google import google_profile
from .id_token import (
    IdTokenError,
    UnknownSigningKeyError,
    build_jwks_request,
    parse_jwks_response,
    verify_id_token,
)
from .jwks import current_jwks, verified_id_token_claims
from .oidc import (
    DEFAULT_OIDC_SCOPES,
    DiscoveryError,
    build_discovery_request,
    discovered_endpoints,
    oauth2_profile,
    oidc_profile_from_discovery,
    parse_discovery_response,
)

__all__ = [
    "DEFAULT_OIDC_SCOPES",
    "DiscoveryError",
    "IdTokenError",
    "UnknownSigningKeyError",
    "build_discovery_request",
    "build_jwks_request",
    "current_jwks",
    "discovered_endpoints",
    "entra_issuer",
    "entra_profile",
    "github_app_profile",
    "github_profile",
    "google_profile",
    "oauth2_profile",
    "oidc_profile_from_discovery",
    "parse_discovery_response",
    "parse_jwks_response",
    "verified_id_token_claims",
    "verify_id_token",
]
