"""Redirect URI registration predicate and matching (spec/security.md invariants 1 and 3).

Implements RFC 6749 §3.1.2 (absolute URI, no fragment), OAuth 2.1 §2.3 and §4.1.3 (exact string
matching of redirect URIs), RFC 8252 §7.1 (private-use URI schemes for native apps), §7.3 (loopback
redirects, where "the authorization server MUST allow any port to be specified at the time of the
request for loopback IP redirect URIs") and RFC 9700 §2.1 (no pattern matching, exact comparison).

A registered URI may carry a query (RFC 6749 §3.1.2: it "MUST be retained when adding additional
query parameters"), but not one that names a parameter of the authorization response itself
(``code``, ``state``, ``iss``, ``error``, ``error_description``, ``error_uri``; RFC 6749 §4.1.2,
§4.1.2.1, RFC 9207 §2): the response would then carry two of them, the client would read whichever
its parser prefers, and two ``iss`` values defeat the mix-up defence (spec/security.md 4).

The pieces of URL syntax and the loopback spellings come from ``url_policy.py``, which decides
them for every kind of URL; this module assembles the redirect URI's rule and does the matching.
Nothing here normalises a URI: the registered string is compared byte for byte with the requested
one. The predicate is deliberately narrower than RFC 3986 so that a URI it accepts means the same
thing to us, to the browser and to the client (the incidents behind it: ``javascript:`` accepted at
DCR, backslashes read as ``/`` by browsers in the authority, dot segments escaping a registered
path, ``fnmatch`` patterns crossing ``/``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from urllib.parse import unquote_plus

import attrs

from .errors import InvalidRedirectUriError
from .url_policy import (
    LOOPBACK_REDIRECT_HOSTS,
    bracketed_ipv6,
    dot_segment_problem,
    has_fragment,
    has_malformed_percent,
    has_userinfo,
    is_host_name,
    is_port,
    is_uri_text,
    scheme_of,
    split_authority,
)

__all__ = [
    "MAX_REDIRECT_URI_LENGTH",
    "is_acceptable_redirect_uri",
    "match_redirect_uri",
    "redirect_host",
    "redirect_uri_host",
    "validate_redirect_uri",
]

MAX_REDIRECT_URI_LENGTH = 2000

# RFC 8252 §7.1: "a URI scheme based on a domain name under their control, expressed in reverse
# order". At least one dot, non-empty labels, so no built-in browser scheme can qualify.
_PRIVATE_USE_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+\-]*(?:\.[A-Za-z0-9][A-Za-z0-9+\-]*)+")
# RFC 8252 §7.3: the port of these two may vary; of "localhost" only if the configuration allows.
_LOOPBACK_IP_HOSTS = LOOPBACK_REDIRECT_HOSTS - {"localhost"}
_LOCALHOST = "localhost"

#: What the proxy (or RFC 6749 §4.1.2.1) puts in the query of an authorization response.
_RESPONSE_PARAMETERS = frozenset(
    {"code", "state", "iss", "error", "error_description", "error_uri"}
)
#: Separators and name spellings that query parsers in the wild fold together: ";" was a separator
#: in Python before 3.9.2 and still is elsewhere; ASP.NET compares names case-insensitively; PHP turns
#: "." and " " into "_" and reads "code[]" as "code".
_QUERY_SEPARATORS = re.compile(r"[&;]")
_PHP_MANGLED = str.maketrans({".": "_", " ": "_"})

_APPLICATION_TYPE_NATIVE = "native"


@attrs.frozen(kw_only=True)
class _Parts:
    """A redirect URI split for comparison; every field is a verbatim slice of the input."""

    scheme: str
    host: str  # "" for private-use schemes without an authority
    port: str | None
    rest: str  # path and query, verbatim


def _fail(description: str) -> InvalidRedirectUriError:
    # Descriptions never echo the URI: it is attacker-chosen and ends up in logs and error pages.
    return InvalidRedirectUriError(description)


def _check_path(path: str) -> None:
    """Reject dot segments: ``https://good.example/cb/../evil`` resolved by a server or browser
    would be a URI that was never registered (``url_policy.dot_segment_problem``)."""
    problem = dot_segment_problem(path)
    if problem is not None:
        raise _fail(f"redirect_uri {problem}")


def _is_host_name(host: str) -> bool:
    # A fully qualified name's final dot (RFC 1034 §3.1) is tolerated: the URI is compared byte
    # for byte, so "client.example." matches only itself.
    return is_host_name(host.removesuffix("."))


def _check_query(query: str) -> None:
    """Reject a query that already names a parameter of the authorization response."""
    for pair in _QUERY_SEPARATORS.split(query):
        raw_name = pair.partition("=")[0]
        name = unquote_plus(raw_name, errors="replace") if raw_name else ""
        name = name.partition("[")[0].lower().translate(_PHP_MANGLED)
        if name in _RESPONSE_PARAMETERS:
            raise _fail("redirect_uri query must not carry authorization response parameters")


def _split_authority(authority: str) -> tuple[str, str | None]:
    if has_userinfo(authority):
        # "http://localhost@evil.com" goes to evil.com (RFC 3986 §3.2.1 userinfo).
        raise _fail("redirect_uri must not contain userinfo")
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            raise _fail("redirect_uri has a malformed IP literal")
        host, after = authority[: end + 1], authority[end + 1 :]
        if bracketed_ipv6(host) is None:
            raise _fail("redirect_uri has a malformed IP literal")
        if after and not after.startswith(":"):
            raise _fail("redirect_uri has a malformed authority")
        port = after[1:] if after else None
    else:
        host, sep, port_text = authority.partition(":")
        port = port_text if sep else None
        if not _is_host_name(host):
            raise _fail("redirect_uri has an invalid host")
    if port is not None and not is_port(port):
        raise _fail("redirect_uri has an invalid port")
    return host, port


# Long by nature: One rejection per dangerous form of a redirect URI (spec/security.md 3), in one
# pass over the string.
def _parse(uri: object, application_type: str) -> _Parts:  # noqa: C901, PLR0912
    if not isinstance(uri, str):
        raise _fail("redirect_uri must be a string")
    if not uri:
        raise _fail("redirect_uri must not be empty")
    if len(uri) > MAX_REDIRECT_URI_LENGTH:
        raise _fail("redirect_uri is too long")
    if "\\" in uri:
        # Browsers treat "\" as "/" in http(s) URLs (WHATWG URL), RFC 3986 parsers do not:
        # "http://127.0.0.1\@evil.com" is evil.com to a browser.
        raise _fail("redirect_uri must not contain backslashes")
    if has_fragment(uri):
        # RFC 6749 §3.1.2: "The endpoint URI MUST NOT include a fragment component."
        raise _fail("redirect_uri must not contain a fragment")
    if not is_uri_text(uri):
        raise _fail("redirect_uri contains whitespace, control or non-ASCII characters")
    if has_malformed_percent(uri):
        raise _fail("redirect_uri has malformed percent-encoding")
    split = scheme_of(uri)
    if split is None:
        # RFC 6749 §3.1.2: "The redirection endpoint URI MUST be an absolute URI".
        raise _fail("redirect_uri must be an absolute URI")
    scheme, after_scheme = split

    if scheme in ("http", "https"):
        # Lowercase only: "HTTP://..." would be the same URI to a browser but a different string
        # to the exact matcher, so we refuse it instead of storing two spellings.
        if not after_scheme.startswith("//"):
            raise _fail("redirect_uri must have a host")
        authority, rest = split_authority(after_scheme[2:])
        if not authority:
            raise _fail("redirect_uri must have a host")
        host, port = _split_authority(authority)
        if scheme == "http" and host not in LOOPBACK_REDIRECT_HOSTS:
            # OAuth 2.1 §2.3.1 / RFC 9700 §2.1: plain http only for loopback (RFC 8252 §7.3), in
            # the spellings url_policy.LOOPBACK_REDIRECT_HOSTS lists.
            raise _fail("http redirect_uri is allowed only on loopback")
        path, _, query = rest.partition("?")
        _check_path(path)
        _check_query(query)
        return _Parts(scheme=scheme, host=host, port=port, rest=rest)

    if not _PRIVATE_USE_SCHEME.fullmatch(scheme):
        # Covers javascript:, data:, file:, vbscript:, about:, blob:, ftp: and any other
        # single-label scheme a browser or OS may act on.
        raise _fail("redirect_uri scheme is not allowed")
    if application_type != _APPLICATION_TYPE_NATIVE:
        # RFC 8252 §7.1 private-use schemes are for native apps only.
        raise _fail("private-use URI schemes are allowed only for native clients")
    if not after_scheme:
        raise _fail("redirect_uri must have a path")
    host = ""
    rest = after_scheme
    if after_scheme.startswith("//"):
        authority, rest = split_authority(after_scheme[2:])
        if has_userinfo(authority):
            raise _fail("redirect_uri must not contain userinfo")
        # Same host syntax as for https: "com.example.app://.." must not slip a dot segment in
        # as an authority, nor a port or percent-encoding hide what the OS will dispatch on.
        if authority and not _is_host_name(authority):
            raise _fail("redirect_uri has an invalid host")
        host = authority
    path, _, query = rest.partition("?")
    _check_path(path)
    _check_query(query)
    return _Parts(scheme=scheme, host=host, port=None, rest=rest)


def validate_redirect_uri(uri: str, *, application_type: str = "web") -> str:
    """Return ``uri`` unchanged if it may be registered, else raise InvalidRedirectUriError.

    Accepts ``https`` URIs with a host, ``http`` on ``127.0.0.1``, ``[::1]`` or ``localhost``, and,
    only when ``application_type == "native"``, private-use schemes containing a dot (RFC 8252
    §7.1); never a query that names an authorization response parameter. Any other
    ``application_type`` is treated as ``"web"`` (the stricter one).
    """
    _parse(uri, application_type)
    return uri


@lru_cache(maxsize=4096)
def _native_parts(uri: str) -> _Parts | None:
    # The same few URIs are checked several times per flow (authorize, consent, callback, final
    # redirect); _parse is pure, so its verdict for a string can be remembered.
    try:
        return _parse(uri, _APPLICATION_TYPE_NATIVE)
    except InvalidRedirectUriError:
        return None


def is_acceptable_redirect_uri(uri: str) -> bool:
    """The registration predicate with the most permissive ``application_type``; never raises.

    Applied again at authorize, at consent and before the final redirect (spec/security.md 3).
    """
    return isinstance(uri, str) and _native_parts(uri) is not None


def _port_variable(parts: _Parts, *, allow_localhost_port: bool) -> bool:
    if parts.scheme != "http":
        return False
    return parts.host in _LOOPBACK_IP_HOSTS or (allow_localhost_port and parts.host == _LOCALHOST)


def match_redirect_uri(
    registered: Sequence[str], requested: str, *, allow_localhost_port: bool = True
) -> str | None:
    """Return the registered entry that ``requested`` matches, or None.

    OAuth 2.1 §4.1.3 / RFC 9700 §2.1: exact string comparison. The only tolerance is the port of
    an ``http`` loopback IP literal and, if ``allow_localhost_port``, of ``http://localhost``
    (RFC 8252 §7.3); scheme, host, path and query stay byte-identical.
    """
    wanted = _native_parts(requested) if isinstance(requested, str) else None
    if wanted is None:
        return None
    candidates = [entry for entry in registered if is_acceptable_redirect_uri(entry)]
    # An exact match wins over a port variant so the caller gets the most specific entry.
    for entry in candidates:
        if entry == requested:
            return entry
    if not _port_variable(wanted, allow_localhost_port=allow_localhost_port):
        return None
    for entry in candidates:
        parts = _native_parts(entry)
        if (
            parts is not None
            and parts.scheme == wanted.scheme
            and parts.host == wanted.host
            and parts.rest == wanted.rest
        ):
            return entry
    return None


def redirect_host(uri: str) -> str:
    """What the consent page shows as the redirect target (spec/security.md 17).

    ``host[:port]`` (host lowercased, as the browser reads it) for http(s); the scheme for
    private-use schemes, since the OS, not a host, decides which app receives it.
    """
    parts = _parse(uri, _APPLICATION_TYPE_NATIVE)
    if parts.scheme not in ("http", "https"):
        return parts.scheme
    host = parts.host.lower()
    return host if parts.port is None else f"{host}:{parts.port}"


def redirect_uri_host(uri: str) -> str | None:
    """The host an ``http(s)`` redirect URI delivers to, as written (an IPv6 literal keeps its
    brackets); ``None`` for a private-use scheme (RFC 8252 §7.1: the operating system, not a host,
    picks the receiving app) and for a URI the registration predicate refuses. What the
    ``[clients] redirect_hosts`` list is compared with (admission.py)."""
    parts = _native_parts(uri) if isinstance(uri, str) else None
    if parts is None or parts.scheme not in ("http", "https"):
        return None
    return parts.host
