"""Prometheus metrics for the proxy (optional: the ``metrics`` extra, ``prometheus-client``).

Off unless asked for. ``oauthproxy serve`` exposes them at ``GET /metrics`` with ``[metrics]
enabled = true`` in ``proxy.toml`` (optionally behind a bearer token: ``bearer_token_env``). An
embedder builds one ``Metrics``, hands it to ``Proxy``/``AsyncProxy`` (``metrics=``) and mounts
``metrics.asgi_app()`` (or serves ``metrics.exposition()``) wherever its own operators can reach it.

``/metrics`` is operational data about every client of the proxy (how many flows, which errors):
do not publish it on the internet. Set a token, or keep the path unreachable from outside (block it
at the reverse proxy, or serve ``metrics.asgi_app()`` on a separate, private listener).

The series, all with bounded labels (no client id, no subject, no path or value taken from a
request, and never a secret):

==============================================  ===================================================
``oauthproxy_transitions_total``                the state changes the audit log records
                                                (``audit.record``), counted from the same domain
                                                events: ``event`` (``transaction``,
                                                ``client_registered``, ``grant_issued``,
                                                ``grant_rotated``, ``grant_revoked``,
                                                ``client_deleted``, ``client_refused``,
                                                ``token_issued``, ...), ``state`` (the
                                                transaction's new state; ``refused`` for
                                                ``client_refused``; for ``token_issued`` the grant
                                                type, ``client_credentials``; else empty) and
                                                ``outcome`` (``applied``, or ``conflict`` when a
                                                concurrent request won the compare-and-set)
``oauthproxy_errors_total``                     OAuth errors answered, by ``endpoint`` (the route's
                                                name in the core's route table, routes.py:
                                                ``token``, ``authorize``, ..., and ``resource``
                                                for bearer checks at the MCP path) and
                                                ``error`` (the RFC error code; ``other`` for any
                                                value outside the known set)
``oauthproxy_upstream_request_duration_seconds``  HTTP calls to the provider and document fetches
                                                (``FetchDocument``, by its purpose), by ``kind``
                                                (``token``, ``userinfo``, ``jwks``: the
                                                provider's or a client's ``jwks_uri``,
                                                ``client_metadata``, ``other``) and
                                                ``status_class`` (``2xx`` ... ``5xx``, or the
                                                failure: ``timeout``, ``connect``, ``too_large``,
                                                ``protocol``, ``refused``, ``failure``)
``oauthproxy_store_operation_duration_seconds``  store calls, by ``operation`` (``get``, ``put``,
                                                ``take``, ``compare_and_set``, ``delete``) and
                                                ``store`` (``memory``, ``sqlite``, ``redis``,
                                                ``postgres``, ``other``)
==============================================  ===================================================

Errors are read from the response the core produced (the JSON ``error`` member, the ``error``
parameter of a redirect to the client, or the code on a rendered error page), so every error path
is counted without the core knowing about metrics.
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from oauthproxy_core import AuthorizationServer, ProxyConfig, Response
from oauthproxy_core.bearer_header import BearerCredentials, is_token68
from oauthproxy_core.cimd import CLIENT_METADATA, JWKS
from oauthproxy_core.effects import (
    CompareAndSet,
    DeleteRecord,
    Emit,
    FetchDocument,
    GetRecord,
    HttpCall,
    HttpFailure,
    HttpRequest,
    HttpResponse,
    PutRecord,
    TakeRecord,
)
from oauthproxy_core.errors import OAuthError

from . import audit
from .asgi import bearer_of
from .driver import Observer

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
STORE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
UPSTREAM_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_FAILURES = frozenset({"timeout", "connect", "too_large", "protocol", "refused"})
_PAGE_CODE = re.compile(rb"<code>([a-z_]{1,64})</code>")

_STORE_OPERATIONS: dict[type, str] = {
    GetRecord: "get",
    PutRecord: "put",
    TakeRecord: "take",
    CompareAndSet: "compare_and_set",
    DeleteRecord: "delete",
}


def _error_codes() -> frozenset[str]:
    """Every error code the proxy can answer with: the ``error`` of each OAuthError subclass."""
    codes: set[str] = set()
    pending: list[type[Any]] = [OAuthError]
    while pending:
        cls = pending.pop()
        code = getattr(cls, "error", None)
        if isinstance(code, str):
            codes.add(code)
        pending.extend(cls.__subclasses__())
    return frozenset(codes)


def _store_type(store: object) -> str:
    name = type(store).__name__.lower()
    for kind in ("memory", "sqlite", "redis", "postgres"):
        if kind in name:
            return kind
    return "other"


def _status_class(result: HttpResponse | HttpFailure) -> str:
    if isinstance(result, HttpResponse):
        return f"{result.status // 100}xx" if 100 <= result.status <= 599 else "failure"
    return result.reason if result.reason in _FAILURES else "failure"


class Metrics:
    """One set of proxy metrics in its own ``CollectorRegistry`` (never the process-global one).

    ``registry`` may be given to share one with the embedding application; one ``Metrics`` can serve
    several proxies (their series add up).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.transitions = Counter(
            "oauthproxy_transitions_total",
            "State changes of transactions, clients and grants (the audit events).",
            ("event", "state", "outcome"),
            registry=self.registry,
        )
        self.errors = Counter(
            "oauthproxy_errors_total",
            "OAuth errors answered, by endpoint and RFC error code.",
            ("endpoint", "error"),
            registry=self.registry,
        )
        self.upstream_seconds = Histogram(
            "oauthproxy_upstream_request_duration_seconds",
            "Duration of HTTP calls to the upstream provider and of metadata document fetches.",
            ("kind", "status_class"),
            buckets=UPSTREAM_BUCKETS,
            registry=self.registry,
        )
        self.store_seconds = Histogram(
            "oauthproxy_store_operation_duration_seconds",
            "Duration of record store operations.",
            ("operation", "store"),
            buckets=STORE_BUCKETS,
            registry=self.registry,
        )
        self._codes = _error_codes()

    # -- exposition ------------------------------------------------------------------------------
    def exposition(self) -> bytes:
        """The Prometheus text format of every series (``CONTENT_TYPE`` is its media type)."""
        return generate_latest(self.registry)

    def asgi_app(self, *, bearer_token: str | None = None) -> Callable[..., Awaitable[None]]:
        """An ASGI endpoint answering any GET with the exposition (see ``MetricsEndpoint``).

        Raises ``ValueError`` for a ``bearer_token`` that is not an RFC 6750 b64token.
        """
        return MetricsEndpoint(self, bearer_token=bearer_token)

    # -- flows -----------------------------------------------------------------------------------
    def observer(
        self,
        *,
        audit_log: bool = True,
        store: object | None = None,
        config: ProxyConfig | None = None,
    ) -> Observer:
        """A driver observer: counts the domain events (and, with ``audit_log``, writes the audit
        log from the same ``audit.record``, so counters and log never disagree), and times store
        operations (labelled by ``store``'s type) and HTTP calls (by ``config``'s upstream
        endpoints) from the durations the driver measures.
        """
        transitions = self.transitions
        store_kind = _store_type(store) if store is not None else "other"
        by_operation = {
            cls: self.store_seconds.labels(operation=op, store=store_kind).observe
            for cls, op in _STORE_OPERATIONS.items()
        }
        classify = _upstream_kinds(config) if config is not None else (lambda _req: "other")
        upstream = self.upstream_seconds

        def observe(effect: Any, result: Any, seconds: float) -> None:
            t = type(effect)
            timed = by_operation.get(t)
            if timed is not None:
                timed(seconds)
            elif t is HttpCall:
                upstream.labels(
                    kind=classify(effect.request), status_class=_status_class(result)
                ).observe(seconds)
            elif t is FetchDocument:
                # Labelled by what the core asked for; an unknown purpose cannot grow the label set.
                kind = effect.purpose if effect.purpose in _DOCUMENT_KINDS else "other"
                upstream.labels(kind=kind, status_class=_status_class(result)).observe(seconds)
            elif t is Emit:
                line = audit.record(effect.event)
                transitions.labels(
                    event=line["event"],
                    # A token_issued line names its grant type (a fixed set) in the state label.
                    state=line.get("state") or line.get("grant_type") or "",
                    outcome=line.get("outcome", "applied"),
                ).inc()
                if audit_log and audit.enabled():
                    audit.emit(line)

        return observe

    # -- errors ----------------------------------------------------------------------------------
    def endpoint_names(self, server: AuthorizationServer) -> Callable[[str], str | None]:
        """``path -> endpoint name`` for ``server`` (its route table); ``None`` for a path it does
        not serve."""
        return server.routes.name_of

    def _code(self, code: object) -> str:
        return code if isinstance(code, str) and code in self._codes else "other"

    def count_error(self, endpoint: str, code: object) -> None:
        self.errors.labels(endpoint=endpoint, error=self._code(code)).inc()

    def count_response(self, endpoint: str, resp: Response) -> None:
        """Count ``resp`` if it answers an error (see the module docstring)."""
        code = error_code(resp)
        if code is not None:
            self.count_error(endpoint, code)


