"""Keys for signing, sealing and cookies are separate and rotate without logging anyone out (the
shared-secret incident of spec/security.md): after a rotation the old keys still verify and unseal
until retired."""

from __future__ import annotations

import base64
import json

from oauthproxy_adapters.keygen import new_keyring_document, retire, rotate
from oauthproxy_core import AuthorizationServer, Keyring
from oauthproxy_core.handlers.bearer import Challenge, Principal
from tests.harness import VERIFIER, Browser, Harness, consent_fields


def _swap_keys(h: Harness, document: dict) -> None:  # type: ignore[type-arg]
    h.server = AuthorizationServer(h.config, Keyring.from_dict(document))


def _tokens(h: Harness) -> tuple[dict, dict]:  # type: ignore[type-arg]
    client = h.register()
    code = h.full_code(client, VERIFIER)
    resp = h.token(
        {
            "grant_type": "authorization_code",
            "code": code,
            "client_id": client["client_id"],
            "redirect_uri": client["redirect_uris"][0],
            "code_verifier": VERIFIER,
        }
    )
    assert resp.status == 200
    return client, json.loads(resp.body)


def test_the_three_key_sets_are_independent() -> None:
    doc = new_keyring_document()
    ring = Keyring.from_dict(doc)
    secrets = {k.secret for k in ring.sealing} | {k.secret for k in ring.cookie}
    assert len(secrets) == 2
    assert ring.sealing[0].kid != ring.cookie[0].kid


def test_signing_rotation_keeps_issued_tokens_valid_until_retired() -> None:
    doc = new_keyring_document()
    h = Harness()
    _swap_keys(h, doc)
    _client, old = _tokens(h)
    rotated = rotate(doc, "signing")
    _swap_keys(h, rotated)
    assert isinstance(h.bearer(old["access_token"]), Principal)  # old kid still verifies
    _, new = _tokens(h)
    header = new["access_token"].split(".")[0]
    new_kid = json.loads(base64.urlsafe_b64decode(header + "=="))["kid"]
    assert new_kid == rotated["signing"][0]["kid"] != doc["signing"][0]["kid"]
    # Retiring the old key ends the old tokens, and only them.
    _swap_keys(h, retire(rotated, keep=1))
    assert isinstance(h.bearer(old["access_token"]), Challenge)
    assert isinstance(h.bearer(new["access_token"]), Principal)


def test_sealing_rotation_keeps_grants_usable() -> None:
    """Grants sealed under the old key (the refresh grace response, upstream tokens) still open."""
    doc = new_keyring_document()
    h = Harness()
    _swap_keys(h, doc)
    client, old = _tokens(h)
    first = h.token(
        {
            "grant_type": "refresh_token",
            "refresh_token": old["refresh_token"],
            "client_id": client["client_id"],
        }
    )
    assert first.status == 200
    _swap_keys(h, rotate(doc, "sealing"))
    # A retry within the grace window unseals the old-key response, byte for byte.
    retry = h.token(
        {
            "grant_type": "refresh_token",
            "refresh_token": old["refresh_token"],
            "client_id": client["client_id"],
        }
    )
    assert retry.status == 200 and retry.body == first.body
    nxt = h.token(
        {
            "grant_type": "refresh_token",
            "refresh_token": json.loads(first.body)["refresh_token"],
            "client_id": client["client_id"],
        }
    )
    assert nxt.status == 200


def test_cookie_rotation_keeps_a_consent_page_in_progress_valid() -> None:
    doc = new_keyring_document()
    h = Harness()
    _swap_keys(h, doc)
    client = h.register()
    browser = Browser()
    resp = h.request("GET", h.authorize_url(client, VERIFIER), browser=browser)
    page = h.request("GET", resp.header("location").removeprefix(h.config.issuer), browser=browser)
    fields = consent_fields(page)
    _swap_keys(h, rotate(doc, "cookie"))
    approved = h.form("/consent", {**fields, "decision": "approve"}, browser=browser)
    assert approved.status == 303
    # Once the old cookie key is retired, a CSRF token made under it is refused.
    resp = h.request("GET", h.authorize_url(client, VERIFIER), browser=browser)
    _swap_keys(h, doc)
    page = h.request("GET", resp.header("location").removeprefix(h.config.issuer), browser=browser)
    fields = consent_fields(page)
    _swap_keys(h, retire(rotate(doc, "cookie"), keep=1))
    assert h.form("/consent", {**fields, "decision": "approve"}, browser=browser).status == 403
