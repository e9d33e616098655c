"""SSRF-safe fetching (spec/security.md 23): every blocked range and encoding is refused BEFORE a
connection (injected resolver + connect spy), addresses are pinned (Host and SNI for the name), a real
loopback document server is reachable only under the test policy, and the routing keeps marked
requests away from the plain upstream client."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oauthproxy_adapters.driver import run, run_async
from oauthproxy_adapters.http_clients import SyncHttpClient
from oauthproxy_adapters.safe_fetch import (
    AsyncSafeFetcher,
    FetchPlan,
    SyncSafeFetcher,
    plan_fetch,
)
from oauthproxy_adapters.stores.memory import AsyncMemoryStore, MemoryStore
from oauthproxy_core import (
    AuthorizationServer,
    FetchDocument,
    Handler,
    HttpCall,
    HttpFailure,
    HttpRequest,
    HttpResponse,
)
from oauthproxy_core.cimd import BUSY, CLIENT_METADATA, FETCH_TIMEOUT, MAX_DOCUMENT_BYTES
from oauthproxy_core.client_lookup import load_client
from oauthproxy_core.url_policy import is_public_address
from tests.clients.support import REDIRECT, document
from tests.harness import Clock, keys, make_config

BLOCKED_V4 = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
]
BLOCKED_V6 = ["::1/128", "::/128", "fc00::/7", "fe80::/10", "ff00::/8", "2001:db8::/32"]


def _in(net: str) -> Any:
    network = ipaddress.ip_network(net)
    return st.integers(0, network.num_addresses - 1).map(lambda i: network[i])


blocked_v4 = st.sampled_from(BLOCKED_V4).flatmap(_in)
blocked_v6 = st.sampled_from(BLOCKED_V6).flatmap(_in)


def _encodings(ip: ipaddress.IPv4Address) -> list[str]:
    """Spellings getaddrinfo (inet_aton) resolves to ``ip``: dotted, decimal, hex, octal, short."""
    n = int(ip)
    a, b, c, d = ip.packed
    return [
        str(ip),
        str(n),
        hex(n),
        "0" + oct(n)[2:],
        ".".join("0" + oct(x)[2:] for x in (a, b, c, d)),
        ".".join(hex(x) for x in (a, b, c, d)),
        f"{a}.{(b << 16) | (c << 8) | d}",
        f"{a}.{b}.{(c << 8) | d}",
    ]


def _v6_forms(ip: ipaddress.IPv4Address) -> list[str]:
    n = int(ip)
    return [
        str(ipaddress.IPv6Address((0xFFFF << 32) | n)),  # IPv4-mapped
        str(ipaddress.IPv6Address((0x64FF9B << 96) | n)),  # NAT64 well-known prefix
        str(ipaddress.IPv6Address((0x2002 << 112) | (n << 80))),  # 6to4
    ]


class Spy:
    """A resolver answering a fixed list, and an httpx transport recording connections."""

    def __init__(self, answer: list[str]) -> None:
        self.answer = answer
        self.resolved: list[str] = []
        self.connections: list[httpx.Request] = []

    def resolver(self, host: str, port: int) -> list[str]:
        self.resolved.append(host)
        return self.answer

    def transport(self, request: httpx.Request) -> httpx.Response:
        self.connections.append(request)
        return httpx.Response(
            200, headers={"content-type": "application/json"}, content=b'{"ok": true}'
        )

    def fetcher(self, **kw: Any) -> SyncSafeFetcher:
        client = httpx.Client(transport=httpx.MockTransport(self.transport))
        return SyncSafeFetcher(resolver=self.resolver, client=client, **kw)


def _get(url: str, etag: str | None = None) -> FetchDocument:
    return FetchDocument(
        url=url,
        purpose=CLIENT_METADATA,
        timeout=FETCH_TIMEOUT,
        max_bytes=MAX_DOCUMENT_BYTES,
        etag=etag,
    )


@settings(max_examples=300)
@given(st.one_of(blocked_v4, blocked_v6), st.sampled_from([False, True]))
def test_blocked_resolved_addresses_are_refused_before_connecting(
    ip: Any, loopback_ok: bool
) -> None:
    if loopback_ok and ip.is_loopback:
        return  # the test policy admits loopback: covered below
    spy = Spy([str(ip)])
    result = spy.fetcher(allow_loopback=loopback_ok)(_get("https://client.example/c.json"))
    assert isinstance(result, HttpFailure) and result.reason == "refused"
    assert spy.connections == []


@settings(max_examples=200)
@given(blocked_v4)
def test_embedded_ipv4_forms_are_refused(ip: ipaddress.IPv4Address) -> None:
    for form in _v6_forms(ip):
        assert not is_public_address(ipaddress.ip_address(form)), form
        spy = Spy([form])
        result = spy.fetcher()(_get("https://client.example/c.json"))
        assert isinstance(result, HttpFailure) and spy.connections == [], form


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(["127.0.0.0/8", "10.0.0.0/8", "192.168.0.0/16", "169.254.0.0/16"]).flatmap(_in)
)
def test_numeric_host_spellings_resolve_to_the_blocked_address(ip: ipaddress.IPv4Address) -> None:
    """The real getaddrinfo resolves numeric spellings locally (inet_aton); each is refused."""
    for spelling in _encodings(ip):
        try:
            resolved = {i[4][0] for i in socket.getaddrinfo(spelling, 443, type=socket.SOCK_STREAM)}
        except socket.gaierror:
            continue  # this libc does not accept the spelling: it cannot reach the address either
        assert resolved == {str(ip)}, spelling
        spy = Spy([])
        fetcher = SyncSafeFetcher(
            client=httpx.Client(transport=httpx.MockTransport(spy.transport))
        )  # the real resolver
        result = fetcher(_get(f"https://{spelling}/c.json"))
        assert isinstance(result, HttpFailure) and result.reason == "refused", spelling
        assert spy.connections == []


def test_one_bad_answer_among_good_ones_refuses() -> None:
    spy = Spy(["93.184.216.34", "127.0.0.1"])
    assert isinstance(spy.fetcher()(_get("https://client.example/c.json")), HttpFailure)
    assert spy.connections == []


def test_public_address_is_pinned_with_host_and_sni() -> None:
    spy = Spy(["93.184.216.34"])
    result = spy.fetcher()(_get("https://client.example:8443/c.json", etag='"v1"'))
    assert isinstance(result, HttpResponse) and result.status == 200
    (req,) = spy.connections
    assert req.method == "GET"  # a document fetch cannot be anything else
    assert req.headers["accept"] == "application/json"
    assert req.headers["if-none-match"] == '"v1"'
    assert str(req.url) == "https://93.184.216.34:8443/c.json"
    assert req.headers["host"] == "client.example:8443"
    assert req.extensions["sni_hostname"] == "client.example"
    assert "x-oauthproxy-fetch" not in req.headers  # the marker is not sent
    plan = plan_fetch("https://client.example/c.json", ["2606:4700::1111"], allow_loopback=False)
    assert not isinstance(plan, HttpFailure) and plan.url == "https://[2606:4700::1111]/c.json"


def test_http_and_non_get_and_redirects() -> None:
    spy = Spy(["93.184.216.34"])
    assert isinstance(spy.fetcher()(_get("http://client.example/c.json")), HttpFailure)
    # http under the test policy: loopback answers only
    assert isinstance(
        spy.fetcher(allow_loopback=True)(_get("http://client.example/c.json")), HttpFailure
    )
    assert spy.connections == []

    def redirecting(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"location": "http://169.254.169.254/latest"})

    fetcher = SyncSafeFetcher(
        resolver=lambda h, p: ["93.184.216.34"],
        client=httpx.Client(transport=httpx.MockTransport(redirecting)),
    )
    result = fetcher(_get("https://client.example/c.json"))
    assert isinstance(result, HttpResponse) and result.status == 302  # not followed


def test_size_cap_and_content_type() -> None:
    def big(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, headers={"content-type": "application/json"}, content=b" " * 70_000
        )

    def html(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/html"}, content=b"{}")

    for handler, reason in ((big, "too_large"), (html, "protocol")):
        fetcher = SyncSafeFetcher(
            resolver=lambda h, p: ["93.184.216.34"],
            client=httpx.Client(transport=httpx.MockTransport(handler)),
        )
        result = fetcher(_get("https://client.example/c.json"))
        assert isinstance(result, HttpFailure) and result.reason == reason


def test_unresolvable_host_is_a_connect_failure() -> None:
    def fail(host: str, port: int) -> list[str]:
        raise socket.gaierror("no such host")

    fetcher = SyncSafeFetcher(resolver=fail)
    result = fetcher(_get("https://client.example/c.json"))
    assert isinstance(result, HttpFailure) and result.reason == "connect"


# --------------------------------------------------------------------------------------------------
# A real document server on loopback


class _DocHandler(BaseHTTPRequestHandler):
    documents: ClassVar[dict[str, bytes]] = {}

    def do_GET(self) -> None:
        body = self.documents.get(self.path)
        if body is None:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def doc_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _DocHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    url = base + "/client.json"
    _DocHandler.documents = {"/client.json": json.dumps(document(url=url)).encode()}
    try:
        yield url
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _context(allow_loopback: bool) -> Any:
    config = make_config(cimd_allow_loopback=allow_loopback)
    return AuthorizationServer(config, keys()).context(
        now=Clock().now, random=lambda n: b"\x01" * n
    )


def _resolve(url: str, *, allow_loopback: bool, http: Any, fetch: Any = None) -> Any:
    ctx = _context(allow_loopback)
    if fetch is None:
        return run(load_client(url, ctx), MemoryStore(), http)
    return run(load_client(url, ctx), MemoryStore(), http, fetch=fetch)


def test_loopback_document_server_under_the_test_policy(doc_server: str) -> None:
    fetcher = SyncSafeFetcher(allow_loopback=True)
    client = _resolve(doc_server, allow_loopback=True, http=SyncHttpClient(), fetch=fetcher)
    assert client is not None and client.client_id == doc_server
    assert client.redirect_uris == (REDIRECT,)


def test_default_policy_refuses_the_loopback_document_server(doc_server: str) -> None:
    # Even if the core's test policy were on, the default fetcher refuses loopback.
    calls: list[FetchDocument] = []
    fetcher = SyncSafeFetcher()

    def safe(doc: FetchDocument) -> HttpResponse | HttpFailure:
        result = fetcher(doc)
        calls.append(doc)
        assert isinstance(result, HttpFailure) and result.reason == "refused"
        return result

    assert _resolve(doc_server, allow_loopback=True, http=SyncHttpClient(), fetch=safe) is None
    assert len(calls) == 1
    # And with the default core policy nothing is fetched at all.
    assert _resolve(doc_server, allow_loopback=False, http=SyncHttpClient(), fetch=safe) is None
    assert len(calls) == 1


class _ServingHttp:
    """A plain HTTP client that would serve the document to anyone who asked it."""

    def __init__(self, url: str) -> None:
        self.body = json.dumps(document(url, redirect_uris=[REDIRECT])).encode()
        self.calls: list[HttpRequest] = []

    def __call__(self, req: HttpRequest) -> HttpResponse | HttpFailure:
        self.calls.append(req)
        ctype = (("Content-Type", "application/json"),)
        return HttpResponse(status=200, headers=ctype, body=self.body)


def test_invariant_23_driver_without_fetcher_never_hands_a_document_to_plain_http(
    doc_server: str,
) -> None:
    """Fail closed (spec/security.md 23): a driver given no document fetcher refuses ``FetchDocument``;
    the plain HTTP client, which here would answer with a valid document, is never called."""
    http = _ServingHttp(doc_server)
    assert _resolve(doc_server, allow_loopback=True, http=http) is None
    assert http.calls == []
    assert _resolve(doc_server, allow_loopback=True, http=SyncHttpClient()) is None

    async def scenario() -> Any:
        async def ahttp(req: HttpRequest) -> HttpResponse | HttpFailure:
            return http(req)

        return await run_async(load_client(doc_server, _context(True)), AsyncMemoryStore(), ahttp)

    assert asyncio.run(scenario()) is None
    assert http.calls == []
    # The same driver with a fetcher finds the client, still without the plain client.
    found = _resolve(
        doc_server, allow_loopback=True, http=http, fetch=SyncSafeFetcher(allow_loopback=True)
    )
    assert found is not None and found.client_id == doc_server
    assert http.calls == []


def _upstream_call() -> Handler[Any]:
    return (yield HttpCall(request=HttpRequest(method="GET", url="https://idp.example/user")))


def test_async_fetcher_through_the_driver(doc_server: str) -> None:
    async def scenario() -> None:
        upstream_calls: list[HttpRequest] = []

        async def upstream(req: HttpRequest) -> HttpResponse | HttpFailure:
            upstream_calls.append(req)
            return HttpResponse(status=204)

        fetcher = AsyncSafeFetcher(allow_loopback=True)
        doc = await fetcher(_get(doc_server))
        assert isinstance(doc, HttpResponse) and doc.status == 200
        assert json.loads(doc.body)["client_id"] == doc_server
        store = AsyncMemoryStore()
        client = await run_async(
            load_client(doc_server, _context(True)), store, upstream, fetch=fetcher
        )
        assert client is not None and client.client_id == doc_server
        assert upstream_calls == []
        other = await run_async(_upstream_call(), store, upstream, fetch=fetcher)
        assert isinstance(other, HttpResponse) and len(upstream_calls) == 1
        refused = await AsyncSafeFetcher()(_get(doc_server))
        assert isinstance(refused, HttpFailure) and refused.reason == "refused"
        await fetcher.aclose()

    asyncio.run(scenario())


# --------------------------------------------------------------------------------------------------
# spec/security.md 35: document-host lookups on a bounded pool of their own


class _HangingResolver:
    """Hangs for ``*.slow.test`` until released; other names resolve to a public address."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def __call__(self, host: str, port: int) -> list[str]:
        if host.endswith(".slow.test"):
            self.release.wait(30)
            raise socket.gaierror("no answer")
        return ["93.184.215.14"]


