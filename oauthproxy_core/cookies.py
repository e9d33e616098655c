"""Cookies the proxy sets on the user's browser, and how they are named.

spec/security.md 17: on https the cookies are ``__Host-`` prefixed, ``Secure``, ``HttpOnly``,
``SameSite=Lax``, ``Path=/`` (RFC 6265bis §4.1.3.2: the prefix pins them to this host); on plain http
loopback (development) the prefix and ``Secure`` are dropped because browsers refuse them there.
"""

from __future__ import annotations

#: Prefix of the per-transaction binding cookies set at approval (``browser_binding.binding_cookie``).
BROWSER = "oauthproxy_browser"
#: The per-browser secret the consent form's token is bound to (``browser_binding``, spec/security.md 31).
CSRF = "oauthproxy_csrf"
#: The upstream session: one provider sign-in serving several resources (upstream_session.py).
SESSION = "oauthproxy_session"


def cookie_name(base: str, secure: bool) -> str:
    return f"__Host-{base}" if secure else base


def set_cookie(base: str, value: str, *, secure: bool, max_age: int) -> tuple[str, str]:
    parts = [
        f"{cookie_name(base, secure)}={value}",
        "Path=/",
        f"Max-Age={max_age}",
        "HttpOnly",
        "SameSite=Lax",
    ]
    if secure:
        parts.append("Secure")
    return ("Set-Cookie", "; ".join(parts))


def clear_cookie(base: str, *, secure: bool) -> tuple[str, str]:
    """The ``Set-Cookie`` that removes ``base`` (RFC 6265 §4.1.2.2: ``Max-Age=0``), same attributes."""
    return set_cookie(base, "", secure=secure, max_age=0)
