"""Driving the device authorization grant (RFC 8628) through the harness: the client's requests and
the user's browser at the verification page, consent page and provider."""

from __future__ import annotations

import json
from typing import Any

from oauthproxy_adapters.testing.provider import UpstreamUser
from oauthproxy_core.config import DeviceGrant
from oauthproxy_core.http import Response
from tests.harness import Browser, Harness, consent_fields, make_config

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


def device_harness(**device: Any) -> Harness:
    return Harness(make_config(device=DeviceGrant(enabled=True, **device)))


def register_device_client(h: Harness, **meta: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "redirect_uris": ["http://127.0.0.1:9/cb"],
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token", DEVICE_GRANT],
        **meta,
    }
    return h.register(**fields)


def start(h: Harness, client: dict[str, Any], **params: str) -> Response:
    return h.form("/device_authorization", {"client_id": client["client_id"], **params})


def poll(h: Harness, client: dict[str, Any], device_code: str) -> Response:
    return h.token(
        {"grant_type": DEVICE_GRANT, "device_code": device_code, "client_id": client["client_id"]}
    )


def error_of(resp: Response) -> str:
    return str(json.loads(resp.body)["error"])


def enter_code(h: Harness, browser: Browser, user_code: str) -> Response:
    return h.form("/device", {"user_code": user_code}, browser=browser)


def consent(h: Harness, browser: Browser, entered: Response) -> Response:
    """GET the consent page the code entry led to."""
    assert entered.status == 303, entered.body
    location = entered.header("location") or ""
    return h.request("GET", location.removeprefix(h.config.issuer), browser=browser)


def approve_and_sign_in(
    h: Harness,
    browser: Browser,
    user_code: str,
    *,
    decision: str = "approve",
    user: UpstreamUser | None = None,
) -> Response:
    """The user's whole part: code, consent, provider; the proxy's last answer."""
    page = consent(h, browser, enter_code(h, browser, user_code))
    assert page.status == 200, page.body
    decided = h.form("/consent", {**consent_fields(page), "decision": decision}, browser=browser)
    if decision != "approve":
        return decided
    assert decided.status == 303, decided.body
    upstream = decided.header("location") or ""
    callback = h.upstream.login(upstream, user or UpstreamUser(id=42, login="octocat"))
    return h.request("GET", callback.removeprefix(h.config.issuer), browser=browser)


def drive_every_device_path(h: Harness | None = None) -> None:
    """Every state and event of the device machine, through the handlers (and the transaction's
    ``device_signed_in``): approved and redeemed, slowed down, denied, expired, client removed."""
    h = h or device_harness()
    client = register_device_client(h)
    grant = json.loads(start(h, client).body)
    assert poll(h, client, grant["device_code"]).status == 400  # polled
    assert error_of(poll(h, client, grant["device_code"])) == "slow_down"  # slowed_down
    assert approve_and_sign_in(h, Browser(), grant["user_code"]).status == 200
    assert poll(h, client, grant["device_code"]).status == 200  # token_issued

    denied = json.loads(start(h, client).body)
    approve_and_sign_in(h, Browser(), denied["user_code"], decision="deny")

    expired = json.loads(start(h, client).body)
    h.clock.advance(h.config.device.code_lifetime)
    assert error_of(poll(h, client, expired["device_code"])) == "expired_token"

    gone = json.loads(start(h, client).body)
    deleted = h.request(
        "DELETE",
        client["registration_client_uri"].removeprefix(h.config.issuer),
        headers=(("authorization", f"Bearer {client['registration_access_token']}"),),
    )
    assert deleted.status == 204, deleted.body
    assert enter_code(h, Browser(), gone["user_code"]).status == 400  # client_removed