def _wait_until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_invariant_35_lookups_beyond_the_pool_fail_at_once_until_the_resolver_returns() -> None:
    """A lookup whose caller gave up still holds its thread; past the pool's size a lookup is
    refused at once (``busy``) rather than queued behind hanging ones."""
    dns = _HangingResolver()
    fetcher = SyncSafeFetcher(resolver=dns, lookups_in_flight=2, timeout=0.2)
    try:
        for i in range(2):  # each caller times out; the two threads stay in the resolver
            plan = fetcher.plan(f"https://h{i}.slow.test/c.json")
            assert isinstance(plan, HttpFailure) and plan.reason == "connect"
        assert fetcher.lookups.in_flight == 2
        started = time.monotonic()
        busy = fetcher.plan("https://client.example/c.json")
        assert isinstance(busy, HttpFailure) and busy.reason == BUSY
        assert time.monotonic() - started < 0.1
        dns.release.set()
        _wait_until(lambda: fetcher.lookups.in_flight == 0)
        assert fetcher.plan("https://client.example/c.json") == FetchPlan(
            url="https://93.184.215.14/c.json",
            host_header="client.example",
            sni_hostname="client.example",
        )
    finally:
        dns.release.set()
        fetcher.close()


def test_invariant_35_async_lookups_never_use_the_event_loops_default_executor() -> None:
    """The loop's default executor, which resolves the provider for every sign-in, stays free
    while document lookups hang: its threads answer at once."""
    dns = _HangingResolver()

    async def scenario() -> None:
        fetcher = AsyncSafeFetcher(resolver=dns, lookups_in_flight=3, timeout=5)
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(max_workers=1))
        hanging = [
            asyncio.create_task(fetcher.plan(f"https://h{i}.slow.test/c.json")) for i in range(10)
        ]
        started = time.monotonic()
        while fetcher.lookups.in_flight < 3 and time.monotonic() - started < 10:
            await asyncio.sleep(0.01)
        # The provider's name resolves on the default executor, now, with one thread.
        provider = await asyncio.wait_for(loop.getaddrinfo("localhost", 443), 2)
        assert provider
        dns.release.set()
        results = await asyncio.gather(*hanging)
        reasons = sorted(r.reason for r in results if isinstance(r, HttpFailure))
        assert reasons == [BUSY] * 7 + ["connect"] * 3
        await fetcher.aclose()

    try:
        asyncio.run(scenario())
    finally:
        dns.release.set()
