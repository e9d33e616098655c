"""Which URLs the proxy accepts: every rule about the shape of a URL, decided here and nowhere else.

The proxy reads URLs of five kinds, and each kind has its own rule built from the same pieces:

- its own issuer, the ``base_url`` of ``proxy.toml`` (``issuer_problem``: RFC 8414 §2);
- a provider's endpoints (``provider_url_problem``: RFC 6749 §3.1, §3.2);
- a Client ID Metadata Document or a CIMD client's ``jwks_uri`` (``document_url_problem``:
  draft-ietf-oauth-client-id-metadata-document §3, and the static half of spec/security.md 23);
- a client's redirect URIs (``redirect_uris.py`` parses and matches them with the pieces below:
  RFC 6749 §3.1.2, RFC 8252 §7.3);
- a resource indicator (``resources.py`` canonicalises it with the pieces below: RFC 8707 §2).

And one kind of list: the operator's host lists of ``[clients]`` (``cimd_allowed_hosts``,
``cimd_denied_hosts``, ``redirect_hosts``; admission.py), whose entries are ``HostPattern`` values
compared with a URL's host in one canonical form (``canonical_host``).

The pieces, each one small pure function or constant:

- **loopback** (``is_loopback_host``): ``localhost``, or an IP literal in 127.0.0.0/8 or ``::1``
  (RFC 6890 §2.2.2, RFC 4291 §2.5.3). Where plain ``http`` is tolerated at all (an issuer, a
  provider, a resource, a document under the test policy) it is tolerated on exactly these hosts
  (``is_https_or_loopback``), because no network carries a request to them. Redirect URIs alone
  take a subset of spellings (``LOOPBACK_REDIRECT_HOSTS``), since they are compared as strings;
- **this machine** (``names_this_machine``): the loopback hosts and the ``.localhost`` names of
  RFC 6761 §6.3, which a document URL must not name outside the test policy;
- **public addresses** (``is_public_address``, ``address_allowed``): what a fetched document's
  host may be or resolve to (spec/security.md 23);
- **no fragment** (``has_fragment``, RFC 3986 §3.5) and **no userinfo** (``has_userinfo``, RFC 3986
  §3.2.1) for every kind of URL;
- the syntax the parsers share: the characters of RFC 3986 §2 (``is_uri_text``,
  ``has_malformed_percent``) or, for URLs an operator writes, the characters no parser agrees about
  (``has_unsafe_characters``); the end of the authority (``split_authority``, RFC 3986 §3.2); a
  host name (``is_host_name``), an IPv6 literal (``bracketed_ipv6``), a port (``is_port``); dot
  segments, also percent-encoded (``dot_segment_problem``, RFC 3986 §5.2.4).

A ``*_problem`` function returns ``None`` for an acceptable value, else the rule it breaks in
words: the issuer, provider and dot-segment rules as a predicate ("must not contain a fragment")
that the caller puts after the value's name, the document rule as a sentence about the
``client_id`` URL. The text never quotes the value: it may be attacker-chosen and end up in logs
and error pages.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import SplitResult, unquote, urlsplit

import attrs

__all__ = [
    "LOOPBACK_REDIRECT_HOSTS",
    "MAX_DOCUMENT_URL_LENGTH",
    "MAX_HOST_LENGTH",
    "HostPattern",
    "IPAddress",
    "address_allowed",
    "bracketed_ipv6",
    "canonical_host",
    "document_url_problem",
    "dot_segment_problem",
    "has_fragment",
    "has_malformed_percent",
    "has_unsafe_characters",
    "has_userinfo",
    "is_host_name",
    "is_https_or_loopback",
    "is_loopback_address",
    "is_loopback_host",
    "is_port",
    "is_public_address",
    "is_uri_text",
    "issuer_problem",
    "names_this_machine",
    "parse_host_pattern",
    "provider_url_problem",
    "scheme_of",
    "split_authority",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_DOCUMENT_URL_LENGTH = 2000

# --------------------------------------------------------------------------------------------------
# Characters

# RFC 3986 §2: unreserved, reserved and "%". Anything else (space, controls, non-ASCII, quotes,
# angle brackets, backslash, braces, "|", "^", "`") is not part of a URI; a browser would repair
# it in its own way, so we refuse instead of guessing what it will do.
_URI_CHARS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*")
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
# Whitespace (Unicode's too), C0 controls, DEL and backslash.
_UNSAFE = re.compile(r"[\s\x00-\x1f\x7f\\]")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
# DNS-style host names only: no percent-encoding (which would hide e.g. U+3002, a dot lookalike).
_HOST_NAME = re.compile(r"[A-Za-z0-9_\-]+(?:\.[A-Za-z0-9_\-]+)*")
_PORT = re.compile(r"[0-9]{1,5}")


def is_uri_text(value: str) -> bool:
    """Whether ``value`` holds only the characters RFC 3986 §2 allows in a URI."""
    return _URI_CHARS.fullmatch(value) is not None


def has_malformed_percent(value: str) -> bool:
    """Whether a ``%`` is not followed by two hex digits (RFC 3986 §2.1 percent-encoding)."""
    return _BAD_PERCENT.search(value) is not None


def has_unsafe_characters(value: str) -> bool:
    """Whitespace, a control character or a backslash: parsers disagree about each.

    The check for URLs an operator writes (the issuer, provider endpoints), looser than
    ``is_uri_text``: the WHATWG URL parser strips or rewrites these, RFC 3986 parsers do not, so the
    URL would point somewhere else depending on who reads it.
    """
    return _UNSAFE.search(value) is not None


# --------------------------------------------------------------------------------------------------
# Components


def scheme_of(uri: str) -> tuple[str, str] | None:
    """``(scheme, rest)`` for ``scheme ":" rest`` (RFC 3986 §3.1, case kept), else ``None``."""
    match = _SCHEME.match(uri)
    if match is None:
        return None
    return match.group(1), uri[match.end() :]


def split_authority(hier: str) -> tuple[str, str]:
    """``(authority, rest)`` of what follows ``//``: RFC 3986 §3.2, the authority "is terminated
    by the next slash ("/"), question mark ("?"), or number sign ("#") character"."""
    cut = len(hier)
    for delimiter in "/?#":
        position = hier.find(delimiter)
        if 0 <= position < cut:
            cut = position
    return hier[:cut], hier[cut:]


