"""Effects: the only ways a handler touches the outside world, as data.

A handler is a generator (spec/architecture.md, "handlers as generators of effects"): it yields one of the
effects below and is sent back its result. Drivers in ``oauthproxy_adapters.driver`` execute them
against a store, an HTTP client and a document fetcher. Keeping I/O as data is what lets a test
interleave two handlers at their yield points to reproduce races deterministically (psycopg 3's
generator pattern).

Store effects address a record by ``(kind, key)``. Values are opaque bytes produced by
``oauthproxy_core.codec``; the store also keeps an integer ``version`` beside each value, which
``CompareAndSet`` checks atomically. Every record has a TTL in whole seconds; a store never returns an
expired record.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import attrs

if TYPE_CHECKING:
    from .domain_events import DomainEvent


@attrs.frozen(kw_only=True)
class Stored:
    """A record as a store returns it."""

    value: bytes = attrs.field(repr=False)
    version: int


@attrs.frozen(kw_only=True)
class GetRecord:
    """Result: ``Stored | None``."""

    kind: str
    key: str


@attrs.frozen(kw_only=True)
class PutRecord:
    """Unconditional write (creates or replaces). Result: ``None``."""

    kind: str
    key: str
    value: bytes = attrs.field(repr=False)
    version: int
    ttl: int


@attrs.frozen(kw_only=True)
class TakeRecord:
    """Atomic get-and-delete: of N concurrent takes of one key at most one sees the value.

    Result: ``Stored | None``.
    """

    kind: str
    key: str


@attrs.frozen(kw_only=True)
class CompareAndSet:
    """Replace the record only if its stored version equals ``expected_version``.

    The new version is ``expected_version + 1``. Result: ``bool``. Of N concurrent compare-and-sets on
    one version at most one returns ``True``.
    """

    kind: str
    key: str
    expected_version: int
    value: bytes = attrs.field(repr=False)
    ttl: int


@attrs.frozen(kw_only=True)
class DeleteRecord:
    """Result: ``None``. Deleting an absent record is not an error."""

    kind: str
    key: str


def header_value(headers: tuple[tuple[str, str], ...], name: str) -> str | None:
    """The first value of header ``name`` (case-insensitive), or ``None``."""
    lname = name.lower()
    for k, v in headers:
        if k.lower() == lname:
            return v
    return None


_SENSITIVE_HEADERS = frozenset({"authorization", "cookie", "set-cookie", "proxy-authorization"})


def _redacted(headers: tuple[tuple[str, str], ...]) -> str:
    shown = [(k, "<redacted>" if k.lower() in _SENSITIVE_HEADERS else v) for k, v in headers]
    return repr(tuple(shown))


@attrs.frozen(kw_only=True)
class HttpRequest:
    """An outgoing HTTP request to the upstream provider (or a metadata document)."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...] = attrs.field(default=(), repr=_redacted)
    body: bytes = attrs.field(default=b"", repr=False)
    timeout: float = 10.0
    max_response_bytes: int = 1 << 20


@attrs.frozen(kw_only=True)
class HttpResponse:
    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = attrs.field(default=b"", repr=False)

    def header(self, name: str) -> str | None:
        return header_value(self.headers, name)


@attrs.frozen(kw_only=True)
class HttpFailure:
    """The call produced no usable response: ``timeout``, ``connect``, ``too_large``, ``protocol``."""

    reason: str


@attrs.frozen(kw_only=True)
class HttpCall:
    """Result: ``HttpResponse | HttpFailure``. Drivers never raise for transport errors."""

    request: HttpRequest


@attrs.frozen(kw_only=True)
class FetchDocument:
    """GET a public JSON document named by a client (spec/security.md 23). Result: ``HttpResponse |
    HttpFailure``.

    A Client ID Metadata Document (``purpose`` ``client_metadata``) or a CIMD client's ``jwks_uri``
    (``jwks``): URLs chosen by whoever sends a ``client_id``, so they must never reach the plain HTTP
    client. Only a driver given a document fetcher executes this effect (the fetcher resolves the
    host, refuses non-public addresses, pins the address it checked and never follows redirects); a
    driver without one answers ``HttpFailure(reason="refused")``. ``etag`` is sent as
    ``If-None-Match`` (RFC 9110 §13.1.2) to revalidate a stale cached copy.
    """

    url: str
    purpose: str
    timeout: float
    max_bytes: int
    etag: str | None = None


@attrs.frozen(kw_only=True)
class Emit:
    """Tell observers (audit log, metrics) that something happened. Result: ``None``.

    The only effect that touches nothing: a driver hands it to its observer, or drops it.
    """

    event: DomainEvent


StoreEffect: TypeAlias = GetRecord | PutRecord | TakeRecord | CompareAndSet | DeleteRecord
Effect: TypeAlias = StoreEffect | HttpCall | FetchDocument | Emit

T = TypeVar("T")

#: A handler (or a sub-generator used with ``yield from``): yields effects, is sent their results,
#: returns a ``T``. Like psycopg's ``PQGen``, so the type checker sees every yield.
Handler: TypeAlias = Generator[Effect, Any, T]
