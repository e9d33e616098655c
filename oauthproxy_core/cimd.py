"""Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document; MCP 2025-11-25).

A client that does not register sends an ``https`` URL as its ``client_id``; the document at that URL
is its registration. This module holds the pure rules and the one generator that fetches a document:

- the URL: the draft's §3 rules and the static half of spec/security.md 23 (no host of this machine,
  an IP-literal host must be a public address) are ``url_policy.document_url_problem``, with every
  other rule about URLs; this module applies it to the ``client_id`` and to ``jwks_uri``.
- ``client_from_document``: the draft's §4.1 rules for the document ("the client_id property MUST
  match the URL of the document", compared as strings; no shared secrets: ``client_secret`` and the
  ``client_secret_*`` methods are refused, and so is any private or symmetric key in ``jwks``), then
  the same metadata validation as dynamic registration (RFC 7591 §2, redirect URIs included).
- ``fetch_document``: a GET through the ``FetchDocument`` effect, cached in the store (kind ``"cimd"``,
  keyed by the URL's digest: documents are public, nothing is sealed) per the response's
  ``Cache-Control: max-age`` clamped to [60 s, 24 h] (5 min without one), revalidated with
  ``If-None-Match`` once stale, so every proxy instance sees the same document and a changed document is
  picked up after expiry. Fetches are budgeted per source (the requester's address prefix), per
  document host and in total (``Bounds.document_fetches_*``; spec/security.md 28, 35); when a budget is
  spent, or the fetcher has no resolver free, a stale cached copy is served rather than refusing a
  client that was seen before (RFC 9111 §4.2.4 lets a cache do so when it cannot reach the origin).

SSRF (spec/security.md 23). The core cannot resolve names, so the network policy lives in the adapter that
executes the fetch (``oauthproxy_adapters.safe_fetch``). A document fetch is its own effect,
``FetchDocument``, never an ``HttpCall``: drivers hand it only to the document fetcher they were
given, which resolves the host, refuses non-public addresses, pins the address it checked and never
follows redirects; a driver given none refuses it. The plain HTTP client never sees these URLs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from . import persistence
from .bounds import Bounds, Slot, per_source, take_slots
from .client_metadata import validate_client_metadata
from .crypto import digest
from .effects import FetchDocument, Handler, HttpFailure, HttpResponse
from .errors import OAuthError, TemporarilyUnavailableError
from .records import Client
from .untrusted_json import UntrustedJsonError, parse_json_object
from .url_policy import document_url_problem, is_loopback_host

__all__ = [
    "ALLOWED_AUTH_METHODS",
    "BUSY",
    "CLIENT_METADATA",
    "DEFAULT_TTL",
    "FETCH_TIMEOUT",
    "JWKS",
    "MAX_DOCUMENT_BYTES",
    "MAX_TTL",
    "MIN_TTL",
    "PRIVATE_JWK_MEMBERS",
    "CimdDocumentError",
    "all_loopback_redirects",
    "check_jwks",
    "client_from_document",
    "document_host",
    "fetch_document",
    "freshness",
    "looks_like_cimd",
]

#: ``FetchDocument.purpose`` values: a Client ID Metadata Document, a CIMD client's ``jwks_uri``.
CLIENT_METADATA, JWKS = "client_metadata", "jwks"
MAX_DOCUMENT_BYTES = 64 * 1024
FETCH_TIMEOUT = 5.0
MIN_TTL, DEFAULT_TTL, MAX_TTL = 60, 300, 24 * 3600
#: A stale document is kept this long beyond its freshness, for ``If-None-Match`` revalidation.
STALE_KEEP = 24 * 3600
MAX_KEYS = 10
ALLOWED_AUTH_METHODS = ("none", "private_key_jwt")
#: RFC 7517 §9.3 / RFC 7518 §6: members that make a JWK private (``k``: a symmetric key).
PRIVATE_JWK_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_KEY_TYPES = frozenset({"EC", "RSA", "OKP"})
#: ``HttpFailure.reason`` of a fetcher that refuses at once because its resolvers are all busy.
BUSY = "busy"


class CimdDocumentError(ValueError):
    """The URL or the document breaks a rule. The message names the rule, never a value."""


# --------------------------------------------------------------------------------------------------
# The URL


def looks_like_cimd(client_id: str, *, allow_loopback: bool = False) -> bool:
    """Whether ``client_id`` is meant as a metadata document URL (generated ids never hold ``:``)."""
    return client_id.startswith("https://") or (allow_loopback and client_id.startswith("http://"))


def document_host(url: str) -> str:
    """The verified part of a CIMD client's identity: ``host[:port]`` of its document URL."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    return host if parts.port is None else f"{host}:{parts.port}"


def all_loopback_redirects(redirect_uris: tuple[str, ...]) -> bool:
    """Whether every redirect URI is ``http`` on this machine (localhost, 127.0.0.1, [::1])."""

    def loopback(uri: str) -> bool:
        try:
            parts = urlsplit(uri)
            return parts.scheme == "http" and is_loopback_host(parts.hostname)
        except ValueError:
            return False

    return bool(redirect_uris) and all(loopback(u) for u in redirect_uris)


