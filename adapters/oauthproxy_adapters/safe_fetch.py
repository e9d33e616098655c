"""SSRF-safe execution of the core's metadata-document fetches (spec/security.md 23).

The core asks for a Client ID Metadata Document (or a CIMD client's ``jwks_uri``) with its own
effect, ``oauthproxy_core.effects.FetchDocument``, which the drivers hand only to the ``fetch``
callable they were given, never to the upstream HTTP client; a deployment that forgets this executor
fails closed (every fetch is refused, the client is not found) instead of fetching attacker-chosen
URLs from inside the network::

    proxy = AsyncProxy(config, keys, store, AsyncHttpClient(), fetch=AsyncSafeFetcher())

For each request the fetcher, before any connection is made:

1. accepts only ``https`` (``http`` only under ``allow_loopback`` and only to loopback);
2. resolves the host (``socket.getaddrinfo`` on a ``ResolverPool`` thread; injectable) and refuses
   the request if
   *any* resolved address is not public (``oauthproxy_core.url_policy.address_allowed``: private, loopback,
   link-local, ULA, CGNAT, multicast, unspecified, reserved, and their IPv4-mapped, NAT64, 6to4 and
   Teredo forms), so numeric spellings (``2130706433``, ``0x7f.1``, ``0177.0.0.1``) are judged by the
   address they resolve to;
3. pins the checked address: the request goes to the IP-literal URL with ``Host`` and TLS SNI (and
   so certificate verification) for the original name, so a second DNS answer (rebinding) is never
   consulted; connections are not kept alive, so one pinned TLS session never serves another name.

Name resolution runs on threads of its own (``ResolverPool``), never on the event loop's default
executor: that pool also resolves the upstream provider's host name for every sign-in (httpx ->
anyio -> ``loop.getaddrinfo``), and document hosts are chosen by whoever sends a ``client_id``, so
name servers that never answer would otherwise stall every user's callback (spec/security.md 35). The
pool has ``lookups_in_flight`` threads (``[limits] document_lookups_in_flight``); a lookup that
finds them all busy fails at once with reason ``busy`` (``oauthproxy_core.cimd.BUSY``: the core
serves a stale cached document, else answers 503 ``temporarily_unavailable``), and a lookup holds
its thread until the resolver returns, not only until its caller stops waiting, so a resolver that
never answers holds at most the pool.

Then: no redirects (a 3xx is returned as is and the core rejects it), a size cap (64 KiB) read
incrementally, a timeout (5 s), no proxy from the environment, a 200 must be ``application/json``,
and only ``Accept`` and ``If-None-Match`` are sent. Failures are ``HttpFailure`` values (reason
``refused`` for a policy refusal); nothing raises into the handler.

``allow_loopback`` is for tests and local development only (``[clients] cimd_allow_loopback``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from urllib.parse import urlsplit, urlunsplit

import attrs
import httpx

from oauthproxy_core.bounds import Bounds
from oauthproxy_core.cimd import BUSY, FETCH_TIMEOUT, MAX_DOCUMENT_BYTES
from oauthproxy_core.effects import FetchDocument, HttpFailure, HttpResponse
from oauthproxy_core.url_policy import address_allowed, has_userinfo, is_loopback_address

from .http_clients import USER_AGENT

__all__ = [
    "AsyncSafeFetcher",
    "FetchPlan",
    "Resolver",
    "ResolverPool",
    "SyncSafeFetcher",
    "plan_fetch",
    "system_resolver",
]

#: ``resolver(host, port) -> addresses`` (IP strings). Raising ``OSError`` means "does not resolve".
Resolver = Callable[[str, int], Sequence[str]]


def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``getaddrinfo`` gives for ``host`` (A and AAAA), as strings."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


#: Default size of a fetcher's resolver pool: ``[limits] document_lookups_in_flight``.
LOOKUPS_IN_FLIGHT: int = Bounds().document_lookups_in_flight


class ResolverPool:
    """At most ``size`` name lookups at once, on ``size`` threads of their own; more fail at once.

    ``submit`` returns ``None`` instead of queueing when every thread is taken: a queued lookup
    would only wait behind slow ones until its caller's timeout. A lookup counts as in flight until
    the resolver returns, whether or not its caller still waits for it.
    """

    def __init__(self, size: int = LOOKUPS_IN_FLIGHT) -> None:
        if size < 1:
            raise ValueError("a resolver pool needs at least one thread")
        self.size = size
        self._executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="oauthproxy-dns")
        self._lock = threading.Lock()
        self._in_flight = 0

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def submit(self, resolver: Resolver, host: str, port: int) -> Future[Sequence[str]] | None:
        with self._lock:
            if self._in_flight >= self.size:
                return None
            self._in_flight += 1
        try:
            future = self._executor.submit(resolver, host, port)
        except RuntimeError:  # shut down
            self._release()
            return None
        future.add_done_callback(self._release)
        return future

    def _release(self, _future: object = None) -> None:
        with self._lock:
            self._in_flight -= 1

    def close(self) -> None:
        """Stop accepting lookups; a thread stuck in the resolver ends when the resolver returns."""
        self._executor.shutdown(wait=False, cancel_futures=True)


@attrs.frozen(kw_only=True)
class FetchPlan:
    """Where a checked request goes: the IP-literal URL, and the name for Host and SNI."""

    url: str
    host_header: str
    sni_hostname: str | None


def _target(url: str, *, allow_loopback: bool) -> tuple[str, str, int] | HttpFailure:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return HttpFailure(reason="refused")
    scheme, host = parts.scheme, parts.hostname
    if scheme not in ("https", "http") or not host or has_userinfo(parts.netloc):
        return HttpFailure(reason="refused")
    if scheme == "http" and not allow_loopback:
        return HttpFailure(reason="refused")
    return scheme, host, port or (443 if scheme == "https" else 80)


def plan_fetch(
    url: str, addresses: Sequence[str], *, allow_loopback: bool
) -> FetchPlan | HttpFailure:
    """Check resolved ``addresses`` for ``url`` and pin the first; pure (no I/O)."""
    target = _target(url, allow_loopback=allow_loopback)
    if isinstance(target, HttpFailure):
        return target
    scheme, host, port = target
    ips = []
    for text in addresses:
        try:
            ip = ipaddress.ip_address(text.split("%", 1)[0])
        except ValueError:
            return HttpFailure(reason="refused")
        # Every answer must pass: a name that also resolves to an internal address is refused
        # outright, whichever address a connection would have picked.
        if not address_allowed(ip, allow_loopback=allow_loopback):
            return HttpFailure(reason="refused")
        ips.append(ip)
    if not ips:
        return HttpFailure(reason="connect")
    if scheme == "http" and not all(is_loopback_address(ip) for ip in ips):
        return HttpFailure(reason="refused")  # plain http is only for loopback test documents
    pinned = ips[0]
    literal = f"[{pinned}]" if pinned.version == 6 else str(pinned)
    parts = urlsplit(url)
    default_port = 443 if scheme == "https" else 80
    netloc = literal if port == default_port else f"{literal}:{port}"
    host_header = _host_header(host, port, default_port)
    is_literal = _is_ip(host)
    return FetchPlan(
        url=urlunsplit((scheme, netloc, parts.path or "/", parts.query, "")),
        host_header=host_header,
        sni_hostname=None if is_literal or scheme == "http" else host,
    )


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _host_header(host: str, port: int, default_port: int) -> str:
    name = f"[{host}]" if ":" in host else host
    return name if port == default_port else f"{name}:{port}"


def _request_headers(doc: FetchDocument, plan: FetchPlan) -> list[tuple[str, str]]:
    headers = [("Accept", "application/json")]
    if doc.etag is not None:
        headers.append(("If-None-Match", doc.etag))
    headers.append(("Host", plan.host_header))
    headers.append(("User-Agent", USER_AGENT))
    return headers


def _extensions(plan: FetchPlan) -> dict[str, str]:
    return {"sni_hostname": plan.sni_hostname} if plan.sni_hostname else {}


def _finish(
    status: int, headers: Sequence[tuple[str, str]], body: bytes
) -> HttpResponse | HttpFailure:
    response = HttpResponse(status=status, headers=tuple(headers), body=body)
    if status == 200:
        ctype = (response.header("content-type") or "").split(";", 1)[0].strip().lower()
        if ctype != "application/json":
            return HttpFailure(reason="protocol")
    return response


def _client_kwargs(verify: bool | object) -> dict[str, object]:
    return {
        "verify": verify,
        "follow_redirects": False,
        "trust_env": False,  # an environment proxy would defeat address pinning
        "limits": httpx.Limits(max_connections=20, max_keepalive_connections=0),
    }


class SyncSafeFetcher:
    """Blocking: ``fetcher(document) -> HttpResponse | HttpFailure`` under the policy above."""

    def __init__(
        self,
        *,
        allow_loopback: bool = False,
        resolver: Resolver = system_resolver,
        client: httpx.Client | None = None,
        verify: bool | object = True,
        max_bytes: int = MAX_DOCUMENT_BYTES,
        timeout: float = FETCH_TIMEOUT,
        lookups_in_flight: int = LOOKUPS_IN_FLIGHT,
    ) -> None:
        self.allow_loopback = allow_loopback
        self.resolver = resolver
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.lookups = ResolverPool(lookups_in_flight)
        self._client = client or httpx.Client(**_client_kwargs(verify))  # type: ignore[arg-type]

    def plan(self, url: str) -> FetchPlan | HttpFailure:
        target = _target(url, allow_loopback=self.allow_loopback)
        if isinstance(target, HttpFailure):
            return target
        lookup = self.lookups.submit(self.resolver, target[1], target[2])
        if lookup is None:
            return HttpFailure(reason=BUSY)
        try:
            addresses = lookup.result(self.timeout)
        except (OSError, UnicodeError, ValueError, TimeoutError):
            return HttpFailure(reason="connect")
        return plan_fetch(url, addresses, allow_loopback=self.allow_loopback)

    def __call__(self, doc: FetchDocument) -> HttpResponse | HttpFailure:
        plan = self.plan(doc.url)
        if isinstance(plan, HttpFailure):
            return plan
        limit = min(self.max_bytes, doc.max_bytes)
        try:
            with self._client.stream(
                "GET",
                plan.url,
                headers=_request_headers(doc, plan),
                timeout=min(self.timeout, doc.timeout),
                extensions=_extensions(plan),
            ) as resp:
                body = bytearray()
                for chunk in resp.iter_bytes():
                    body += chunk
                    if len(body) > limit:
                        return HttpFailure(reason="too_large")
                return _finish(resp.status_code, list(resp.headers.items()), bytes(body))
        except httpx.TimeoutException:
            return HttpFailure(reason="timeout")
        except (httpx.ConnectError, httpx.NetworkError):
            return HttpFailure(reason="connect")
        except httpx.HTTPError:
            return HttpFailure(reason="protocol")

    def close(self) -> None:
        self._client.close()
        self.lookups.close()


class AsyncSafeFetcher:
    """asyncio: ``await fetcher(document) -> HttpResponse | HttpFailure`` under the policy above."""

    def __init__(
        self,
        *,
        allow_loopback: bool = False,
        resolver: Resolver = system_resolver,
        client: httpx.AsyncClient | None = None,
        verify: bool | object = True,
        max_bytes: int = MAX_DOCUMENT_BYTES,
        timeout: float = FETCH_TIMEOUT,
        lookups_in_flight: int = LOOKUPS_IN_FLIGHT,
    ) -> None:
        self.allow_loopback = allow_loopback
        self.resolver = resolver
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.lookups = ResolverPool(lookups_in_flight)
        self._client = client or httpx.AsyncClient(**_client_kwargs(verify))  # type: ignore[arg-type]

    async def plan(self, url: str) -> FetchPlan | HttpFailure:
        target = _target(url, allow_loopback=self.allow_loopback)
        if isinstance(target, HttpFailure):
            return target
        # Never asyncio.to_thread / loop.getaddrinfo: the default executor is the provider's too.
        lookup = self.lookups.submit(self.resolver, target[1], target[2])
        if lookup is None:
            return HttpFailure(reason=BUSY)
        try:
            # The timeout bounds how long this request waits; the thread is the pool's until the
            # resolver returns.
            addresses = await asyncio.wait_for(asyncio.wrap_future(lookup), self.timeout)
        except (OSError, UnicodeError, ValueError, TimeoutError):
            return HttpFailure(reason="connect")
        return plan_fetch(url, addresses, allow_loopback=self.allow_loopback)

    async def __call__(self, doc: FetchDocument) -> HttpResponse | HttpFailure:
        plan = await self.plan(doc.url)
        if isinstance(plan, HttpFailure):
            return plan
        limit = min(self.max_bytes, doc.max_bytes)
        try:
            async with self._client.stream(
                "GET",
                plan.url,
                headers=_request_headers(doc, plan),
                timeout=min(self.timeout, doc.timeout),
                extensions=_extensions(plan),
            ) as resp:
                body = bytearray()
                async for chunk in resp.aiter_bytes():
                    body += chunk
                    if len(body) > limit:
                        return HttpFailure(reason="too_large")
                return _finish(resp.status_code, list(resp.headers.items()), bytes(body))
        except httpx.TimeoutException:
            return HttpFailure(reason="timeout")
        except (httpx.ConnectError, httpx.NetworkError):
            return HttpFailure(reason="connect")
        except httpx.HTTPError:
            return HttpFailure(reason="protocol")

    async def aclose(self) -> None:
        await self._client.aclose()
        self.lookups.close()
