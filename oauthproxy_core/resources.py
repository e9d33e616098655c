"""Resource indicators: the canonical form of a protected resource URI.

Implements RFC 8707 §2 ("The value of the resource parameter MUST be an absolute URI ... MUST NOT
include a fragment component") and the MCP authorization spec's "canonical server URI": lowercase
scheme and host, no default port, no trailing slash. The canonical resource becomes the audience of
every access token (spec/security.md 18; the incident: audience taken from the server base URL instead
of the resource, FastMCP CVE-2025-69196). Which characters, hosts, ports and paths a URI may
have, and where plain ``http`` is allowed (a loopback host), is decided in ``url_policy.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

from .errors import InvalidTargetError
from .url_policy import (
    bracketed_ipv6,
    dot_segment_problem,
    has_fragment,
    has_malformed_percent,
    has_userinfo,
    is_host_name,
    is_https_or_loopback,
    is_port,
    is_uri_text,
    scheme_of,
    split_authority,
)

__all__ = ["MAX_RESOURCE_LENGTH", "canonical_resource", "select_resource"]

MAX_RESOURCE_LENGTH = 2000

_DEFAULT_PORTS = {"https": 443, "http": 80}


def _host_and_port(authority: str) -> tuple[str, int | None]:
    if has_userinfo(authority):
        raise InvalidTargetError("resource must not contain userinfo")
    if authority.startswith("["):
        end = authority.find("]")
        address = bracketed_ipv6(authority[: end + 1]) if end >= 0 else None
        if address is None:
            raise InvalidTargetError("resource has a malformed IP literal")
        after = authority[end + 1 :]
        # The compressed form is the one canonical spelling of an IPv6 address (RFC 5952 §4).
        host = f"[{address.compressed}]"
        if after and not after.startswith(":"):
            raise InvalidTargetError("resource has a malformed authority")
        port_text = after[1:] if after else None
    else:
        name, sep, rest = authority.partition(":")
        host = name.lower()
        port_text = rest if sep else None
        if not is_host_name(host):
            raise InvalidTargetError("resource has an invalid host")
    if port_text is None:
        return host, None
    if not is_port(port_text):
        raise InvalidTargetError("resource has an invalid port")
    return host, int(port_text)


def _reject_dot_segments(path: str) -> None:
    # A resource with "/../" means another resource once resolved; refuse rather than resolve.
    problem = dot_segment_problem(path)
    if problem is not None:
        raise InvalidTargetError(f"resource {problem}")


# Long by nature: RFC 8707 §2 and RFC 3986 §6 normalisation: one branch per rule, in one pass.
def canonical_resource(value: str) -> str:
    """Return the canonical form of a resource URI or raise InvalidTargetError.

    ``https`` (or ``http`` on a loopback host, ``url_policy.is_loopback_host``), lowercase scheme and host,
    default port dropped, one trailing slash removed (a bare "/" path is dropped entirely), query
    kept verbatim. ``canonical_resource(canonical_resource(x)) == canonical_resource(x)``.
    """
    if not isinstance(value, str) or not value:
        raise InvalidTargetError("resource must be a non-empty string")
    if len(value) > MAX_RESOURCE_LENGTH:
        raise InvalidTargetError("resource is too long")
    if has_fragment(value):
        raise InvalidTargetError("resource must not contain a fragment")
    if not is_uri_text(value) or has_malformed_percent(value):
        raise InvalidTargetError("resource is not a valid absolute URI")
    split = scheme_of(value)
    if split is None or not split[1].startswith("//"):
        raise InvalidTargetError("resource must be an absolute URI")
    scheme = split[0].lower()
    if scheme not in _DEFAULT_PORTS:
        raise InvalidTargetError("resource must be an https URI")
    authority, rest = split_authority(split[1][2:])
    if not authority:
        raise InvalidTargetError("resource must have a host")
    host, port = _host_and_port(authority)
    if not is_https_or_loopback(scheme, host):
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