# --------------------------------------------------------------------------------------------------
# The document


def _check_jwks(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or not isinstance(value.get("keys"), list):
        raise CimdDocumentError("jwks must be a JWK Set")
    keys = value["keys"]
    if not keys or len(keys) > MAX_KEYS:
        raise CimdDocumentError("jwks must hold between 1 and 10 keys")
    for key in keys:
        if not isinstance(key, dict):
            raise CimdDocumentError("jwks entries must be objects")
        if PRIVATE_JWK_MEMBERS & set(key):
            # The draft, §4.1: a metadata document is public; a private or symmetric key in it is
            # compromised by publication.
            raise CimdDocumentError("jwks must not contain private or symmetric keys")
        if key.get("kty") not in _KEY_TYPES:
            raise CimdDocumentError("jwks keys must be EC, RSA or OKP public keys")
    return value


def check_jwks(value: Any) -> dict[str, Any]:
    """``value`` if it is a JWK Set of 1 to ``MAX_KEYS`` EC, RSA or OKP public keys, else
    ``CimdDocumentError``: the rule for a CIMD document's ``jwks``, also applied to a
    pre-registered client's (``[[clients.static]] jwks``)."""
    return _check_jwks(value)


# Long by nature: One branch per document member the draft constrains (§4.1): splitting it would
# scatter the checks of one record.
def client_from_document(  # noqa: C901, PLR0912
    document: Mapping[str, Any],
    url: str,
    *,
    now: int,
    supported_scopes: tuple[str, ...] | None = None,
    allow_loopback: bool = False,
) -> Client:
    """The ``Client`` a metadata document describes, or ``CimdDocumentError``.

    The document's metadata passes the same validation as a registration request (RFC 7591 §2),
    with two differences: ``token_endpoint_auth_method`` defaults to ``none`` (a published document
    cannot hold a shared secret, so ``client_secret_basic``, RFC 7591's default, is impossible) and
    may only be ``none`` or ``private_key_jwt``; ``client_name`` is required (the consent page needs a
    name, and a document without one is most likely not a client's).
    """
    problem = document_url_problem(url, allow_loopback=allow_loopback)
    if problem is not None:
        raise CimdDocumentError(problem)
    if not isinstance(document, Mapping):
        raise CimdDocumentError("the document is not a JSON object")
    if document.get("client_id") != url:
        raise CimdDocumentError("the document's client_id differs from its URL")
    if "client_secret" in document:
        raise CimdDocumentError("the document must not contain client_secret")
    method = document.get("token_endpoint_auth_method", "none")
    if method not in ALLOWED_AUTH_METHODS:
        raise CimdDocumentError("token_endpoint_auth_method must be none or private_key_jwt")
    name = document.get("client_name")
    if not isinstance(name, str) or not name.strip():
        raise CimdDocumentError("client_name is required")
    if "redirect_uris" not in document:
        raise CimdDocumentError("redirect_uris is required")
    jwks = document.get("jwks")
    jwks_uri = document.get("jwks_uri")
    if jwks is not None and jwks_uri is not None:
        # RFC 7591 §2: "The jwks_uri and jwks parameters MUST NOT both be present".
        raise CimdDocumentError("jwks and jwks_uri must not both be present")
    keys: list[tuple[str, str]] = []
    if jwks is not None:
        keys.append(("jwks", json.dumps(_check_jwks(jwks), sort_keys=True)))
    if jwks_uri is not None:
        if not isinstance(jwks_uri, str) or document_url_problem(
            jwks_uri, allow_loopback=allow_loopback
        ):
            raise CimdDocumentError("jwks_uri must be an https URL with a path")
        keys.append(("jwks_uri", json.dumps(jwks_uri)))
    if method == "private_key_jwt" and not keys:
        raise CimdDocumentError("private_key_jwt needs jwks or jwks_uri")
    rest = {
        k: v
        for k, v in document.items()
        if k not in ("client_id", "jwks", "jwks_uri", "client_secret_expires_at")
    }
    rest["token_endpoint_auth_method"] = method
    try:
        meta = validate_client_metadata(rest, auth_methods=ALLOWED_AUTH_METHODS)
    except OAuthError as err:
        raise CimdDocumentError(err.description or err.error) from None
    scope = meta.scope
    if supported_scopes is not None:
        # A public document may list scopes of other servers; only ours can ever be granted.
        scope = tuple(s for s in scope if s in supported_scopes)
    echo = meta.to_json_dict()
    echo["client_id"] = url
    metadata = [(k, json.dumps(v, sort_keys=True)) for k, v in echo.items()]
    return Client(
        client_id=url,
        token_endpoint_auth_method=meta.token_endpoint_auth_method,
        redirect_uris=meta.redirect_uris,
        grant_types=meta.grant_types,
        scope=scope,
        client_name=meta.client_name,
        application_type=meta.application_type,
        source="cimd",
        metadata=tuple(sorted(metadata + keys)),
        issued_at=now,
    )


# --------------------------------------------------------------------------------------------------
# Fetching and caching


def freshness(cache_control: str | None) -> int:
    """Seconds a fetched document stays fresh: ``max-age`` clamped to [MIN_TTL, MAX_TTL].

    No header: ``DEFAULT_TTL``. ``no-store``/``no-cache``: ``MIN_TTL`` (we must keep the document
    at least for the flow that fetched it; a minute bounds how often a client can make us fetch).
    """
    if not cache_control:
        return DEFAULT_TTL
    ttl: int | None = None
    for directive in cache_control.lower().split(","):
        name, _, value = directive.strip().partition("=")
        if name in ("no-store", "no-cache"):
            return MIN_TTL
        if name == "max-age":
            value = value.strip().strip('"')
            if value.isdigit():
                ttl = int(value[:12])
    if ttl is None:
        return DEFAULT_TTL
    return max(MIN_TTL, min(MAX_TTL, ttl))


def _is_json(response: HttpResponse) -> bool:
    ctype = (response.header("content-type") or "").split(";", 1)[0].strip().lower()
    return ctype == "application/json"


def _cache_key(purpose: str, url: str) -> str:
    return digest(purpose + "|" + url)


def _load_entry(raw: bytes | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        # The proxy's own cache record (its document passed parse_json_object when fetched).
        entry = json.loads(raw)
    except ValueError:
        return None
    if (
        not isinstance(entry, dict)
        or not isinstance(entry.get("doc"), dict)
        or not isinstance(entry.get("fresh_until"), int)
    ):
        return None
    return entry


def _store_entry(
    key: str, doc: dict[str, Any], etag: str | None, ttl: int, now: int
) -> Handler[None]:
    entry = {"v": 1, "doc": doc, "etag": etag, "fresh_until": now + ttl, "fetched_at": now}
    value = json.dumps(entry, separators=(",", ":"), sort_keys=True).encode()
    yield from persistence.put_raw("cimd", key, value, ttl + STALE_KEEP)


def fetch_document(
    url: str,
    *,
    now: int,
    purpose: str = CLIENT_METADATA,
    bounds: Bounds | None = None,
    source: str = "",
) -> Handler[dict[str, Any] | None]:
    """The JSON object at ``url`` (a CIMD document or a JWK Set), from the cache or fetched.

    Returns ``None`` when it cannot be had (network failure, non-200, not ``application/json``, too
    large, not an object). A fetch is counted against ``source`` (the requester's address prefix),
    the document's host and the total of ``bounds``; when one is spent, or the fetcher answers
    ``busy``, a stale cached copy is returned if there is one, else the bound's 429 (the source's
    own budget) or 503 ``temporarily_unavailable`` (a shared one) is raised. Validation is the
    caller's.
    """
    b = bounds or Bounds()
    key = _cache_key(purpose, url)
    entry = _load_entry((yield from persistence.get_raw("cimd", key)))
    if entry is not None and entry["fresh_until"] > now:
        return dict(entry["doc"])
    window = b.document_fetch_window
    slots = (
        Slot("cimd-fetch-address", per_source(source), b.document_fetches_per_address, window),
        Slot("cimd-fetch", document_host(url), b.document_fetches_per_host, window, shared=True),
        Slot("cimd-fetch", "*", b.document_fetches_total, window, shared=True),
    )
    if entry is None:
        yield from take_slots(slots, now=now)  # spent: the caller's 429, or 503 if shared
    else:
        try:
            yield from take_slots(slots, now=now)
        except OAuthError:
            return dict(entry["doc"])  # stale, but the client was valid when last fetched
    etag = entry.get("etag") if entry is not None else None
    result = yield FetchDocument(
        url=url,
        purpose=purpose,
        timeout=FETCH_TIMEOUT,
        max_bytes=MAX_DOCUMENT_BYTES,
        etag=etag if isinstance(etag, str) and etag else None,
    )
    if isinstance(result, HttpFailure) and result.reason == BUSY:
        if entry is not None:
            return dict(entry["doc"])
        raise TemporarilyUnavailableError("metadata documents cannot be fetched now", retry_after=1)
    if isinstance(result, HttpFailure) or not isinstance(result, HttpResponse):
        return None
    ttl = freshness(result.header("cache-control"))
    if result.status == 304 and entry is not None:
        # RFC 9111 §4.3.4: a 304 freshens the stored response; the document is unchanged.
        new_etag = result.header("etag") or etag
        yield from _store_entry(key, entry["doc"], _short(new_etag), ttl, now)
        return dict(entry["doc"])
    if result.status != 200 or not _is_json(result) or len(result.body) > MAX_DOCUMENT_BYTES:
        return None
    try:
        doc = parse_json_object(result.body, max_bytes=MAX_DOCUMENT_BYTES)
    except UntrustedJsonError:
        return None
    yield from _store_entry(key, doc, _short(result.header("etag")), ttl, now)
    return doc


def _short(etag: str | None) -> str | None:
    if not etag or len(etag) > 256:
        return None
    return etag