def has_fragment(url: str) -> bool:
    """Whether ``url`` has a fragment, even an empty one (RFC 3986 §3.5: ``#`` starts it).

    RFC 6749 §3.1.2 (redirection endpoint), §3.1 and §3.2 (authorization and token endpoints), RFC
    8414 §2 (issuer), RFC 8707 §2 (resource) and the metadata-document draft §3 forbid it.
    """
    return "#" in url


def has_userinfo(authority: str) -> bool:
    """Whether an authority carries userinfo (RFC 3986 §3.2.1), even an empty one.

    Refused for every URL: ``http://localhost@evil.example`` goes to evil.example, credentials do not
    belong in a URL (RFC 3986 §3.2.1: "deprecated"), and the draft §3 forbids it for documents.
    """
    return "@" in authority


def is_host_name(host: str) -> bool:
    """A DNS-style name (RFC 3986 §3.2.2 reg-name narrowed): dot-separated labels of letters,
    digits, ``-`` and ``_``, without percent-encoding or a final dot."""
    return _HOST_NAME.fullmatch(host) is not None


def bracketed_ipv6(host: str) -> ipaddress.IPv6Address | None:
    """The address of an RFC 3986 §3.2.2 IP-literal ``[...]`` holding an IPv6 address, else
    ``None``; refuses a zone identifier (RFC 6874: no redirect, resource or issuer has one) and
    IPvFuture."""
    if not (host.startswith("[") and host.endswith("]")) or "%" in host:
        return None
    try:
        return ipaddress.IPv6Address(host[1:-1])
    except ValueError:
        return None


def is_port(text: str) -> bool:
    """A port written as 1 to 5 digits naming 1 to 65535 (RFC 3986 §3.2.3; 0 names no server)."""
    return _PORT.fullmatch(text) is not None and 1 <= int(text) <= 65535


