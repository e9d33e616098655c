"""RFC 8628, the device authorization grant (spec/rfc8628.md; handlers/device.py; spec/security.md 39),
through the core, the real driver and the memory store."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from oauthproxy_adapters.config_file import ConfigError, load_settings
from oauthproxy_adapters.driver import execute_sync
from oauthproxy_adapters.testing.provider import UpstreamUser
from oauthproxy_core.access import AccessPolicy
from oauthproxy_core.config import DeviceGrant
from oauthproxy_core.effects import CompareAndSet
from oauthproxy_core.user_codes import ALPHABET
from tests.adapters.test_config_file import GITHUB
from tests.harness import CONSENT_FORM_HEADERS, Browser, Harness, consent_fields, make_config
from tests.property.test_invariants_stateful import interleave
from tests.rfc.device_support import (
    DEVICE_GRANT,
    approve_and_sign_in,
    consent,
    device_harness,
    enter_code,
    error_of,
    poll,
    register_device_client,
    start,
)


def _started(h: Harness, client: dict[str, Any]) -> dict[str, Any]:
    resp = start(h, client)
    assert resp.status == 200, resp.body
    return dict(json.loads(resp.body))


def _approved(h: Harness) -> tuple[dict[str, Any], dict[str, Any]]:
    client = register_device_client(h)
    grant = _started(h, client)
    done = approve_and_sign_in(h, Browser(), grant["user_code"])
    assert done.status == 200, done.body
    return client, grant


def test_rfc8628_3_2_device_authorization_response() -> None:
    h = device_harness()
    client = register_device_client(h)
    resp = start(h, client)
    assert resp.status == 200
    assert resp.header("cache-control") == "no-store"
    body = json.loads(resp.body)
    assert set(body) == {
        "device_code",
        "user_code",
        "verification_uri",
        "verification_uri_complete",
        "expires_in",
        "interval",
    }
    assert body["verification_uri"] == h.config.issuer + "/device"
    assert body["verification_uri_complete"] == (
        f"{h.config.issuer}/device?user_code={body['user_code']}"
    )
    assert (body["expires_in"], body["interval"]) == (600, 5)
    # §6.1: 8 characters of 20 consonants, shown as two groups of four; the device code 256 bits.
    assert re.fullmatch(f"[{ALPHABET}]{{4}}-[{ALPHABET}]{{4}}", body["user_code"])
    assert len(body["device_code"]) == 43


def test_rfc8628_4_metadata_names_the_endpoint_and_the_grant_only_when_enabled() -> None:
    on = device_harness()
    meta = json.loads(on.request("GET", "/.well-known/oauth-authorization-server").body)
    assert meta["device_authorization_endpoint"] == on.config.issuer + "/device_authorization"
    assert DEVICE_GRANT in meta["grant_types_supported"]

    off = Harness()
    meta = json.loads(off.request("GET", "/.well-known/oauth-authorization-server").body)
    assert "device_authorization_endpoint" not in meta
    assert DEVICE_GRANT not in meta["grant_types_supported"]
    client = off.register()
    assert start(off, client).status == 404
    assert off.request("GET", "/device").status == 404
    assert error_of(poll(off, client, "x" * 43)) == "unsupported_grant_type"
    # RFC 7591 §3.2.2: a grant type the server does not support is invalid client metadata.
    refused = off.form(
        "/register",
        {},
        headers=(("content-type", "application/json"),),
    )
    assert refused.status == 400
    body = json.dumps(
        {
            "redirect_uris": ["http://127.0.0.1:9/cb"],
            "grant_types": ["authorization_code", DEVICE_GRANT],
        }
    ).encode()
    refused = off.request(
        "POST", "/register", body=body, headers=(("content-type", "application/json"),)
    )
    assert refused.status == 400 and error_of(refused) == "invalid_client_metadata"


def test_rfc8628_3_1_only_a_client_that_registered_the_grant_may_start_it() -> None:
    h = device_harness()
    plain = h.register()  # authorization_code only
    before = h.store.dump()
    resp = start(h, plain)
    assert resp.status == 400 and error_of(resp) == "unauthorized_client"
    unknown = h.form("/device_authorization", {"client_id": "nobody-registered-this"})
    assert unknown.status == 401 and error_of(unknown) == "invalid_client"
    # Nothing stored for refused requests (only the request counters of bounds.py move).
    assert {r for r in h.store.dump() if r[0] != "bound"} == {r for r in before if r[0] != "bound"}


def test_rfc8628_3_5_polling_before_approval_is_pending_then_slow_down_grows_the_interval() -> None:
    h = device_harness()
    client = register_device_client(h)
    grant = _started(h, client)
    code = grant["device_code"]
    assert error_of(poll(h, client, code)) == "authorization_pending"
    h.clock.advance(4)
    assert error_of(poll(h, client, code)) == "slow_down"
    # "the interval MUST be increased by 5 seconds for this and all subsequent requests": 10 now.
    h.clock.advance(9)
    assert error_of(poll(h, client, code)) == "slow_down"
    h.clock.advance(15)
    assert error_of(poll(h, client, code)) == "authorization_pending"


def test_rfc8628_3_5_access_denied_after_the_user_denies_on_the_consent_page() -> None:
    h = device_harness()
    client = register_device_client(h)
    grant = _started(h, client)
    browser = Browser()
    denied = approve_and_sign_in(h, browser, grant["user_code"], decision="deny")
    assert denied.status == 303
    # The browser returns to the verification page, which says so; the device is told at its poll.
    back = h.request("GET", (denied.header("location") or "").removeprefix(h.config.issuer))
    assert b"not completed" in back.body
    resp = poll(h, client, grant["device_code"])
    assert resp.status == 400 and error_of(resp) == "access_denied"


def test_rfc8628_3_5_expired_token_after_the_lifetime() -> None:
    h = device_harness(code_lifetime=60)
    client = register_device_client(h)
    grant = _started(h, client)
    h.clock.advance(60)
    assert error_of(poll(h, client, grant["device_code"])) == "expired_token"
    assert error_of(poll(h, client, grant["device_code"])) == "expired_token"
    # The user code died with it.
    entered = enter_code(h, Browser(), grant["user_code"])
    assert entered.status in (400, 404)


def test_rfc8628_3_5_approved_device_code_yields_resource_bound_tokens_and_refreshes() -> None:
    h = device_harness()
    client, grant = _approved(h)
    resp = poll(h, client, grant["device_code"])
    assert resp.status == 200, resp.body
    tokens = json.loads(resp.body)
    principal = h.bearer(tokens["access_token"])
    assert getattr(principal, "subject", None) == "idp:42"
    assert getattr(principal, "resource", None) == h.config.resource
    refreshed = h.token(
        {
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": client["client_id"],
        }
    )
    assert refreshed.status == 200, refreshed.body


def test_invariant_39_an_approved_device_code_is_redeemed_once() -> None:
    h = device_harness()
    client, grant = _approved(h)
    assert poll(h, client, grant["device_code"]).status == 200
    h.clock.advance(30)
    again = poll(h, client, grant["device_code"])
    assert again.status == 400 and error_of(again) == "invalid_grant"


def test_invariant_39_two_racing_polls_of_an_approved_code_yield_one_token() -> None:
    """Two polls interleaved effect by effect on one store: exactly one gets tokens."""
    h = device_harness()
    client, grant = _approved(h)
    form = {
        "grant_type": DEVICE_GRANT,
        "device_code": grant["device_code"],
        "client_id": client["client_id"],
    }
    reqs = [
        h.make_request(
            "POST",
            "/token",
            body="&".join(f"{k}={v}" for k, v in form.items()).encode(),
            headers=(("content-type", "application/x-www-form-urlencoded"),),
        )
        for _ in range(2)
    ]
    results = interleave(h, [h.server.handle(r, now=h.clock.now, random=h.random) for r in reqs])
    assert sorted(r.status for r in results) == [200, 400]


def test_invariant_39_another_clients_poll_is_refused_and_changes_nothing() -> None:
    h = device_harness()
    client, grant = _approved(h)
    other = register_device_client(h)
    before = {r for r in h.store.dump() if r[0] != "bound"}
    resp = poll(h, other, grant["device_code"])
    assert resp.status == 400 and error_of(resp) == "invalid_grant"
    assert {r for r in h.store.dump() if r[0] != "bound"} == before
    # The owner still gets its tokens.
    assert poll(h, client, grant["device_code"]).status == 200


def test_rfc8628_6_1_user_code_is_case_insensitive_and_dash_tolerant() -> None:
    h = device_harness()
    client = register_device_client(h)
    grant = _started(h, client)
    typed = grant["user_code"].replace("-", " ").lower()
    page = consent(h, Browser(), enter_code(h, Browser(), " " + typed + " "))
    assert page.status == 200


def test_invariant_39_a_user_code_is_entered_once() -> None:
    h = device_harness()
    client = register_device_client(h)
    grant = _started(h, client)
    assert enter_code(h, Browser(), grant["user_code"]).status == 303
    again = enter_code(h, Browser(), grant["user_code"])
    assert again.status == 400


def test_invariant_39_the_consent_page_says_device_sign_in_and_names_the_client() -> None:
    h = device_harness()
    client = register_device_client(h, client_name="Headless CLI")
    grant = _started(h, client)
    browser = Browser()
    page = consent(h, browser, enter_code(h, browser, grant["user_code"]))
    html = page.body.decode()
    assert 'id="device-sign-in"' in html and "Device sign-in" in html
    assert "Headless CLI" in html and client["client_id"] in html
    assert page.header("x-frame-options") == "DENY"


def test_invariant_39_wrong_user_codes_are_bounded_per_address_and_successes_are_not_counted() -> (
    None
):
    h = device_harness(failed_entries_per_address=3, failed_entries_total=10)
    client = register_device_client(h)
    # A good code does not use up the budget of a shared address.
    for _ in range(5):
        grant = _started(h, client)
        assert enter_code(h, Browser(), grant["user_code"]).status == 303
    for _ in range(3):
        assert enter_code(h, Browser(), "BCDF-GHJK").status == 400
    refused = enter_code(h, Browser(), "BCDF-GHJK")
    assert refused.status == 429 and refused.header("retry-after")
    # Past the bound even a valid code waits: no lookups are made for this source.
    grant = _started(h, client)
    assert enter_code(h, Browser(), grant["user_code"]).status == 429
    h.clock.advance(600)
    assert enter_code(h, Browser(), grant["user_code"]).status in (303, 400)


def test_invariant_39_malformed_user_codes_do_bounded_work_and_store_nothing() -> None:
    h = device_harness()
    before = {r for r in h.store.dump() if r[0] != "bound"}
    for typed in ("", "A" * 10_000, "AEIOU-1234", "\x00\x01", "BCDF-GHJKL", "ÄÖÜ"):
        resp = enter_code(h, Browser(), typed)
        assert resp.status == 400, typed
    assert {r for r in h.store.dump() if r[0] != "bound"} == before


def test_invariant_31_a_user_code_form_from_another_site_is_refused() -> None:
    h = device_harness()
    client = register_device_client(h)
    grant = _started(h, client)
    resp = h.form(
        "/device",
        {"user_code": grant["user_code"]},
        browser=Browser(),
        headers=(("sec-fetch-site", "cross-site"),),
    )
    assert resp.status == 403
    # The code was not used up by the refused form.
    assert enter_code(h, Browser(), grant["user_code"]).status == 303


def test_invariant_33_a_user_no_rule_admits_ends_the_device_with_access_denied() -> None:
    h = Harness(
        make_config(
            device=DeviceGrant(enabled=True), access=AccessPolicy(allowed_subjects=("idp:7",))
        )
    )
    client = register_device_client(h)
    grant = _started(h, client)
    done = approve_and_sign_in(
        h, Browser(), grant["user_code"], user=UpstreamUser(id=42, login="x")
    )
    assert done.status == 403
    assert error_of(poll(h, client, grant["device_code"])) == "access_denied"
    assert not [r for r in h.store.dump() if r[0] == "grant"]


def test_invariant_24_no_device_or_user_code_in_the_store() -> None:
    h = device_harness()
    client, grant = _approved(h)
    poll(h, client, grant["device_code"])
    raw = b"".join(k.encode() + v for _kind, k, v in h.store.dump())
    for secret in (grant["device_code"], grant["user_code"], grant["user_code"].replace("-", "")):
        assert secret.encode() not in raw


def test_rfc8628_3_3_verification_uri_complete_fills_the_form_but_does_not_submit() -> None:
    h = device_harness()
    client = register_device_client(h)
    grant = _started(h, client)
    page = h.request("GET", grant["verification_uri_complete"].removeprefix(h.config.issuer))
    assert page.status == 200
    assert f'value="{grant["user_code"]}"'.encode() in page.body
    # A GET never uses the code up.
    assert enter_code(h, Browser(), grant["user_code"]).status == 303


def test_rfc8628_3_1_a_static_client_may_hold_the_device_grant_alone(tmp_path: Path) -> None:
    """``[[clients.static]] grant_types`` with the device code grant and no redirect URI: parsed,
    and it signs in through the grant and refreshes; ``[device]`` values reach the core."""
    path = tmp_path / "proxy.toml"
    path.write_text(
        GITHUB
        + """
