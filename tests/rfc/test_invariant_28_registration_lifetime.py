"""spec/security.md 28, "registration lifetime when unused": a dynamically registered client to which no
tokens were ever issued expires ``Bounds.unused_registration_lifetime`` (6 hours) after registering;
one that was used expires ``Lifetimes.client`` (90 days) after its last use; either is then unknown
to every endpoint. A client in use is renewed by the token endpoint (its first use at once, then at
most one store write per client per day), so it never disappears under its users."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from oauthproxy_adapters.driver import run
from oauthproxy_core.config import Lifetimes
from oauthproxy_core.effects import CompareAndSet
from oauthproxy_core.http import Response
from tests.harness import VERIFIER, Harness, make_config

DAY = 24 * 3600
LIFETIME = Harness().config.lifetimes.client
UNUSED = Harness().config.bounds.unused_registration_lifetime


def redeem(h: Harness, client: dict[str, Any]) -> Response:
    code = h.full_code(client, VERIFIER)
    return h.token(
        {
            "grant_type": "authorization_code",
            "code": code,
            "client_id": client["client_id"],
            "redirect_uri": client["redirect_uris"][0],
            "code_verifier": VERIFIER,
        }
    )


def refresh(h: Harness, client: dict[str, Any], token: str) -> Response:
    return h.token(
        {"grant_type": "refresh_token", "refresh_token": token, "client_id": client["client_id"]}
    )


def unknown_everywhere(h: Harness, client: dict[str, Any]) -> bool:
    """The client is unknown at authorize, token, revocation and RFC 7592 management."""
    authorize = h.request("GET", h.authorize_url(client, VERIFIER))
    token = h.token(
        {
            "grant_type": "authorization_code",
            "code": "whatever",
            "client_id": client["client_id"],
            "redirect_uri": client["redirect_uris"][0],
            "code_verifier": VERIFIER,
        }
    )
    revoke = h.form("/revoke", {"token": "whatever", "client_id": client["client_id"]})
    manage = h.request(
        "GET",
        client["registration_client_uri"].removeprefix(h.config.issuer),
        headers=(("authorization", f"Bearer {client['registration_access_token']}"),),
    )
    return (
        authorize.status == 400
        and authorize.header("location") is None
        and token.status == 401
        and json.loads(token.body)["error"] == "invalid_client"
        and revoke.status == 401
        and manage.status == 401
    )


def test_invariant_28_unused_registration_expires_and_is_then_unknown_everywhere() -> None:
    h = Harness()
    client = h.register()
    h.clock.advance(UNUSED - 1)
    # One second before its unused lifetime ends, the registration still works (a pending
    # authorization does not count as a use: only issued tokens do)...
    assert h.request("GET", h.authorize_url(client, VERIFIER)).status == 302
    h.clock.advance(1)
    # ...and at its end it is gone from every endpoint.
    assert unknown_everywhere(h, client)
    assert h.store.get("client", client["client_id"]) is None


def test_invariant_28_first_use_turns_the_short_unused_lifetime_into_the_full_one() -> None:
    h = Harness()
    client = h.register()
    h.clock.advance(UNUSED - 60)
    assert redeem(h, client).status == 200
    last_use = h.clock.now
    h.clock.advance(LIFETIME - 1)
    assert h.request("GET", h.authorize_url(client, VERIFIER)).status == 302
    assert h.clock.now - last_use == LIFETIME - 1
    h.clock.advance(1)
    assert unknown_everywhere(h, client)


def test_invariant_28_registration_in_use_outlives_its_first_lifetime() -> None:
    # A family may live past the default 90-day absolute cap here, so that the registration is
    # renewed by use for more than twice its lifetime.
    h = Harness(
        make_config(lifetimes=Lifetimes(refresh_absolute=400 * DAY, revocation_staleness=0))
    )
    client = h.register()
    resp = redeem(h, client)
    assert resp.status == 200
    token = json.loads(resp.body)["refresh_token"]
    # Refresh every 20 days for 200 days: more than twice the registration's lifetime.
    for _ in range(10):
        h.clock.advance(20 * DAY)
        resp = refresh(h, client, token)
        assert resp.status == 200, resp.body
        token = json.loads(resp.body)["refresh_token"]
    assert h.request("GET", h.authorize_url(client, VERIFIER)).status == 302
    # Unused from now on: it expires one lifetime after the last use.
    h.clock.advance(LIFETIME - 1)
    assert h.request("GET", h.authorize_url(client, VERIFIER)).status == 302
    h.clock.advance(1)
    assert unknown_everywhere(h, client)


def test_invariant_28_renewal_writes_the_client_at_most_once_a_day() -> None:
    h = Harness()
    client = h.register()
    writes: list[CompareAndSet] = []

    def observe(effect: Any, _result: Any, _seconds: float) -> None:
        if type(effect) is CompareAndSet and effect.kind == "client":
            writes.append(effect)

    def token(data: dict[str, str]) -> Response:
        req = h.make_request(
            "POST",
            "/token",
            body="&".join(f"{k}={v}" for k, v in data.items()).encode(),
            headers=(("content-type", "application/x-www-form-urlencoded"),),
        )
        return run(
            h.server.handle(req, now=h.clock.now, random=h.random), h.store, h.upstream, observe
        )

    h.token = token  # type: ignore[method-assign,assignment]
    resp = redeem(h, client)
    assert resp.status == 200
    rt = json.loads(resp.body)["refresh_token"]
    # The first use is written at once: it turns the unused lifetime into the full one.
    assert [w.ttl for w in writes] == [LIFETIME]
    for _ in range(5):
        resp = refresh(h, client, rt)
        assert resp.status == 200
        rt = json.loads(resp.body)["refresh_token"]
        h.clock.advance(60)
    assert len(writes) == 1  # used again the same day: nothing to renew
    h.clock.advance(DAY)
    for _ in range(5):
        resp = refresh(h, client, rt)
        assert resp.status == 200
        rt = json.loads(resp.body)["refresh_token"]
        h.clock.advance(60)
    assert len(writes) == 2
    assert writes[1].ttl == LIFETIME
    h.clock.advance(DAY)
    assert refresh(h, client, rt).status == 200
    assert len(writes) == 3


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    first=st.integers(min_value=0, max_value=UNUSED - 1),
    gaps=st.lists(
        st.integers(min_value=0, max_value=DAY) | st.integers(LIFETIME // 2, LIFETIME - DAY),
        min_size=0,
        max_size=3,
    ),
    final=st.integers(min_value=0, max_value=2 * LIFETIME),
)
@example(first=UNUSED - 1, gaps=[LIFETIME - DAY], final=LIFETIME - DAY - 1)
@example(first=0, gaps=[DAY - 1, DAY - 1, LIFETIME - DAY], final=LIFETIME)
def test_invariant_28_property_a_client_lives_exactly_while_used(
    first: int, gaps: list[int], final: int
) -> None:
    """A first use within the unused lifetime, then uses spaced by less than a lifetime (minus the
    one-day renewal granularity) never lose the registration; after the last use it survives less
    than one lifetime, and never past it."""
    h = Harness()
    client = h.register()
    for gap in [first, *gaps]:
        h.clock.advance(gap)
        assert redeem(h, client).status == 200
    last_use = h.clock.now
    h.clock.advance(final)
    alive = h.store.get("client", client["client_id"]) is not None
    if final >= LIFETIME:
        assert not alive
        assert unknown_everywhere(h, client)
    elif final < LIFETIME - DAY:
        assert alive
    assert h.clock.now - last_use == final
