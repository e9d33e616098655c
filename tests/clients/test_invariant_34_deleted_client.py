"""RFC 7592 §2.3 and spec/security.md 34: deleting a registration takes every token of the client away at
once. Through the real application (``OAuthProxyApp`` and ``OAuthProxyWSGI`` in front of a protected
MCP app that can also ask for the user's upstream token), after ``DELETE`` on the registration:

- the access token is refused at the protected path at the very next request (the verified-token
  cache skips only the signature, never the revocation look-ups: the staleness bound is zero);
- the refresh token mints nothing;
- the user's upstream token is not served, and the grant holding it is deleted when next touched;
- a code issued before the deletion redeems nothing;
- an authorization in flight at the provider ends on a page at the callback: no upstream code is
  redeemed, no code is issued and nothing is redirected to the deleted client's URI;
- a token request that authenticated before the deletion and finished after it is refused too.

Issue 13, item 6: before, the access token stayed valid until it expired and the upstream token was
still served.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oauthproxy_adapters.asgi import OAuthProxyApp, principal_from_scope
from oauthproxy_adapters.driver import execute_sync
from oauthproxy_adapters.testing.flow import (
    Call,
    Reply,
    approve,
    bearer,
    drive,
    login,
    open_consent,
    post_form,
    request,
)
from oauthproxy_adapters.wsgi import OAuthProxyWSGI, principal_from_environ
from oauthproxy_core.errors import InvalidTokenError, OAuthError
from oauthproxy_core.handlers.bearer import Challenge, Principal
from oauthproxy_core.http import json_response
from tests.adapters.live_servers import async_proxy, sync_proxy
from tests.harness import VERIFIER, Harness, ScriptedUpstream, UpstreamUser, make_config
from tests.hostile.support import CookieJar, asgi_sender, wsgi_sender

BASE = "http://127.0.0.1:8934"


class World:
    """One adapter in front of a proxy and a protected app with two routes:

    ``/mcp`` echoes the principal; ``/mcp/upstream`` answers the user's upstream access token, as an
    MCP tool that calls the provider's API on the user's behalf would get it. ``principals`` keeps
    every principal the app saw, as a long-running MCP session holds on to it.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.config = make_config(issuer=BASE)
        self.upstream = ScriptedUpstream(callback_url=self.config.callback_url)
        self.principals: list[Principal] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        if kind == "asgi":
            self.loop = asyncio.new_event_loop()
            self.aproxy = async_proxy(self.config, self.upstream)
            self.send = asgi_sender(OAuthProxyApp(self.aproxy, self._asgi_app), self.loop)
        else:
            self.sproxy = sync_proxy(self.config, self.upstream)
            self.send = wsgi_sender(OAuthProxyWSGI(self.sproxy, self._wsgi_app))
        self.jar = CookieJar(self.send, BASE)

    def close(self) -> None:
        if self.loop is not None:
            self.loop.close()

    def upstream_token(self, principal: Principal) -> str:
        """The adapter's upstream-token API; raises ``OAuthError``."""
        if self.loop is not None:
            access = self.loop.run_until_complete(self.aproxy.upstream_token(principal))
        else:
            access = self.sproxy.upstream_token(principal)
        return access.access_token

    def _answer(self, principal: Principal | None, path: str) -> Any:
        assert principal is not None
        self.principals.append(principal)
        if path == "/mcp/upstream":
            try:
                return json_response(200, {"upstream": self.upstream_token(principal)})
            except OAuthError as err:
                return json_response(err.status, {"error": err.error})
        return json_response(200, {"subject": principal.subject})

    async def _asgi_app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        principal = principal_from_scope(scope)
        assert principal is not None
        self.principals.append(principal)
        if scope["path"] == "/mcp/upstream":
            try:
                access = await self.aproxy.upstream_token(principal)
                resp = json_response(200, {"upstream": access.access_token})
            except OAuthError as err:
                resp = json_response(err.status, {"error": err.error})
        else:
            resp = json_response(200, {"subject": principal.subject})
        headers = [(k.lower().encode(), v.encode()) for k, v in resp.headers]
        await send({"type": "http.response.start", "status": resp.status, "headers": headers})
        await send({"type": "http.response.body", "body": resp.body})

    def _wsgi_app(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        resp = self._answer(principal_from_environ(environ), environ["PATH_INFO"])
        start_response(f"{resp.status} X", list(resp.headers))
        return [resp.body]

    def call(self, call: Call) -> Reply:
        return self.jar(call)

    def delete(self, client: dict[str, Any]) -> None:
        uri = client["registration_client_uri"]
        auth = (("Authorization", f"Bearer {client['registration_access_token']}"),)
        reply = drive(request("DELETE", uri, auth), self.jar)
        assert reply.status == 204, reply


@pytest.fixture(params=["asgi", "wsgi"])
def world(request: pytest.FixtureRequest) -> Iterator[World]:
    w = World(request.param)
    yield w
    w.close()


def _get(world: World, path: str, token: str) -> Reply:
    return drive(request("GET", BASE + path, bearer(token)), world.jar)


def _refresh(world: World, client: dict[str, Any], refresh_token: str) -> Reply:
    form = {
        "grant_type": "refresh_token",
        "refresh_token": refresh_token,
        "client_id": client["client_id"],
    }
    return drive(post_form(BASE + "/token", form), world.jar)


def _code_form(client: dict[str, Any], code: str) -> dict[str, str]:
    return {
        "grant_type": "authorization_code",
        "code": code,
        "client_id": client["client_id"],
        "redirect_uri": client["redirect_uris"][0],
        "code_verifier": VERIFIER,
    }


def _at_the_provider(world: World) -> tuple[dict[str, Any], str]:
    """A registered client whose user approved consent and is now at the provider: the client and
    the provider's callback URL for this sign-in."""
    client = drive(login(BASE, world.upstream), world.jar).client
    world.jar.cookies.clear()
    fields = drive(open_consent(BASE, client), world.jar)
    approved = drive(approve(BASE, fields), world.jar)
    assert approved.status == 303, approved
    callback = world.upstream.login(approved.header("location") or "", UpstreamUser(42, "octocat"))
    return client, callback


def test_invariant_34_deleting_a_registration_ends_its_tokens_at_once(world: World) -> None:
    session = drive(login(BASE, world.upstream), world.jar)
    access = session.tokens["access_token"]
    other = drive(login(BASE, world.upstream, UpstreamUser(7, "someone")), world.jar)

    # Before: the token works, twice (the second use is served from the verified-token cache),
    # and the protected app can get the user's upstream token.
    assert _get(world, "/mcp", access).status == 200
    assert _get(world, "/mcp", access).status == 200
    served = _get(world, "/mcp/upstream", access)
    assert served.status == 200 and served.json()["upstream"].startswith("gho_"), served
    held = world.principals[-1]

    world.delete(session.client)

    # The very next request is refused (RFC 6750 §3.1 invalid_token, one challenge).
    refused = _get(world, "/mcp", access)
    assert refused.status == 401, refused
    assert 'error="invalid_token"' in (refused.header("www-authenticate") or "")
    assert _get(world, "/mcp/upstream", access).status == 401
    # The refresh token mints nothing (the client is unknown now).
    again = _refresh(world, session.client, session.tokens["refresh_token"])
    assert again.status == 401 and again.json()["error"] == "invalid_client", again
    # A principal the app still holds from before gets no upstream token either.
    with pytest.raises(InvalidTokenError):
        world.upstream_token(held)

    # Another client's user is untouched.
    assert _get(world, "/mcp", other.tokens["access_token"]).status == 200
    assert _refresh(world, other.client, other.tokens["refresh_token"]).status == 200


def test_invariant_34_a_code_issued_before_the_delete_redeems_nothing(world: World) -> None:
    client, callback = _at_the_provider(world)
    issued = drive(request("GET", callback), world.jar)
    assert issued.status == 302, issued
    code = parse_qs(urlsplit(issued.header("location") or "").query)["code"][0]

    world.delete(client)

    reply = drive(post_form(BASE + "/token", _code_form(client, code)), world.jar)
    assert reply.status == 401 and reply.json()["error"] == "invalid_client", reply
    assert "access_token" not in reply.json()


def test_invariant_34_an_authorization_in_flight_ends_at_the_callback(world: World) -> None:
    client, callback = _at_the_provider(world)

    world.delete(client)  # while the user is signing in at the provider

    calls_before = len(world.upstream.calls)
    reply = drive(request("GET", callback), world.jar)
    # A page, no redirect (spec/security.md 1, 2), and the provider's code was never redeemed.
    assert reply.status == 400 and reply.header("location") is None, reply
    assert b"no longer registered" in reply.body
    assert world.upstream.calls[calls_before:] == []
    # The provider's state was single-use: a second try finds nothing either.
    assert drive(request("GET", callback), world.jar).status == 400


def test_invariant_1_callback_after_the_redirect_uri_was_unregistered_goes_nowhere(
    world: World,
) -> None:
    """RFC 7592 §2.2 lets a client replace its redirect URIs; an authorization in flight for a URI
    no longer registered gets a page at the callback, not a redirect there (spec/security.md 1)."""
    client, callback = _at_the_provider(world)
    update = {
        k: v
        for k, v in client.items()
        if k not in ("registration_access_token", "registration_client_uri", "client_id_issued_at")
    }
    update["redirect_uris"] = ["http://127.0.0.1:40001/other"]
    auth = (
        ("Authorization", f"Bearer {client['registration_access_token']}"),
        ("Content-Type", "application/json"),
    )
    put = drive(
        request("PUT", client["registration_client_uri"], auth, json.dumps(update).encode()),
        world.jar,
    )
    assert put.status == 200, put

    reply = drive(request("GET", callback), world.jar)
    assert reply.status == 400 and reply.header("location") is None, reply


# -- the race and the property, on the core with the real driver ---------------------------------


def _step_until(gen: Any, store: Any, upstream: Any, stop: Callable[[Any], bool]) -> Any:
    """Run ``gen`` through the real driver's effect execution until ``stop(effect)``; return that
    effect (not yet executed)."""
    value: Any = None
    while True:
        effect = gen.send(value)
        if stop(effect):
            return effect
        value = execute_sync(effect, store, upstream)


def test_invariant_34_a_token_request_overtaken_by_the_delete_gets_nothing() -> None:
    """The token endpoint authenticated the client, then the registration was deleted, then the
    grant was written: the response is invalid_client and the minted token is refused anyway."""
    h = Harness()
    reg = h.register()
    code = h.full_code(reg, VERIFIER)
    req = h.make_request(
        "POST",
        "/token",
        headers=(("content-type", "application/x-www-form-urlencoded"),),
        body=urlencode(_code_form(reg, code)).encode(),
    )
    gen = h.server.handle(req, now=h.clock.now, random=h.random)
    # Up to the grant's write: the client has authenticated and the code is exchanged.
    effect = _step_until(gen, h.store, h.upstream, lambda e: getattr(e, "kind", None) == "grant")
    path = reg["registration_client_uri"].removeprefix(h.config.issuer)
    auth = (("authorization", f"Bearer {reg['registration_access_token']}"),)
    assert h.request("DELETE", path, headers=auth).status == 204
    value = execute_sync(effect, h.store, h.upstream)
    try:
        while True:
            value = execute_sync(gen.send(value), h.store, h.upstream)
    except StopIteration as stop:
        resp = stop.value
    assert resp.status == 401 and json.loads(resp.body)["error"] == "invalid_client", resp.body


SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(
    refreshes=st.integers(min_value=0, max_value=3),
    wait_before=st.integers(min_value=0, max_value=200),
    checks=st.lists(st.integers(min_value=0, max_value=4000), min_size=1, max_size=4),
)
def test_invariant_34_no_token_of_a_deleted_client_is_accepted_at_any_later_time(
    refreshes: int, wait_before: int, checks: list[int]
) -> None:
    """Whatever the client did before (codes, refreshes, time passing), after DELETE none of the
    access tokens it ever received is accepted at any later moment, and another client's is."""
    h = Harness()
    reg, bystander = h.register(), h.register()
    tokens: list[str] = []

    def redeem(client: dict[str, Any]) -> dict[str, Any]:
        body = json.loads(h.token(_code_form(client, h.full_code(client, VERIFIER))).body)
        return body  # type: ignore[no-any-return]

    body = redeem(reg)
    tokens.append(body["access_token"])
    for _ in range(refreshes):
        h.clock.advance(5)
        body = json.loads(
            h.token(
                {
                    "grant_type": "refresh_token",
                    "refresh_token": body["refresh_token"],
                    "client_id": reg["client_id"],
                }
            ).body
        )
        tokens.append(body["access_token"])
    kept = redeem(bystander)["access_token"]
    h.clock.advance(wait_before)
    path = reg["registration_client_uri"].removeprefix(h.config.issuer)
    auth = (("authorization", f"Bearer {reg['registration_access_token']}"),)
    assert h.request("DELETE", path, headers=auth).status == 204
    start = h.clock.now
    lifetime = h.config.lifetimes.access_token
    for offset in sorted(checks):
        h.clock.now = start + offset
        for token in tokens:
            assert isinstance(h.bearer(token), Challenge)
        if h.clock.now < start - wait_before + lifetime:
            assert isinstance(h.bearer(kept), Principal)
