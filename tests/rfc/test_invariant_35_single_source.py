"""spec/security.md 35: no single source -- an address prefix, a client id, a host name -- can exhaust a
bound that protects everyone, and a busy shared address (an office NAT, a web-based MCP host) is
served, not refused. Invariant 28 holds throughout: every bound still answers a clear 4xx (or 503
for a bound everyone shares), never another 5xx, and storage stays bounded by the totals.

Every test goes through the real ASGI app (``OAuthProxyApp`` over ``AsyncProxy`` and a memory
store) with the default ``[limits]`` unless it says otherwise; each request comes from the peer
address the test names (the ASGI ``client`` of the scope, what a server sets from the socket), and
the clock is the test's. Metadata documents and the upstream provider are scripted
(``tests.clients.support.DocumentHost``): a made-up document URL answers 404, which costs a fetch
exactly like a real unreachable host.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar
from urllib.parse import urlencode

import attrs
import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oauthproxy_adapters.asgi import OAuthProxyApp
from oauthproxy_adapters.proxy import AsyncProxy
from oauthproxy_adapters.stores.memory import AsyncMemoryStore
from oauthproxy_adapters.testing.flow import adrive_httpx, authorize, exchange_code
from oauthproxy_core import FetchDocument, HttpFailure, HttpRequest, HttpResponse
from oauthproxy_core.bounds import Bounds, per_source, source_key
from tests.clients.support import DocumentHost, document
from tests.harness import VERIFIER, Clock, UpstreamUser, keys, make_config
from tests.hostile.support import Answer, asgi_raw

T = TypeVar("T")

BASE = "http://127.0.0.1:8935"
REDIRECT = "http://127.0.0.1:33418/callback"
DEFAULTS = Bounds()
ATTACKER = "198.51.100.7"
ALICE = "203.0.113.5"
USER = UpstreamUser(id=7, login="alice")
CHALLENGE = base64.urlsafe_b64encode(hashlib.sha256(VERIFIER.encode()).digest()).rstrip(b"=")


class Rig:
    """The ASGI app with a scripted clock, store, provider and document host."""

    def __init__(self, bounds: Bounds = DEFAULTS) -> None:
        self.config = make_config(issuer=BASE, bounds=bounds)
        self.clock = Clock()
        self.host = DocumentHost(callback_url=self.config.callback_url)
        self.store = AsyncMemoryStore(clock=self.clock)

        async def http(req: HttpRequest) -> HttpResponse | HttpFailure:
            return self.host(req)

        async def fetch(doc: FetchDocument) -> HttpResponse | HttpFailure:
            return self.host.fetch(doc)

        self.proxy = AsyncProxy(
            self.config, keys(), self.store, http, fetch=fetch, clock=self.clock
        )
        self.app = OAuthProxyApp(self.proxy)

    def browser(self, addr: str) -> httpx.AsyncClient:
        """A client (with its own cookie jar) whose requests come from ``addr``."""
        transport = httpx.ASGITransport(app=self.app, client=(addr, 50000))
        return httpx.AsyncClient(transport=transport, base_url=BASE)

    def serve_cimd(self, url: str) -> dict[str, Any]:
        self.host.serve(url, document(url, redirect_uris=[REDIRECT]))
        return {"client_id": url, "redirect_uris": [REDIRECT]}

    def fetches_under(self, domain: str) -> int:
        return sum(
            1 for f in self.host.fetches if f.url.partition("://")[2].split("/")[0].endswith(domain)
        )

    def records(self, kind: str) -> int:
        return sum(1 for k, _key, _value in self.store.dump() if k == kind)


async def sign_in(rig: Rig, addr: str, client: dict[str, Any]) -> dict[str, Any]:
    """authorize -> consent -> provider -> callback -> token, from ``addr``; returns the tokens."""
    async with rig.browser(addr) as browser:
        redirect = await adrive_httpx(
            authorize(BASE, client, upstream=rig.host, user=USER), browser
        )
        return await adrive_httpx(exchange_code(BASE, client, redirect["code"]), browser)


def authorize_query(client_id: str) -> str:
    return "/authorize?" + urlencode(
        {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": REDIRECT,
            "state": "s",
            "code_challenge": CHALLENGE.decode(),
            "code_challenge_method": "S256",
            "resource": BASE + "/mcp",
        }
    )


async def call(
    rig: Rig, addr: str, method: str, target: str, body: bytes = b"", ctype: str = ""
) -> Answer:
    """One request straight into the ASGI app from peer ``addr`` (a flood needs no cookie jar or
    URL parsing, which would cost more than the app itself)."""
    path, _, query = target.partition("?")
    headers = [(b"host", b"127.0.0.1:8935")]
    if ctype:
        headers.append((b"content-type", ctype.encode()))
    return await asgi_raw(
        rig.app, method, path.encode(), query.encode(), headers, body, client=(addr, 50000)
    )


def outcome(resp: Answer) -> str:
    """What an authorization request produced; asserts invariant 28's "clear 4xx, never a 5xx"."""
    if resp.status == 302:
        location = resp.header("location") or ""
        if location.startswith(BASE + "/consent?"):
            return "consent"
        assert location.startswith(REDIRECT + "?"), location
        return "redirect " + dict(httpx.URL(location).params)["error"]
    # Refused before the client and redirect URI were validated: a page, never a redirect.
    assert resp.header("location") is None
    assert resp.status in (400, 429, 503), (resp.status, resp.body[:200])
    if resp.status != 400:
        assert int(resp.header("retry-after") or 0) >= 1
    return f"page {resp.status}"


