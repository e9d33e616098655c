"""Microsoft Entra ID (the v2.0 endpoints) as an upstream OpenID Connect provider.

From Microsoft's identity platform documentation ("OpenID Connect on the Microsoft identity
platform", "Scopes and permissions", "ID tokens"):

- the tenant is part of every URL: ``https://login.microsoftonline.com/{tenant}/oauth2/v2.0/
  authorize|token`` and ``.../{tenant}/discovery/v2.0/keys``; ``tenant`` is ``common`` (work and
  personal accounts), ``organizations``, ``consumers`` or a tenant GUID;
- the ID token issuer is ``https://login.microsoftonline.com/{tid}/v2.0`` with the *user's* tenant
  id: for ``common``/``organizations``/``consumers`` discovery publishes the template
  ``.../{tenantid}/v2.0``, which is validated against the token's ``tid`` claim; a GUID tenant has
  a fixed issuer. (A tenant given by domain name is refused: its issuer is not known without a
  discovery round trip; use the GUID.)
- scopes of a custom API must be prefixed with its application ID URI (``api://<app-id>/read``);
  the OIDC scopes (``openid profile email offline_access``) are not; granted scopes come back
  prefixed and are unprefixed. ``offline_access`` is needed for a refresh token; refresh tokens
  rotate (a new one comes with each refresh).
- access tokens for a custom API are JWTs for that API, not for Microsoft Graph, so UserInfo (a
  Graph endpoint) cannot be called with them: the identity comes from the verified ID token.

Identity ("Migrate away from using email claims for user identification or authorization";
"ID token claims reference"; spec/security.md 32): the subject is ``sub`` (immutable, unique per user
and application), or ``oid`` qualified by ``tid`` (``<tid>:<oid>``: an object id is unique only
within its tenant) when ``subject_field = "oid"``. ``preferred_username``, ``email``, ``upn`` and
``name`` are set by the user's tenant, can change, and are forwarded as display data only, each
under its own name: never as ``login``. Entra sends no ``email_verified``; ``email`` is kept only
when the optional claim ``xms_edov`` (email domain owner verified) is ``true``, which the app
registration must request (Token configuration, ID token, ``email`` and ``xms_edov``). Without it
no email is forwarded: with ``tenant = common`` any tenant's administrator can give a user any
address (the "nOAuth" takeover, 2023).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from ..upstream import TENANT_PLACEHOLDER, UpstreamProfile

__all__ = [
    "ENTRA_AUTHORITY",
    "GRAPH_BASE_URL",
    "ENTRA_CLAIMS",
    "ENTRA_EMAIL_VERIFIED_CLAIM",
    "entra_profile",
]

ENTRA_AUTHORITY = "https://login.microsoftonline.com"
#: Microsoft Graph, asked for a user's groups when their ID token reports a group overage.
GRAPH_BASE_URL = "https://graph.microsoft.com"
ENTRA_CLAIMS = (
    ("preferred_username", "preferred_username"),
    ("email", "email"),
    ("name", "name"),
)
#: The optional ID token claim by which Entra vouches for ``email`` (it never sends
#: ``email_verified``).
ENTRA_EMAIL_VERIFIED_CLAIM = "xms_edov"
_MULTI_TENANT = frozenset({"common", "organizations", "consumers"})
_GUID_RE = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)


def entra_issuer(tenant: str, authority: str = ENTRA_AUTHORITY) -> str:
    """The expected ID token issuer: fixed for a GUID tenant, a ``{tenantid}`` template otherwise."""
    if tenant in _MULTI_TENANT:
        return f"{authority}/{TENANT_PLACEHOLDER}/v2.0"
    if _GUID_RE.fullmatch(tenant):
        return f"{authority}/{tenant.lower()}/v2.0"
    raise ValueError("tenant must be common, organizations, consumers or a tenant GUID")


def entra_profile(
    *,
    client_id: str,
    client_secret: str,
    tenant: str = "common",
    app_id_uri: str | None = None,
    scopes: Iterable[str] = ("openid", "profile", "email", "offline_access"),
    authority: str = ENTRA_AUTHORITY,
    graph_url: str = GRAPH_BASE_URL,
    **fields: Any,
) -> UpstreamProfile:
    """Entra ID sign-in. ``app_id_uri`` (``api://<app-id>``) prefixes the custom API scopes;
    ``graph_url`` is where a group overage is resolved (memberships.py)."""
    issuer = entra_issuer(tenant, authority)
    scope_list = tuple(scopes)
    if "openid" not in scope_list:
        scope_list = ("openid", *scope_list)
    prefix = ""
    if app_id_uri is not None:
        if not app_id_uri or any(c.isspace() or c in "?#" for c in app_id_uri):
            raise ValueError("app_id_uri must be an application ID URI such as api://<app-id>")
        prefix = app_id_uri.rstrip("/") + "/"
    base = f"{authority}/{tenant}"
    values: dict[str, Any] = {
        "name": "entra",
        "authorize_url": f"{base}/oauth2/v2.0/authorize",
        "token_url": f"{base}/oauth2/v2.0/token",
        "jwks_uri": f"{base}/discovery/v2.0/keys",
        "client_id": client_id,
        "client_secret": client_secret,
        "scopes": scope_list,
        "issuer": issuer,
        "tenant": tenant,
        "identity_source": "id_token",
        "nonce": True,
        "scope_prefix": prefix,
        "claim_map": ENTRA_CLAIMS,
        "email_verified_claim": ENTRA_EMAIL_VERIFIED_CLAIM,
        "id_token_signing_algs": ("RS256",),
        "group_overage_url": graph_url.rstrip("/") + "/v1.0/me/getMemberObjects",
    }
    values.update(fields)
    if values.get("subject_field") == "oid":
        # An oid is unique within its tenant only: with several tenants, qualify it by tid.
        values.setdefault("subject_qualifier_field", "tid")
    return UpstreamProfile(**values)