def error_code(resp: Response) -> str | None:
    """The OAuth error code ``resp`` answers with, or ``None`` for a successful response."""
    if 300 <= resp.status < 400:
        location = resp.header("location")
        if not location or "error=" not in location:
            return None
        error: str | None = None
        for name, value in parse_qsl(urlsplit(location).query, keep_blank_values=True):
            # The proxy appends its parameters after any query the registered URI carries.
            if name == "error":
                error = value
            elif name == "code":
                error = None
        return error
    if resp.status < 400:
        return None
    content_type = (resp.header("content-type") or "").lower()
    if content_type.startswith("application/json"):
        try:
            body = json.loads(resp.body)
        except ValueError:
            return "other"
        code = body.get("error") if isinstance(body, dict) else None
        return code if isinstance(code, str) else "other"
    if content_type.startswith("text/html"):
        match = _PAGE_CODE.search(resp.body)
        return match.group(1).decode() if match else "other"
    return "other"


#: ``FetchDocument.purpose`` values used as the ``kind`` label (the provider's own JWKS is ``jwks`` too).
_DOCUMENT_KINDS = frozenset({CLIENT_METADATA, JWKS})


def _upstream_kinds(config: ProxyConfig) -> Callable[[HttpRequest], str]:
    profile = config.upstream

    def base(url: str | None) -> str | None:
        return url.split("?", 1)[0] if url else None

    known = {
        base(profile.token_url): "token",
        base(profile.userinfo_url): "userinfo",
        base(profile.jwks_uri): "jwks",
    }
    known.pop(None, None)

    def classify(req: HttpRequest) -> str:
        return known.get(base(req.url), "other")

    return classify