def dot_segment_problem(path: str) -> str | None:
    """Refuse dot segments (RFC 3986 §5.2.4), also percent-encoded (``%2e``) or hidden behind
    ``%2f``/``%5c``, so that no server or browser resolving them reaches another path.

    Decodes up to three times, so double encoding (``%252e``) cannot smuggle one either, and
    strictly: overlong UTF-8 (``%c0%ae``) is ``.`` to a lenient decoder (the IIS dot-segment
    traversal, CVE-2000-0884).
    """
    decoded = path
    for _ in range(3):
        if any(segment in (".", "..") for segment in re.split(r"[/\\]", decoded)):
            return "must not contain dot segments"
        try:
            again = unquote(decoded, errors="strict")
        except UnicodeDecodeError:
            return "has malformed percent-encoding"
        if again == decoded:
            return None
        decoded = again
    # Still changing after three rounds: nobody writes that legitimately.
    return "has excessive percent-encoding"


# --------------------------------------------------------------------------------------------------
# Hosts and addresses

#: The spellings of loopback a redirect URI may use: RFC 8252 §7.3 names ``127.0.0.1`` and
#: ``[::1]``, §8.3 tolerates ``localhost``. Each is a loopback host (``is_loopback_host``); the other
#: spellings of the same addresses ("127.1", "[0:0::1]") are refused because redirect URIs are
#: compared as raw strings (RFC 9700 §2.1), and one address must not have several.
LOOPBACK_REDIRECT_HOSTS = frozenset({"127.0.0.1", "[::1]", "localhost"})


def _ip_literal(host: str) -> IPAddress | None:
    """The address a host names as an IP literal, bracketed or not; ``None`` for a name."""
    if host.startswith("["):
        return bracketed_ipv6(host)
    if "%" in host:
        return None  # a zone identifier: no URL of ours carries one
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def is_loopback_address(ip: IPAddress) -> bool:
    """Whether a packet to ``ip`` stays on this machine: 127.0.0.0/8 (RFC 6890 §2.2.2), ``::1``
    (RFC 4291 §2.5.3), or an IPv4-mapped form of the former (RFC 4291 §2.5.5.2).

    For resolved addresses (the document fetcher). A URL's host is judged by ``is_loopback_host``.
    """
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def is_loopback_host(host: str | None) -> bool:
    """The one definition of a loopback host in a URL: ``localhost`` (any case), or an IP literal in
    127.0.0.0/8 or ``::1``, bracketed or not (``urlsplit`` removes the brackets).

    Where plain ``http`` is allowed, it is allowed on these hosts and no other (OAuth 2.1 §1.5, RFC
    8252 §7.3, and the "potentially trustworthy" hosts of W3C Secure Contexts). Not included: IPv4-mapped
    spellings (Python 3.13 started calling ``::ffff:127.0.0.1`` loopback, 3.11 does not; the rule
    must not depend on the interpreter) and ``*.localhost`` names (RFC 6761 §6.3 asks resolvers
    to answer them with loopback, but not every resolver does).
    """
    if not host:
        return False
    if host.isascii() and host.lower() == "localhost":
        return True
    ip = _ip_literal(host)
    if ip is None:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return False
    return ip.is_loopback


def names_this_machine(host: str) -> bool:
    """A loopback host, or a name under ``.localhost`` (RFC 6761 §6.3): a host a fetched document
    must not name outside the test policy (spec/security.md 23)."""
    lowered = host.lower()
    return is_loopback_host(host) or lowered.endswith(".localhost")


def is_https_or_loopback(scheme: str, host: str | None) -> bool:
    """``https``, or plain ``http`` on a loopback host (``is_loopback_host``), where no network
    carries the request. OAuth 2.1 §1.5 requires TLS for every endpoint; RFC 6749 §3.1 and §3.2
    because the endpoints carry credentials "in clear-text"."""
    return scheme == "https" or (scheme == "http" and is_loopback_host(host))


# Special-purpose ranges (RFC 6890 registries) refused explicitly, whatever the Python version's
# ``ipaddress`` tables say about them.
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_BLOCKED_V4 = tuple(
    ipaddress.IPv4Network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
    )
)
_BLOCKED_V6 = tuple(
    ipaddress.IPv6Network(n)
    for n in (
        "::/96",
        "100::/64",
        "2001:db8::/32",
        "fc00::/7",
        "fe80::/10",
        "fec0::/10",
        "ff00::/8",
    )
)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for: IPv4-mapped, 6to4, Teredo client, NAT64."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    for net in _NAT64:
        if ip in net:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    # IPv4-compatible (::a.b.c.d, deprecated by RFC 4291 §2.5.5.1): ::/96 is reserved anyway.
    return None