async def gather(calls: Iterable[Callable[[], Awaitable[T]]], width: int = 32) -> list[T]:
    """Run the calls ``width`` at a time (a flood, bounded)."""
    pending = list(calls)
    out: list[T] = []
    for i in range(0, len(pending), width):
        out += await asyncio.gather(*(c() for c in pending[i : i + width]))
    return out


async def authorize_many(rig: Rig, addr: str, client_ids: list[str]) -> list[str]:
    async def one(client_id: str) -> str:
        return outcome(await call(rig, addr, "GET", authorize_query(client_id)))

    return await gather(lambda cid=cid: one(cid) for cid in client_ids)  # type: ignore[misc]


REGISTRATION = json.dumps(
    {
        "redirect_uris": [REDIRECT],
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"],
    }
).encode()


async def post_registration(rig: Rig, addr: str) -> Answer:
    return await call(rig, addr, "POST", "/register", REGISTRATION, "application/json")


async def register(rig: Rig, addr: str) -> dict[str, Any]:
    resp = await post_registration(rig, addr)
    assert resp.status == 201, resp.body
    client: dict[str, Any] = json.loads(resp.body)
    return client


async def register_many(rig: Rig, addrs: list[str]) -> list[int]:
    async def one(addr: str) -> int:
        resp = await post_registration(rig, addr)
        assert resp.status in (201, 429), (resp.status, resp.body[:200])
        if resp.status == 429:
            assert json.loads(resp.body)["error"] == "too_many_requests"
            assert int(resp.header("retry-after") or 0) >= 1
        return resp.status

    return await gather(lambda a=a: one(a) for a in addrs)  # type: ignore[misc]


def made_up(n: int, domain: str = "attacker.example", *, start: int = 0) -> list[str]:
    return [f"https://h{i}.{domain}/client.json" for i in range(start, start + n)]


# -- sources ---------------------------------------------------------------------------------------


def test_invariant_35_sources_are_address_prefixes() -> None:
    assert source_key("192.0.2.7") == "192.0.2.7/32"
    assert source_key("::ffff:192.0.2.7") == "192.0.2.7/32"  # a dual-stack socket's IPv4 peer
    assert (
        source_key("2001:db8:1:2::1") == source_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    )
    assert source_key("2001:db8:1:3::1") != source_key("2001:db8:1:2::1")
    assert source_key("fe80::1%eth0") == "fe80::/64"
    assert source_key("2001:db8:1:2::1", ipv6_prefix=48) == "2001:db8:1::/48"
    assert source_key("192.0.2.7", ipv4_prefix=24) == "192.0.2.0/24"
    assert source_key("2001:db8::1", ipv6_prefix=200) == "2001:db8::1/128"  # single addresses
    assert source_key("testclient") == "testclient"  # a named peer is counted as given
    assert source_key("") == ""  # unknown: counted in the totals only
    assert per_source("") == "" and per_source("192.0.2.7/32", "client") != ""


