"""Google as an upstream OpenID Connect provider.

From Google's documentation ("OpenID Connect", "Using OAuth 2.0 for Web Server Applications") and
its discovery document at ``https://accounts.google.com/.well-known/openid-configuration``:

- issuer ``https://accounts.google.com``; ID tokens may also say ``accounts.google.com``;
- RS256 ID tokens, keys at ``https://www.googleapis.com/oauth2/v3/certs`` (rotated regularly);
- a refresh token only with ``access_type=offline``, and reliably only with ``prompt=consent``;
- refresh tokens are not rotated: a refresh answer carries none, and the old one stays valid
  (``handlers.upstream_token`` keeps it);
- ``nonce`` is supported and echoed in the ID token; the scope shorthands are ``openid email profile``;
- ``email`` is kept only with ``email_verified: true`` (``upstream.email_vouched``; spec/security.md 32).
  Google documents that it is authoritative for an address only for Gmail and for Workspace
  accounts (``hd``); ``email_verified`` says the user proved control of the address at some time.

The identity is ``sub`` from the verified ID token (no UserInfo call); ``email`` and ``name`` are
display data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..upstream import UpstreamProfile
from .oidc import discovered_endpoints

__all__ = ["GOOGLE_DISCOVERY", "GOOGLE_ISSUER", "google_profile"]

GOOGLE_ISSUER = "https://accounts.google.com"
#: The fields of Google's discovery document the profile uses (stable for years; pass a freshly
#: fetched ``discovery`` document to ``google_profile`` to follow changes).
GOOGLE_DISCOVERY: Mapping[str, Any] = {
    "issuer": GOOGLE_ISSUER,
    "authorization_endpoint": "https://accounts.google.com/o/oauth2/v2/auth",
    "token_endpoint": "https://oauth2.googleapis.com/token",
    "userinfo_endpoint": "https://openidconnect.googleapis.com/v1/userinfo",
    "jwks_uri": "https://www.googleapis.com/oauth2/v3/certs",
    "id_token_signing_alg_values_supported": ["RS256"],
    "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
}
GOOGLE_CLAIMS = (("email", "email"), ("name", "name"))


def google_profile(
    *,
    client_id: str,
    client_secret: str,
    scopes: Iterable[str] = ("openid", "email", "profile"),
    discovery: Mapping[str, Any] | None = None,
    offline: bool = True,
    **fields: Any,
) -> UpstreamProfile:
    """Google sign-in. ``offline`` asks for a refresh token (``access_type=offline&prompt=consent``).

    ``discovery`` is Google's discovery document when the caller fetched it (its ``issuer`` must be
    ``https://accounts.google.com``); otherwise the documented values above are used.
    """
    found = discovered_endpoints(discovery or GOOGLE_DISCOVERY, issuer=GOOGLE_ISSUER)
    extra = (("access_type", "offline"), ("prompt", "consent")) if offline else ()
    values: dict[str, Any] = {
        "name": "google",
        "client_id": client_id,
        "client_secret": client_secret,
        "scopes": tuple(scopes),
        **found,
        "id_token_issuers": ("accounts.google.com",),
        "identity_source": "id_token",
        "nonce": True,
        "claim_map": GOOGLE_CLAIMS,
        "email_verified_claim": "email_verified",
        "extra_authorize_params": extra,
    }
    values.update(fields)
    return UpstreamProfile(**values)