def _plain_public(ip: IPAddress) -> bool:
    if (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_unspecified
        or ip.is_reserved
        or not ip.is_global
    ):
        return False
    if isinstance(ip, ipaddress.IPv4Address):
        return not any(ip in net for net in _BLOCKED_V4)
    if any(ip in net for net in _BLOCKED_V6):
        return False
    return ip.scope_id is None  # fe80::1%eth0 style zone ids only occur on link-local


def is_public_address(ip: IPAddress) -> bool:
    """True only for a globally routable unicast address, also through every IPv4 embedding.

    Refused (spec/security.md 23): private (RFC 1918, ULA fc00::/7), loopback, link-local, CGNAT
    (100.64/10), multicast, unspecified, reserved and documentation ranges, and the IPv4-mapped,
    NAT64 (64:ff9b::/96, 64:ff9b:1::/48), 6to4 (2002::/16) and Teredo forms of any of them.
    """
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_ipv4(ip)
        if inner is not None:
            # The wrapper prefixes are not "global" in Python's registry view for every version;
            # what the packet reaches is the embedded IPv4 address.
            return _plain_public(inner)
    return _plain_public(ip)


def address_allowed(ip: IPAddress, *, allow_loopback: bool) -> bool:
    """The fetch policy (spec/security.md 23): public addresses, plus loopback (only) under the
    test policy."""
    if is_public_address(ip):
        return True
    return allow_loopback and is_loopback_address(ip)


# --------------------------------------------------------------------------------------------------
# Whole URLs


