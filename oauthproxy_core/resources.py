"""Resource indicators: the canonical form of a protected resource URI.

Implements RFC 8707 §2 ("The value of the resource parameter MUST be an absolute URI ... MUST NOT
include a fragment component") and the MCP authorization spec's "canonical server URI": lowercase
scheme and host, no default port, no trailing slash. The canonical resource becomes the audience of
every access token (spec/security.md 18; the incident: audience taken from the server base URL instead
of the resource, FastMCP CVE-2025-69196).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from urllib.parse import unquote

from .errors import InvalidTargetError

__all__ = ["MAX_RESOURCE_LENGTH", "canonical_resource", "select_resource"]

MAX_RESOURCE_LENGTH = 2000

# RFC 3986 §2 characters without "#" (fragments are forbidden) and without "\" (read as "/" by
# browsers); refuses whitespace, controls and non-ASCII.
_URI_CHARS = re.compile(r"[A-Za-z0-9\-._~:/?\[\]@!$&'()*+,;=%]*")
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*)://")
_REG_NAME = re.compile(r"[a-z0-9_\-]+(?:\.[a-z0-9_\-]+)*")
_PORT = re.compile(r"[0-9]{1,5}")
_DEFAULT_PORTS = {"https": 443, "http": 80}
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "[::1]", "localhost"})


def _host_and_port(authority: str) -> tuple[str, int | None]:
    if "@" in authority:
        raise InvalidTargetError("resource must not contain userinfo")
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            raise InvalidTargetError("resource has a malformed IP literal")
        literal, after = authority[1:end], authority[end + 1 :]
        if "%" in literal:
            # ipaddress accepts scope ids ("fe80::1%eth0"); a resource never carries one.
            raise InvalidTargetError("resource has a malformed IP literal")
        try:
            address = ipaddress.IPv6Address(literal)
        except ValueError:
            raise InvalidTargetError("resource has a malformed IP literal") from None
        # The compressed form is the one canonical spelling of an IPv6 address (RFC 5952 §4).
        host = f"[{address.compressed}]"
        if after and not after.startswith(":"):
            raise InvalidTargetError("resource has a malformed authority")
        port_text = after[1:] if after else None
    else:
        name, sep, rest = authority.partition(":")
        host = name.lower()
        port_text = rest if sep else None
        if not _REG_NAME.fullmatch(host):
            raise InvalidTargetError("resource has an invalid host")
    if port_text is None:
        return host, None
    if not _PORT.fullmatch(port_text) or not 1 <= int(port_text) <= 65535:
        raise InvalidTargetError("resource has an invalid port")
    return host, int(port_text)


def _reject_dot_segments(path: str) -> None:
    # A resource with "/../" means another resource once resolved; refuse rather than resolve.
    decoded = unquote(path)
    for candidate in (path, decoded):
        if any(segment in (".", "..") for segment in candidate.split("/")):
            raise InvalidTargetError("resource must not contain dot segments")


# Long by nature: RFC 8707 §2 and RFC 3986 §6 normalisation: one branch per rule, in one pass.
def canonical_resource(value: str) -> str:  # noqa: C901, PLR0912
    """Return the canonical form of a resource URI or raise InvalidTargetError.

    ``https`` (or ``http`` on ``127.0.0.1``, ``[::1]``, ``localhost``), lowercase scheme and host,
    default port dropped, one trailing slash removed (a bare "/" path is dropped entirely), query
    kept verbatim. ``canonical_resource(canonical_resource(x)) == canonical_resource(x)``.
    """
    if not isinstance(value, str) or not value:
        raise InvalidTargetError("resource must be a non-empty string")
    if len(value) > MAX_RESOURCE_LENGTH:
        raise InvalidTargetError("resource is too long")
    if "#" in value:
        raise InvalidTargetError("resource must not contain a fragment")
    if not _URI_CHARS.fullmatch(value) or _BAD_PERCENT.search(value):
        raise InvalidTargetError("resource is not a valid absolute URI")
    match = _SCHEME.match(value)
    if match is None:
        raise InvalidTargetError("resource must be an absolute URI")
    scheme = match.group(1).lower()
    if scheme not in _DEFAULT_PORTS:
        raise InvalidTargetError("resource must be an https URI")
    hier = value[match.end() :]
    cut = len(hier)
    for delimiter in "/?":
        position = hier.find(delimiter)
        if 0 <= position < cut:
            cut = position
    authority, rest = hier[:cut], hier[cut:]
    if not authority:
        raise InvalidTargetError("resource must have a host")
    host, port = _host_and_port(authority)
    if scheme == "http" and host not in _LOOPBACK_HOSTS:
        raise InvalidTargetError("http resource is allowed only on loopback")
    path, question, query = rest.partition("?")
    _reject_dot_segments(path)
    if "//" in path:
        # Empty segments would make "remove one trailing slash" non-idempotent ("/a//" -> "/a/"
        # -> "/a"), and a canonical form that changes when applied twice cannot be compared.
        raise InvalidTargetError("resource must not contain empty path segments")
    if path == "/":
        path = ""
    elif path.endswith("/"):
        path = path[:-1]
    netloc = host if port is None or port == _DEFAULT_PORTS[scheme] else f"{host}:{port}"
    return f"{scheme}://{netloc}{path}{question}{query}"


def select_resource(requested: str | None, allowed: Sequence[str]) -> str:
    """Pick the resource for a request (RFC 8707 §2).

    ``allowed`` holds already-canonical resources; the first is the default when the client sent
    none. A requested resource is canonicalised and must be one of ``allowed``.
    """
    if not allowed:
        raise InvalidTargetError("no resource is configured")
    if requested is None:
        return allowed[0]
    canonical = canonical_resource(requested)
    if canonical not in allowed:
        raise InvalidTargetError("resource is not served by this authorization server")
    return canonical