class MetricsEndpoint:
    """ASGI: ``GET``/``HEAD`` -> the exposition; other methods 405.

    With ``bearer_token``, a request without ``Authorization: Bearer <that token>`` (read by
    ``bearer_header.parse_bearer``) gets 401; the token is compared in constant time. The response is
    never cached.
    """

    def __init__(self, metrics: Metrics, *, bearer_token: str | None = None) -> None:
        if bearer_token and not is_token68(bearer_token):
            # RFC 6750 §2.1: no client could present it as a Bearer credential.
            raise ValueError("the metrics bearer token must be an RFC 6750 b64token")
        self.metrics = metrics
        self._expected = bearer_token.encode() if bearer_token else None

    def authorized(self, credentials: BearerCredentials) -> bool:
        if self._expected is None:
            return True
        token = credentials.token
        return token is not None and hmac.compare_digest(token.encode(), self._expected)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        credentials = bearer_of(scope)
        headers = [(b"cache-control", b"no-store")]
        if scope["method"] not in ("GET", "HEAD"):
            status, body = 405, b"method not allowed"
            headers += [(b"allow", b"GET, HEAD"), (b"content-type", b"text/plain; charset=utf-8")]
        elif not self.authorized(credentials):
            status, body = 401, b"unauthorized"
            headers += [
                (b"www-authenticate", b'Bearer realm="metrics"'),
                (b"content-type", b"text/plain; charset=utf-8"),
            ]
        else:
            status, body = 200, self.metrics.exposition()
            headers.append((b"content-type", CONTENT_TYPE.encode()))
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send(
            {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body}
        )