def _url_parts(url: str) -> SplitResult | None:
    """``urlsplit`` with its port checked (a number from 1 to 65535), else ``None``."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    return None if port == 0 else parts


def _http_url(url: str) -> SplitResult | str:
    """The parts of an absolute ``http(s)`` URL with a host that an operator or a provider wrote,
    else the rule it breaks (the common start of the issuer and provider rules)."""
    if has_unsafe_characters(url):
        return "must not contain spaces, control characters or backslashes"
    parts = _url_parts(url)
    if parts is None:
        return "is not a valid URL"
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return "must be an absolute https URL"
    return parts


def provider_url_problem(url: object) -> str | None:
    """``None`` if ``url`` may be a provider endpoint, else the rule it breaks.

    Every URL the proxy calls or sends a browser to on the provider's side (authorization, token,
    UserInfo, JWK Set, OIDC discovery): ``https``, or ``http`` on a loopback host
    (``is_https_or_loopback``; RFC 6749 §3.1 and §3.2, and the UserInfo and JWK Set endpoints
    carry access tokens or decide whose identity is accepted); no fragment (RFC 6749 §3.1, §3.2);
    no userinfo (credentials belong in the token request, and a host after an ``@`` misleads the
    reader); no whitespace, control characters or backslashes. ``oauthproxy serve`` adds an opt-in
    on top (``[upstream] allow_insecure_http``) before any ``http`` URL.
    """
    if not isinstance(url, str) or not url:
        return "must be an absolute https URL"
    parts = _http_url(url)
    if isinstance(parts, str):
        return parts
    if not is_https_or_loopback(parts.scheme, parts.hostname):
        return "http is allowed only on a loopback host"
    if has_fragment(url):
        return "must not contain a fragment"
    if has_userinfo(parts.netloc):
        return "must not contain userinfo"
    return None


def issuer_problem(url: object) -> str | None:
    """``None`` if ``url`` may be the proxy's issuer (``base_url``), else the rule it breaks.

    RFC 8414 §2: "a URL that uses the "https" scheme and has no query or fragment components"; plain
    ``http`` on a loopback host for development and tests (``is_https_or_loopback``). No userinfo,
    and no trailing slash: the issuer must be byte-identical in the metadata, the protected
    resource metadata and every RFC 9207 ``iss``, and clients derive it without the slash
    (spec/interop.md, "Discovery").
    """
    if not isinstance(url, str) or not url:
        return "must be an absolute https URL"
    parts = _http_url(url)
    if isinstance(parts, str):
        return parts
    if not is_https_or_loopback(parts.scheme, parts.hostname):
        return "must be https (http only on a loopback host)"
    if has_userinfo(parts.netloc):
        return "must not contain userinfo"
    if "?" in url or has_fragment(url):
        return "must not have a query or fragment"
    if url.endswith("/"):
        return "must not end with '/'"
    return None


# Long by nature: One early return per rule of the metadata-document draft §3 (scheme, host, path,
# no query or fragment, ...): a flat list of checks reads as the spec does.
def document_url_problem(url: object, *, allow_loopback: bool = False) -> str | None:  # noqa: C901, PLR0911, PLR0912
    """``None`` if ``url`` may be a Client ID Metadata Document URL, else the rule it breaks.

    The metadata-document draft §3: "MUST use the https scheme", "MUST contain a path component",
    "MUST NOT contain single-dot or double-dot path segments", "MUST NOT contain a fragment", "MUST
    NOT contain a username or password"; a query "SHOULD NOT" be used: we refuse it. And the static
    half of spec/security.md 23: the host does not name this machine (``names_this_machine``), an
    IP-literal host is a public address. ``allow_loopback`` (tests and local development) admits
    this machine, and plain ``http`` on a loopback host (``is_https_or_loopback``). The same rule
    holds for a CIMD client's ``jwks_uri``, the other document fetched for a client.
    """
    if not isinstance(url, str) or not url or len(url) > MAX_DOCUMENT_URL_LENGTH:
        return "the client_id URL is empty or too long"
    if not is_uri_text(url) or has_malformed_percent(url):
        return "the client_id URL contains characters outside RFC 3986"
    if has_fragment(url):
        return "the client_id URL must not contain a fragment"
    if "?" in url:
        return "the client_id URL must not contain a query"
    scheme, sep, rest = url.partition("://")
    if not sep or not rest:
        return "the client_id is not an absolute URL"
    authority, path = split_authority(rest)
    if has_userinfo(authority):
        return "the client_id URL must not contain userinfo"
    parts = _url_parts(url)
    if parts is None:
        return "the client_id URL has an invalid port"
    host = parts.hostname or ""
    if not host:
        return "the client_id URL has no host"
    literal = _ip_literal(host)
    if literal is None and not is_host_name(host):
        return "the client_id URL has an invalid host"
    if authority.startswith("[") != (literal is not None and literal.version == 6):
        return "the client_id URL has an invalid host"
    if scheme != "https" and not (allow_loopback and is_https_or_loopback(scheme, host)):
        return "the client_id URL must use https"
    if names_this_machine(host) and not allow_loopback:
        return "the client_id URL must not point to this machine"
    if literal is not None and not address_allowed(literal, allow_loopback=allow_loopback):
        return "the client_id URL must name a public address"
    if path in ("", "/"):
        return "the client_id URL must contain a path"
    problem = dot_segment_problem(path)
    if problem is not None:
        return f"the client_id URL {problem}"
    return None


# --------------------------------------------------------------------------------------------------
# Host patterns: the entries of an operator's host list

#: RFC 1035 §2.3.4: a name is at most 255 octets on the wire, 253 characters written out.
MAX_HOST_LENGTH = 253
# The WHATWG URL parser's "ends in a number" rule: a last label of digits, or 0x and hex digits, makes
# a browser read the whole host as an IPv4 address ("127.1", "0x7f.1"), whatever it looks like.
_NUMERIC_LABEL = re.compile(r"[0-9]+|0[xX][0-9A-Fa-f]*")


def canonical_host(host: str) -> str | None:
    """The one form in which a host is compared with a ``HostPattern``, or ``None`` for a host that no
    pattern can name: an allow list then refuses it and a deny list counts it as denied (fail closed).

    A host name is lowered (RFC 4343: DNS names compare without regard to case) and loses one final
    dot (RFC 1034 §3.1: ``example.com.`` is the same fully qualified name; redirect URIs may carry it,
    redirect_uris.py); an IP literal, bracketed or not, becomes its address's standard text (RFC 5952
    §4 for IPv6). Refused: whatever ``is_host_name`` refuses, so percent-encoding, an empty label and
    every non-ASCII character (an internationalised name is compared in its A-label ``xn--`` form,
    the only form a URL the proxy accepts can carry it in); a zone identifier; a name longer than
    ``MAX_HOST_LENGTH``; and a name whose last label is a number but which is not a dotted-quad IPv4
    address (``127.1``, ``0x7f.0.0.1``), since a browser reads those as addresses.
    """
    if not isinstance(host, str) or not host:
        return None
    name = host.removesuffix(".")
    if name.startswith("[") or ":" in name:
        inner = name[1:-1] if name.startswith("[") and name.endswith("]") else name
        if "%" in inner or "[" in inner or "]" in inner:
            return None
        try:
            return str(ipaddress.IPv6Address(inner))
        except ValueError:
            return None
    if len(name) > MAX_HOST_LENGTH or not is_host_name(name):
        return None
    if _NUMERIC_LABEL.fullmatch(name.rsplit(".", 1)[-1]):
        try:
            return str(ipaddress.IPv4Address(name))
        except ValueError:
            return None
    return name.lower()


@attrs.frozen
class HostPattern:
    """One entry of an operator's host list (``[clients]``; admission.py), in canonical form.

    ``claude.ai`` names that host only; ``127.0.0.1`` or ``::1`` (also written ``[::1]``) that
    address only; ``*.vscode.dev`` names every host one or more labels below ``vscode.dev``
    (``insiders.vscode.dev``, ``a.b.vscode.dev``), never ``vscode.dev`` itself and never a host that
    merely ends in the same characters (``evilvscode.dev``): the comparison is by whole labels. Build
    one with ``parse_host_pattern``.
    """

    #: The canonical text: a name or an address without brackets, or ``*.`` and a name.
    text: str

    @property
    def wildcard(self) -> bool:
        return self.text.startswith("*.")

    def covers(self, canonical: str) -> bool:
        """Whether this pattern names ``canonical``, a host already in ``canonical_host`` form."""
        if self.wildcard:
            base = self.text[1:]  # ".vscode.dev": at least one whole label must come before it
            return canonical.endswith(base) and len(canonical) > len(base)
        return canonical == self.text

    def matches(self, host: str) -> bool:
        """Whether this pattern names ``host`` (as a URL carries it); never for a host that has no
        canonical form."""
        canonical = canonical_host(host)
        return canonical is not None and self.covers(canonical)

    def __str__(self) -> str:
        return self.text


def parse_host_pattern(text: object) -> HostPattern:
    """The ``HostPattern`` an operator wrote, or ``ValueError`` saying which rule it breaks.

    Accepted: a host name, an IP address (IPv6 with or without brackets), or ``*.`` followed by a host
    name of at least two labels (``*.dev`` would admit a whole top-level domain). Case and one final
    dot do not matter. Refused: a scheme, port, path or userinfo (a pattern names a host, nothing
    else); a ``*`` anywhere but as the whole first label; non-ASCII (write the A-label, ``xn--...``,
    which is what URLs carry); and whatever ``canonical_host`` refuses.
    """
    if not isinstance(text, str) or not text:
        raise ValueError("must be a non-empty string")
    if not text.isascii():
        raise ValueError(
            f"{text!r} is not ASCII: write an internationalised name in its A-label (xn--) form"
        )
    wildcard = text.startswith("*.")
    rest = text[2:] if wildcard else text
    if "*" in rest:
        raise ValueError(f"{text!r}: '*' may only be the whole first label, as in *.example.com")
    canonical = canonical_host(rest)
    if canonical is None:
        raise ValueError(
            f"{text!r} is not a host name or an IP address (no scheme, port or path; an IPv4 "
            "address as four decimal numbers)"
        )
    if not wildcard:
        return HostPattern(canonical)
    if _ip_literal(canonical) is not None:
        raise ValueError(f"{text!r}: a wildcard stands for names, not addresses")
    if "." not in canonical:
        raise ValueError(
            f"{text!r}: a wildcard needs at least two labels after '*.', as in *.example.com"
        )
    return HostPattern("*." + canonical)