[device]
enabled = true
code_lifetime = 900
interval = 7

[[clients.static]]
client_id = "headless-cli"
token_endpoint_auth_method = "none"
grant_types = ["urn:ietf:params:oauth:grant-type:device_code", "refresh_token"]
"""
    )
    settings = load_settings(path)
    device = settings.proxy.device
    assert (device.enabled, device.code_lifetime, device.interval) == (True, 900, 7)
    static = settings.proxy.static_client("headless-cli")
    assert static is not None and static.redirect_uris == ()

    h = Harness(make_config(device=DeviceGrant(enabled=True), static_clients=(static,)), seed=3)
    client = {"client_id": "headless-cli"}
    grant = _started(h, client)
    assert approve_and_sign_in(h, Browser(), grant["user_code"]).status == 200
    tokens = json.loads(poll(h, client, grant["device_code"]).body)
    refreshed = h.token(
        {
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": "headless-cli",
        }
    )
    assert refreshed.status == 200, refreshed.body


def test_device_settings_are_bounded_in_the_configuration(tmp_path: Path) -> None:
    path = tmp_path / "proxy.toml"
    path.write_text(GITHUB + "\n[device]\ncode_lifetime = 5\ninterval = 0\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    message = str(info.value)
    assert "[device]" in message and "code_lifetime" in message and "interval" in message


def test_rfc8628_3_5_two_polls_at_once_are_one_too_many() -> None:
    """Interleaved effect by effect (as on two instances): the compare-and-set lets one through as
    a poll (pending), and the other, which lost it, is told to slow down."""
    h = device_harness()
    client = register_device_client(h)
    grant = _started(h, client)
    form = f"grant_type={DEVICE_GRANT}&device_code={grant['device_code']}&client_id={client['client_id']}"
    reqs = [
        h.make_request(
            "POST",
            "/token",
            body=form.encode(),
            headers=(("content-type", "application/x-www-form-urlencoded"),),
        )
        for _ in range(2)
    ]
    results = interleave(h, [h.server.handle(r, now=h.clock.now, random=h.random) for r in reqs])
    assert sorted(error_of(r) for r in results) == ["authorization_pending", "slow_down"]


def test_rfc8628_3_5_unknown_missing_or_oversized_device_codes_change_nothing() -> None:
    h = device_harness()
    client = register_device_client(h)
    _started(h, client)
    before = {r for r in h.store.dump() if r[0] != "bound"}
    cases = (
        ("x" * 43, "invalid_grant"),  # well-formed, unknown
        ("y" * 200, "invalid_grant"),  # longer than any device code: not even looked up
        ("y" * 10_000, "invalid_request"),  # past the parameter bound (spec/security.md 28)
        ("", "invalid_request"),
    )
    for code, error in cases:
        resp = poll(h, client, code)
        assert resp.status == 400
        assert error_of(resp) == error
        assert resp.header("cache-control") == "no-store"
    assert {r for r in h.store.dump() if r[0] != "bound"} == before


def _with_a_poll_before_the_device_write(
    h: Harness, req: Any, client: dict[str, Any], device_code: str
) -> tuple[Any, list[str]]:
    """Run ``req`` through the core; just before its first device write, the device polls (as it
    does every few seconds, on another instance say). The answer, and what the poll got."""
    handler = h.server.handle(req, now=h.clock.now, random=h.random)
    polls: list[str] = []
    sent: Any = None
    while True:
        try:
            effect = handler.send(sent)
        except StopIteration as stop:
            return stop.value, polls
        if isinstance(effect, CompareAndSet) and effect.kind == "device" and not polls:
            h.clock.advance(6)  # past the interval: an ordinary poll, not a slow_down
            polls.append(error_of(poll(h, client, device_code)))
        sent = execute_sync(effect, h.store, h.upstream)


def test_rfc8628_3_5_a_poll_racing_the_code_entry_or_the_sign_in_loses_nothing() -> None:
    """spec/security.md 39: each poll writes the device record (its interval lives there), so a
    poll between the user's step reading the record and writing it is ordinary. The step applies
    again to the fresh record: the entry leads to consent and the sign-in approves the device,
    whose next poll gets the tokens, exactly once."""
    h = device_harness()
    client = register_device_client(h)
    grant = _started(h, client)
    browser = Browser()
    entry = h.make_request(
        "POST",
        "/device",
        body=f"user_code={grant['user_code']}".encode(),
        headers=(("content-type", "application/x-www-form-urlencoded"), *CONSENT_FORM_HEADERS),
        browser=browser,
    )
    entered, polls = _with_a_poll_before_the_device_write(h, entry, client, grant["device_code"])
    assert polls == ["authorization_pending"]
    assert entered.status == 303, entered.body
    page = consent(h, browser, entered)
    decided = h.form("/consent", {**consent_fields(page), "decision": "approve"}, browser=browser)
    callback = h.upstream.login(
        decided.header("location") or "", UpstreamUser(id=42, login="octocat")
    )
    back = h.make_request("GET", callback.removeprefix(h.config.issuer), browser=browser)
    done, polls = _with_a_poll_before_the_device_write(h, back, client, grant["device_code"])
    assert polls == ["authorization_pending"]
    assert done.status == 200, done.body
    h.clock.advance(6)
    tokens = poll(h, client, grant["device_code"])
    assert tokens.status == 200, tokens.body
    h.clock.advance(6)
    assert error_of(poll(h, client, grant["device_code"])) == "invalid_grant"
