"""GitHub (github.com and GitHub Enterprise Server) as an upstream profile.

GitHub is plain OAuth 2.0 with quirks (spec/interop.md, "Upstream providers: the quirks"; GitHub docs,
"Authorizing OAuth apps" and "Generating a user access token for a GitHub App"):

- no OIDC for users and no discovery: identity is ``GET /user`` (``id``, ``login``, ``name``,
  ``email``), the stable subject the numeric ``id`` (a login can be renamed and reused);
- the ``email`` of ``GET /user`` is the address the user chose to show on their public profile,
  and GitHub does not say it is verified: it is never kept (spec/security.md 32). With the ``user:email``
  (or ``user``) scope granted, ``GET /user/emails`` lists the user's addresses with ``primary``
  and ``verified``; the primary address is kept when GitHub marks it verified. A GitHub App asks
  the same endpoint (its "Email addresses" permission decides; without it the answer is 403 and
  no email is kept);
- the token endpoint answers form-encoded unless sent ``Accept: application/json`` (the builders
  always send it) and reports failures as HTTP 200 with an ``error`` field (the parser reads it);
- OAuth Apps issue no refresh token and no ``expires_in``; GitHub Apps (with expiring user tokens)
  issue ``expires_in`` (8 hours), a rotating ``refresh_token`` and ``refresh_token_expires_in``
  (6 months), and ignore ``scope`` (the App's permissions apply);
- the scopes a token really carries come back in the ``X-OAuth-Scopes`` header of ``GET /user``;
- GitHub Enterprise Server lives at ``https://<host>/login/oauth/...`` with its API under
  ``https://<host>/api/v3``;
- since April 2026 github.com adds RFC 9207 ``iss=https://github.com/login/oauth`` to its redirects
  back (its documented OAuth issuer). The profile expects exactly that value, derived from the
  authorize URL (``<web>/login/oauth``, so GitHub Enterprise gets its own host), and still accepts
  callbacks without ``iss`` (older Enterprise servers). With no issuer configured, every callback
  carrying ``iss`` would be refused as a mix-up (RFC 9207 §2.4), i.e. every GitHub sign-in.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..upstream import UpstreamProfile

__all__ = [
    "GITHUB_API_BASE_URL",
    "GITHUB_AUTHORIZE_URL",
    "GITHUB_CLAIMS",
    "GITHUB_EMAIL_SCOPES",
    "GITHUB_TOKEN_URL",
    "github_app_profile",
    "github_issuer",
    "github_profile",
]

GITHUB_AUTHORIZE_URL = "https://github.com/login/oauth/authorize"
GITHUB_TOKEN_URL = "https://github.com/login/oauth/access_token"
GITHUB_API_BASE_URL = "https://api.github.com"
GITHUB_CLAIMS = (("login", "login"), ("email", "email"), ("name", "name"))
#: Scopes that let a token read ``GET /user/emails`` (GitHub docs, "Scopes for OAuth apps").
GITHUB_EMAIL_SCOPES = ("user:email", "user")
_AUTHORIZE_SUFFIX = "/login/oauth/authorize"


def github_issuer(authorize_url: str) -> str | None:
    """The RFC 9207 ``iss`` GitHub sends for ``authorize_url`` (``<web>/login/oauth``), or ``None``
    when the URL is not GitHub-shaped (then no issuer is assumed)."""
    base, _, query = authorize_url.partition("?")
    if query or not base.endswith(_AUTHORIZE_SUFFIX):
        return None
    return base.removesuffix("/authorize")


def github_profile(
    *,
    client_id: str,
    client_secret: str,
    scopes: Iterable[str] = ("read:user",),
    enterprise_host: str | None = None,
    api_base_url: str | None = None,
    authorize_url: str | None = None,
    token_url: str | None = None,
    userinfo_url: str | None = None,
    **fields: Any,
) -> UpstreamProfile:
    """A GitHub OAuth App. ``enterprise_host`` (``github.example.com``) selects GitHub Enterprise
    Server; explicit URLs win over both defaults. Further ``UpstreamProfile`` fields pass through
    (``issuer`` overrides the one derived from the authorize URL; ``None`` accepts no ``iss``).
    """
    if enterprise_host is not None:
        web = f"https://{enterprise_host}"
        default_api = f"{web}/api/v3"
        default_authorize = f"{web}/login/oauth/authorize"
        default_token = f"{web}/login/oauth/access_token"
    else:
        default_api, default_authorize, default_token = (
            GITHUB_API_BASE_URL,
            GITHUB_AUTHORIZE_URL,
            GITHUB_TOKEN_URL,
        )
    api = (api_base_url or default_api).rstrip("/")
    authorize = authorize_url or default_authorize
    values: dict[str, Any] = {
        "name": "github",
        "issuer": github_issuer(authorize),
        "authorize_url": authorize,
        "token_url": token_url or default_token,
        "userinfo_url": userinfo_url or api + "/user",
        "client_id": client_id,
        "client_secret": client_secret,
        "scopes": tuple(scopes),
        "subject_field": "id",
        "claim_map": GITHUB_CLAIMS,
        "scopes_header": "X-OAuth-Scopes",
        "identity_source": "userinfo",
        # GET /user's email is unverified: only /user/emails vouches (spec/security.md 32).
        "email_verified_claim": None,
        "verified_email_url": api + "/user/emails",
        "verified_email_scopes": GITHUB_EMAIL_SCOPES,
        "org_membership_url": api + "/user/orgs",
        "team_membership_url": api + "/user/teams",
    }
    values.update(fields)
    return UpstreamProfile(**values)


def github_app_profile(
    *,
    client_id: str,
    client_secret: str,
    **kwargs: Any,
) -> UpstreamProfile:
    """A GitHub App acting for a user: like ``github_profile`` but without scopes (the App's
    permissions decide) and with expiring, rotating user tokens, which the token parser and
    ``handlers.upstream_token`` already handle (``expires_in``, ``refresh_token_expires_in``).
    """
    kwargs.setdefault("scopes", ())
    # No OAuth scopes are granted to an App's token: its "Email addresses" permission decides
    # whether /user/emails answers, so it is always asked.
    kwargs.setdefault("verified_email_scopes", ())
    return github_profile(client_id=client_id, client_secret=client_secret, **kwargs)
