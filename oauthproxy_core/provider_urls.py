"""The URL policy for an upstream provider's endpoints: https, or http on a loopback host only.

Every URL the proxy calls or sends a browser to on the provider's side (authorization, token,
UserInfo, JWK Set, OIDC discovery) passes ``provider_url_problem`` when an ``UpstreamProfile`` is
built, so the rule holds for the Python API as much as for ``proxy.toml``:

- RFC 6749 §3.1 / §3.2: an endpoint URI "MUST NOT include a fragment component";
- RFC 6749 §3.1 / §3.2: the authorization and token endpoints carry credentials "in clear-text",
  so TLS is required; the same holds for the UserInfo and JWK Set endpoints, which carry access
  tokens or decide whose identity is accepted. Plain ``http`` is tolerated only
  when the host is this machine (``localhost`` or a loopback IP literal), where no network
  carries the request: tests and local development;
- no userinfo (``https://user:pass@host``): credentials belong in the token request, and a URL
  that names a host after an ``@`` misleads the reader about where it points;
- no whitespace, control characters or backslashes, which parsers disagree about.

``oauthproxy serve`` adds one opt-in on top (``[upstream] allow_insecure_http``): without it even a
loopback ``http`` URL is refused, so a production file cannot carry one by accident.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

__all__ = ["is_loopback_host", "provider_url_problem"]

# Whitespace (Unicode's too), C0 controls, DEL and backslash.
_UNSAFE = re.compile(r"[\s\x00-\x1f\x7f\\]")


def is_loopback_host(host: str | None) -> bool:
    """``localhost`` or an IP literal in 127.0.0.0/8 or ``::1`` (brackets already removed)."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def provider_url_problem(url: object) -> str | None:
    """``None`` if ``url`` may be a provider endpoint, else the rule it breaks (module docstring)."""
    if not isinstance(url, str) or not url:
        return "must be an absolute https URL"
    if _UNSAFE.search(url):
        return "must not contain spaces, control characters or backslashes"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (validates the port)
    except ValueError:
        return "is not a valid URL"
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return "must be an absolute https URL"
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        return "http is allowed only on a loopback host"
    if parts.fragment or "#" in url:
        return "must not contain a fragment"
    if parts.username is not None or parts.password is not None:
        return "must not contain userinfo"
    return None
