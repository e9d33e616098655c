"""Binding the consent decision and the upstream callback to one browser (spec/security.md 11, 13, 17, 31).

Three mechanisms, each closing a way in which a page the user did not choose could approve a
transaction in the user's browser (the confused deputy of a proxy with one static upstream client,
FastMCP CVE-2026-27124; OAuth 2.1 §7.9; RFC 9700 §4.7):

- **The per-browser secret.** The consent GET gives a browser that has none a random secret (256 bits
  from the context's random source) in the CSRF cookie, as ``<secret>.<tag>`` where ``tag`` is an
  HMAC of the secret under the proxy's cookie key. A cookie without a valid tag was not minted here
  (it was planted by another page, or made under a retired key) and is never adopted: it is treated as
  absent and replaced. The form token is an HMAC over (secret, transaction id), so whoever created
  the transaction, and knows everything derivable from its id, still cannot compute the token that
  the victim's browser would need: that needs the victim's secret and the key. Renders of one
  transaction in one browser show one token (idempotent); several consent pages open in one browser
  share the secret, so opening one never invalidates another.
- **The origin of the POST.** Fetch Metadata (``Sec-Fetch-Site``, set by the browser and not
  settable by a page) must say ``same-origin`` (the proxy's own consent page) or ``none`` (a
  user-initiated request); ``same-site`` is refused because a sibling subdomain, or on an http
  loopback issuer any other port of the same host (cookies ignore ports, RFC 6265 §8.5), is same-site
  and can know or plant cookies. A browser that sends no Fetch Metadata must send an ``Origin``
  (RFC 6454 §7) equal to the issuer's origin. A request with neither is refused: every browser in use
  sends one of the two on a form POST, so only non-browser clients lack both, and they are not who
  approves consent.
- **The binding of the upstream leg.** At approval, and only then (spec/security.md 11), a fresh random
  value is set in a cookie of its own and its hash stored with the transaction; the callback is
  accepted only with that cookie (12, 13), and clears it. Nothing the browser sent is reused for the
  binding, so a cookie planted before approval is never adopted, and each approval rotates the
  binding; the cookies of other approvals are untouched, so several flows in one browser complete in
  any order.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from .cookies import BROWSER, CSRF, cookie_name, set_cookie
from .crypto import RandomSource, digest, mac, mac_matches, new_secret
from .http import Request
from .keys import Keyring

#: 256 bits: the per-browser secret and the per-approval binding (spec/security.md 25 asks for 128).
SECRET_BYTES = 32
_SECRET = r"[A-Za-z0-9_-]{43}"
_COOKIE_RE = re.compile(rf"({_SECRET})\.([A-Za-z0-9_-]{{43}})")
_BINDING_RE = re.compile(_SECRET)
_OWN_ORIGIN_SITES = frozenset({"same-origin", "none"})


# -- the per-browser secret (CSRF cookie) -------------------------------------------------------


def _secret_tag_message(secret: str) -> str:
    return "browser-secret|" + secret


def _form_token_message(secret: str, txn: str) -> str:
    # Both parts are base64url (no "|"), so the message is unambiguous.
    return "csrf|" + secret + "|" + txn


def browser_secret(req: Request, secure: bool, keys: Keyring) -> str | None:
    """The browser's secret from its CSRF cookie, only if this proxy minted it (a valid tag)."""
    value = req.cookie(cookie_name(CSRF, secure))
    if value is None:
        return None
    match = _COOKIE_RE.fullmatch(value)
    if match is None or not mac_matches(keys, _secret_tag_message(match[1]), match[2]):
        return None
    return match[1]


def mint_browser_secret(
    keys: Keyring, random: RandomSource, *, secure: bool, max_age: int
) -> tuple[str, tuple[str, str]]:
    """A fresh secret and the ``Set-Cookie`` header that gives it to the browser."""
    secret = new_secret(random, SECRET_BYTES)
    value = f"{secret}.{mac(keys, _secret_tag_message(secret))}"
    return secret, set_cookie(CSRF, value, secure=secure, max_age=max_age)


def form_token(keys: Keyring, secret: str, txn: str) -> str:
    """The consent form's token: an HMAC over (this browser's secret, the transaction id)."""
    return mac(keys, _form_token_message(secret, txn))


def form_token_matches(keys: Keyring, secret: str, txn: str, candidate: str) -> bool:
    """Constant-time check of a submitted token, under any cookie key still in the ring."""
    return bool(candidate) and mac_matches(keys, _form_token_message(secret, txn), candidate)


# -- the origin of a consent POST (spec/security.md 31) ----------------------------------------------


def origin_of(url: str) -> str:
    """The ASCII serialisation of a URL's origin (RFC 6454 §6.2): scheme, host, non-default port."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    default = {"https": 443, "http": 80}.get(scheme)
    return f"{scheme}://{host}" if port is None or port == default else f"{scheme}://{host}:{port}"


def from_own_origin(req: Request, issuer_origin: str) -> bool:
    """True only for a request the browser says came from the proxy's own origin (or the user)."""
    site = req.header("sec-fetch-site")
    if site is not None:
        return site in _OWN_ORIGIN_SITES
    return req.header("origin") == issuer_origin


# -- the binding of the upstream leg (spec/security.md 11-13) ----------------------------------------


def binding_cookie(upstream_state: str) -> str:
    """The base name of the binding cookie of the approval that minted ``upstream_state``.

    One cookie per approval, so concurrent flows in one browser never overwrite each other's
    binding; named after a hash of the upstream ``state`` (64 of SHA-256's bits: a name, not a
    secret) because that is what the callback carries, so it finds the cookie, and clears it."""
    return f"{BROWSER}_{digest('binding|' + upstream_state)[:16]}"


def new_binding(
    random: RandomSource, upstream_state: str, *, secure: bool, max_age: int
) -> tuple[str, tuple[str, str]]:
    """A fresh binding (its hash is what the transaction stores) and the cookie that carries it."""
    value = new_secret(random, SECRET_BYTES)
    return value, set_cookie(binding_cookie(upstream_state), value, secure=secure, max_age=max_age)


def presented_binding(req: Request, cookie: str, secure: bool) -> str | None:
    """The value of the binding cookie ``cookie`` (``binding_cookie(state)``) this browser sent, if
    it has the binding's shape (it is then compared by hash, in states.py)."""
    value = req.cookie(cookie_name(cookie, secure))
    if value is None or not _BINDING_RE.fullmatch(value):
        return None
    return value