# -- the document-fetch budget ---------------------------------------------------------------------


def test_invariant_35_made_up_cimd_flood_from_one_address_spares_other_sign_ins() -> None:
    """Made-up ``https`` client ids from one address, more than the whole fetch budget: each is
    counted against the address before any lookup, so the address spends its own budgets (a few
    fetches, then 429 pages) and a new CIMD client from another address still signs in."""

    async def go() -> None:
        rig = Rig()
        flood = DEFAULTS.document_fetches_total + 100
        answers = Counter(await authorize_many(rig, ATTACKER, made_up(flood)))
        assert rig.fetches_under(".attacker.example") == DEFAULTS.document_fetches_per_address
        assert answers == {
            "page 400": DEFAULTS.document_fetches_per_address,  # fetched: no such document
            "page 429": flood - DEFAULTS.document_fetches_per_address,
        }
        tokens = await sign_in(rig, ALICE, rig.serve_cimd("https://tool.example/oauth/c.json"))
        assert tokens["token_type"] == "Bearer"

    asyncio.run(go())


def test_invariant_35_spent_fetch_budget_serves_a_stale_document() -> None:
    """When many sources together spend the total fetch budget, a CIMD client seen before signs in
    from its stale cached document; one never seen gets a clear 503 with ``Retry-After``."""

    async def go() -> None:
        rig = Rig()
        known = rig.serve_cimd("https://known.example/oauth/c.json")
        await sign_in(rig, ALICE, known)
        rig.clock.advance(DEFAULTS.document_fetch_window + 1)  # stale, and a fresh budget
        per = DEFAULTS.document_fetches_per_address
        sources = -(-DEFAULTS.document_fetches_total // per) + 1
        for s in range(sources):
            await authorize_many(rig, f"192.0.2.{s + 1}", made_up(per, start=s * per))
        fetches_before = len(rig.host.fetches)
        # The total is spent: nobody causes a fetch any more...
        unseen = rig.serve_cimd("https://new.example/oauth/c.json")
        refused = await call(rig, "203.0.113.99", "GET", authorize_query(unseen["client_id"]))
        assert outcome(refused) == "page 503"
        assert b"temporarily_unavailable" in refused.body
        # ...but the known client signs in with the document it fetched before.
        tokens = await sign_in(rig, ALICE, known)
        assert tokens["token_type"] == "Bearer"
        assert len(rig.host.fetches) == fetches_before

    asyncio.run(go())


# -- pending authorizations of a shared client ---------------------------------------------------


def test_invariant_35_two_addresses_cannot_lock_a_shared_client() -> None:
    """A metadata-document client is shared by all its users: its pending slots are counted per
    source, so two addresses filling theirs leave a third user's sign-in untouched."""

    async def go() -> None:
        rig = Rig()
        shared = rig.serve_cimd("https://popular.example/oauth/c.json")
        per_client = DEFAULTS.authorizations_per_client
        for addr in ("198.51.100.1", "198.51.100.2"):
            answers = Counter(await authorize_many(rig, addr, [shared["client_id"]] * 140))
            assert answers == {
                "consent": per_client,
                "redirect temporarily_unavailable": 140 - per_client,
            }
        tokens = await sign_in(rig, ALICE, shared)
        assert tokens["token_type"] == "Bearer"
        # Storage stays bounded: the two addresses hold their slots and no more.
        assert rig.records("tx") == 2 * per_client + 1

    asyncio.run(go())


# -- registration ----------------------------------------------------------------------------------


def test_invariant_35_a_slash_64_flood_does_not_close_registration_for_another_64() -> None:
    """Every address of one IPv6 /64 is one source: a flood from ever new addresses in it gets the
    per-source budget once, and registration stays open for every other /64 and IPv4 address."""

    async def go() -> None:
        rig = Rig()
        # More addresses than a whole hour's registrations used to allow (2 000 in total).
        flood = [f"2001:db8:1:2::{i:x}" for i in range(1, 2_101)]
        statuses = Counter(await register_many(rig, flood))
        assert statuses == {
            201: DEFAULTS.registrations_per_address,
            429: len(flood) - DEFAULTS.registrations_per_address,
        }
        others = await register_many(rig, ["2001:db8:1:3::1", "2001:db8:9::1", "192.0.2.10"])
        assert others == [201, 201, 201]

    asyncio.run(go())


def test_invariant_35_a_busy_shared_address_registers_hundreds_an_hour() -> None:
    """An office NAT or a web-based MCP host: 300 registrations in an hour from one address, and a
    test suite's 60 in one minute, all served. What bounds storage instead: registrations that
    never complete a flow are gone after the unused lifetime; a used one stays."""

    async def go() -> None:
        rig = Rig()
        office = "192.0.2.50"
        statuses = []
        for _ in range(300):
            statuses += await register_many(rig, [office])
            rig.clock.advance(12)  # 300 over the hour
        assert statuses == [201] * 300
        rig.clock.advance(DEFAULTS.registration_window)
        burst = await register_many(rig, [office] * 60)  # one minute's worth, at once
        assert burst == [201] * 60
        used = await register(rig, office)
        await sign_in(rig, office, used)
        rig.clock.advance(DEFAULTS.unused_registration_lifetime)
        assert rig.records("client") == 1
        assert rig.store.sync.get("client", used["client_id"]) is not None

    asyncio.run(go())


# -- the property ----------------------------------------------------------------------------------

ACTIONS = st.lists(
    st.sampled_from(["register", "authorize-shared", "made-up-cimd", "made-up-on-victim-host"]),
    min_size=1,
    max_size=40,
)


@st.composite
def tight_bounds(draw: st.DrawFn) -> Bounds:
    """Small limits in which every per-source budget is below the bound it must not exhaust."""
    reg = draw(st.integers(1, 4))
    auth = draw(st.integers(2, 6))
    fetch = draw(st.integers(2, 4))
    return attrs.evolve(
        DEFAULTS,
        registrations_per_address=reg,
        registrations_total=reg + draw(st.integers(1, 3)),
        authorizations_per_address=auth,
        authorizations_per_client=draw(st.integers(1, auth)),
        # The user's two sign-ins below need two requests of the total.
        authorizations_total=auth + draw(st.integers(2, 4)),
        # The user fetches two documents: the shared client's (unless cached) and the new one.
        document_fetches_per_address=fetch,
        document_fetches_per_host=fetch + draw(st.integers(1, 3)),
        document_fetches_total=fetch + draw(st.integers(2, 4)),
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    bounds=tight_bounds(),
    actions=ACTIONS,
    spread=st.booleans(),
    v6=st.booleans(),
)
def test_invariant_35_property_no_single_source_exhausts_a_shared_bound(
    bounds: Bounds, actions: list[str], spread: bool, v6: bool
) -> None:
    """Whatever one source sends -- from one address or spread over its whole prefix (a /64, or one
    IPv4 address) -- another source can still register, sign in to the shared client, and sign in
    with a metadata-document client never seen before on the very host the source targeted."""

    async def go() -> None:
        rig = Rig(bounds)
        shared = rig.serve_cimd("https://shared.example/oauth/c.json")
        victim = "https://victim.example/oauth/new.json"
        n = 0

        def addr() -> str:
            nonlocal n
            n += 1
            if v6:
                return f"2001:db8:a:b::{n if spread else 1:x}"
            return "198.51.100.9"

        for action in actions:
            if action == "register":
                await register_many(rig, [addr()])
            elif action == "authorize-shared":
                await authorize_many(rig, addr(), [shared["client_id"]])
            elif action == "made-up-cimd":
                await authorize_many(rig, addr(), made_up(1, start=n))
            else:
                await authorize_many(rig, addr(), [f"https://victim.example/oauth/x{n}.json"])
        assert await register_many(rig, ["203.0.113.77"]) == [201]
        await sign_in(rig, "203.0.113.77", shared)
        await sign_in(rig, "203.0.113.77", rig.serve_cimd(victim))

    asyncio.run(go())
