"""Which clients may come in: the operator's ``[clients]`` admission policy, and its decisions.

Three kinds of clients reach the proxy (client_lookup.py): pre-registered ones from the
configuration, Client ID Metadata Document clients (draft-ietf-oauth-client-id-metadata-document:
an ``https`` URL as ``client_id``) and dynamically registered ones (RFC 7591). Out of the box
registration is open (RFC 7591 §3: no initial access token is asked for) and a metadata document
from any public host is accepted. ``ClientAdmission`` narrows that down:

- ``dcr = false``: no dynamic registration. ``POST /register`` and the RFC 7592 management URIs
  answer 404 ``not_found`` with a description saying so (RFC 7591 defines no error for a server
  that does not register, and the MCP SDKs fall back to ``<origin>/register`` when the metadata
  names no ``registration_endpoint``, so a precise answer there matters), the RFC 8414 metadata
  names no ``registration_endpoint``, and a client registered while registration was on is no
  longer admitted: the policy is applied every time a client is looked up, never only when it
  registered, so the configuration in force decides. Its next authorization, refresh or
  revocation is refused; the access tokens it already holds expire on their own (``[lifetimes]
  access_token``), or at once with ``oauthproxy grants revoke --client``.
- ``cimd_allowed_hosts``: when set, only a metadata document whose URL's host one of these
  patterns names is fetched; ``cimd_denied_hosts``: never one such a pattern names (a host on both
  lists is denied). Decided from the URL before anything is fetched, so a refused host is never
  contacted and costs no fetch budget (spec/security.md 23, 35). A CIMD client's ``jwks_uri`` is
  not subject to these lists: the document names it, and the document's host is the identity
  (cimd.document_host).
- ``redirect_hosts``: when set, every redirect URI of every client must be ``http``/``https`` on a
  host one of these patterns names: at registration and RFC 7592 update (refused with
  ``invalid_client_metadata``), in a metadata document (the client is refused when looked up), for
  a static client (a configuration error), and for a registered client whose registration predates
  the list (refused when looked up). A private-use-scheme URI (RFC 8252 §7.1) names no host and is
  refused while the list is set. Ports are not part of the comparison (RFC 8252 §7.3: a loopback
  port is chosen at run time).

The patterns and their comparison are ``url_policy.HostPattern``: exact hosts, or ``*.`` below a
name of at least two labels, by whole labels, case-insensitive, one final dot ignored, IDNA names in
their A-label form; a host with no canonical form is refused by an allow list and counted as denied
by a deny list.

A refusal is a ``Refusal``: a machine word (``cause``, the audit log's and the metrics' label) and
fixed words for the client (``reason``), never the refused value, which the client chose.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import attrs

from .redirect_uris import redirect_uri_host
from .url_policy import HostPattern, canonical_host, parse_host_pattern

__all__ = [
    "CAUSES",
    "CIMD_DISABLED",
    "CIMD_HOST_DENIED",
    "CIMD_HOST_NOT_ALLOWED",
    "REDIRECT_HOST_NOT_ALLOWED",
    "REGISTRATION_CLOSED",
    "REGISTRATION_OFF",
    "ClientAdmission",
    "Refusal",
]

REGISTRATION_CLOSED = "registration_closed"
CIMD_DISABLED = "cimd_disabled"
CIMD_HOST_DENIED = "cimd_host_denied"
CIMD_HOST_NOT_ALLOWED = "cimd_host_not_allowed"
REDIRECT_HOST_NOT_ALLOWED = "redirect_host_not_allowed"

#: ``cause`` -> ``reason``: why a client is not admitted, in words a client may be shown.
CAUSES: dict[str, str] = {
    REGISTRATION_CLOSED: "dynamic client registration is turned off on this server, so clients it "
    "registered earlier are no longer admitted",
    CIMD_DISABLED: "this server does not accept client ID metadata documents",
    CIMD_HOST_DENIED: "this server does not accept client ID metadata documents from the host "
    "of this client_id",
    CIMD_HOST_NOT_ALLOWED: "the host of this client_id is not among the hosts whose client ID "
    "metadata documents this server accepts",
    REDIRECT_HOST_NOT_ALLOWED: "a redirect URI is not on a host this server allows for redirect "
    "URIs (http or https on a listed host)",
}

#: The description of the 404 at ``/register`` and ``/register/<id>`` while ``dcr`` is false.
REGISTRATION_OFF = (
    "dynamic client registration is not offered by this server: use a client ID metadata "
    "document (an https URL as client_id) or a pre-registered client_id"
)


@attrs.frozen
class Refusal:
    """Why the policy does not admit a client: ``cause`` is one of ``CAUSES``."""

    cause: str
    reason: str = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        if self.cause not in CAUSES:
            raise ValueError(f"unknown refusal cause {self.cause!r}")
        object.__setattr__(self, "reason", CAUSES[self.cause])


def _patterns(
    name: str, value: Iterable[Any] | None, *, empty_means: str
) -> tuple[HostPattern, ...] | None:
    """A host list as patterns; ``None`` (no list) stays ``None``."""
    if value is None:
        return None
    if isinstance(value, str):
        raise ValueError(f"{name}: must be a list of hosts, not one string")
    patterns: list[HostPattern] = []
    for entry in value:
        try:
            pattern = entry if isinstance(entry, HostPattern) else parse_host_pattern(entry)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
        if pattern not in patterns:
            patterns.append(pattern)
    if not patterns and empty_means:
        raise ValueError(f"{name}: an empty list {empty_means}")
    return tuple(patterns)


def _allowed(value: Iterable[Any] | None) -> tuple[HostPattern, ...] | None:
    return _patterns(
        "cimd_allowed_hosts",
        value,
        empty_means="admits no metadata document: set cimd = false instead",
    )


def _denied(value: Iterable[Any] | None) -> tuple[HostPattern, ...]:
    return _patterns("cimd_denied_hosts", value or (), empty_means="") or ()


def _redirects(value: Iterable[Any] | None) -> tuple[HostPattern, ...] | None:
    return _patterns(
        "redirect_hosts",
        value,
        empty_means="admits no redirect URI: leave the key out to allow every host",
    )


def _listed(host: str | None, patterns: tuple[HostPattern, ...]) -> bool:
    canonical = canonical_host(host) if host is not None else None
    return canonical is not None and any(p.covers(canonical) for p in patterns)


@attrs.frozen(kw_only=True)
class ClientAdmission:
    """The ``[clients]`` admission policy (module docstring), validated at construction: host lists
    are given as strings (or ``HostPattern`` values) and refused with a ``ValueError`` naming the
    key and the entry. ``None`` for an allow list means "no list": every host."""

    #: Serve dynamic client registration (RFC 7591) and RFC 7592 management.
    dcr: bool = True
    cimd_allowed_hosts: tuple[HostPattern, ...] | None = attrs.field(
        default=None, converter=_allowed
    )
    cimd_denied_hosts: tuple[HostPattern, ...] = attrs.field(default=(), converter=_denied)
    redirect_hosts: tuple[HostPattern, ...] | None = attrs.field(default=None, converter=_redirects)

    @property
    def any_document_host(self) -> bool:
        """Whether a metadata document from any (public) host is accepted."""
        return self.cimd_allowed_hosts is None and not self.cimd_denied_hosts

    def document_refusal(self, url: str) -> Refusal | None:
        """The refusal of a metadata document URL by its host, or ``None``. ``url`` has passed
        ``url_policy.document_url_problem``; nothing has been fetched yet."""
        host = urlsplit(url).hostname
        if self.cimd_denied_hosts:
            canonical = canonical_host(host) if host is not None else None
            # A host no pattern can name might be any of them: a deny list fails closed.
            if canonical is None or any(p.covers(canonical) for p in self.cimd_denied_hosts):
                return Refusal(CIMD_HOST_DENIED)
        if self.cimd_allowed_hosts is not None and not _listed(host, self.cimd_allowed_hosts):
            return Refusal(CIMD_HOST_NOT_ALLOWED)
        return None

    def redirect_refusal(self, redirect_uris: Iterable[str]) -> Refusal | None:
        """The refusal of a client's redirect URIs by their hosts, or ``None``."""
        if self.redirect_hosts is None:
            return None
        for uri in redirect_uris:
            if not _listed(redirect_uri_host(uri), self.redirect_hosts):
                return Refusal(REDIRECT_HOST_NOT_ALLOWED)
        return None
