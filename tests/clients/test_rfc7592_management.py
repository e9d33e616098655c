"""RFC 7592: reading, updating and deleting a registration with its registration access token; a
wrong or missing token, and an unknown client, get the same 401 invalid_token."""

from __future__ import annotations

import base64
import json
from typing import Any

from oauthproxy_core.handlers.bearer import Challenge
from tests.harness import VERIFIER, Harness

JSON = (("content-type", "application/json"),)


def _auth(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def _path(h: Harness, reg: dict[str, Any]) -> str:
    uri = reg["registration_client_uri"]
    assert uri == f"{h.config.issuer}/register/{reg['client_id']}"
    return str(uri).removeprefix(h.config.issuer)


def test_registration_returns_management_credentials() -> None:
    h = Harness()
    reg = h.register()
    assert len(reg["registration_access_token"]) >= 43  # 256 bits, base64url
    _path(h, reg)
    # spec/security.md 24: only the token's digest is stored.
    for _kind, key, value in h.store.dump():
        assert reg["registration_access_token"] not in key
        assert reg["registration_access_token"].encode() not in value


def test_read_update_delete_round_trip() -> None:
    h = Harness()
    reg = h.register(token_endpoint_auth_method="client_secret_basic")
    path, token = _path(h, reg), reg["registration_access_token"]

    read = h.request("GET", path, headers=_auth(token))
    assert read.status == 200 and read.header("cache-control") == "no-store"
    body = json.loads(read.body)
    assert body["client_id"] == reg["client_id"]
    assert body["redirect_uris"] == reg["redirect_uris"]
    assert "client_secret" not in body and "registration_access_token" not in body

    update = dict(body)
    update["redirect_uris"] = ["http://127.0.0.1:40001/cb"]
    update["client_name"] = "Renamed"
    update["client_secret"] = reg["client_secret"]
    resp = h.request("PUT", path, headers=JSON + _auth(token), body=json.dumps(update).encode())
    assert resp.status == 200, resp.body
    updated = json.loads(resp.body)
    assert updated["client_id"] == reg["client_id"]
    assert updated["redirect_uris"] == ["http://127.0.0.1:40001/cb"]
    assert updated["client_name"] == "Renamed"
    assert "client_secret" not in updated  # kept, not re-issued
    again = json.loads(h.request("GET", path, headers=_auth(token)).body)
    assert again["client_name"] == "Renamed"

    # The kept secret still authenticates at the token endpoint (an unknown code: invalid_grant).
    basic = base64.b64encode(f"{reg['client_id']}:{reg['client_secret']}".encode()).decode()
    tok = h.token(
        {"grant_type": "authorization_code", "code": "x" * 43},
        headers=(("authorization", f"Basic {basic}"),),
    )
    assert json.loads(tok.body)["error"] == "invalid_grant"

    deleted = h.request("DELETE", path, headers=_auth(token))
    assert deleted.status == 204
    assert h.request("GET", path, headers=_auth(token)).status == 401
    tok = h.token(
        {"grant_type": "authorization_code", "code": "x" * 43},
        headers=(("authorization", f"Basic {basic}"),),
    )
    assert tok.status == 401


def test_update_changing_method_issues_or_drops_the_secret() -> None:
    h = Harness()
    reg = h.register()  # none
    path, token = _path(h, reg), reg["registration_access_token"]
    body = json.loads(h.request("GET", path, headers=_auth(token)).body)
    body["token_endpoint_auth_method"] = "client_secret_post"
    resp = h.request("PUT", path, headers=JSON + _auth(token), body=json.dumps(body).encode())
    assert resp.status == 200, resp.body
    assert len(json.loads(resp.body)["client_secret"]) >= 43
    body["token_endpoint_auth_method"] = "none"
    resp = h.request("PUT", path, headers=JSON + _auth(token), body=json.dumps(body).encode())
    assert resp.status == 200 and "client_secret" not in json.loads(resp.body)


def test_update_validates_like_registration() -> None:
    h = Harness()
    reg = h.register(token_endpoint_auth_method="client_secret_basic")
    path, token = _path(h, reg), reg["registration_access_token"]
    body = json.loads(h.request("GET", path, headers=_auth(token)).body)
    for change, error in (
        ({"redirect_uris": ["javascript:alert(1)"]}, "invalid_redirect_uri"),
        ({"client_id": "other"}, "invalid_client_metadata"),
        ({"client_secret": "wrong-secret"}, "invalid_client_metadata"),
    ):
        resp = h.request(
            "PUT", path, headers=JSON + _auth(token), body=json.dumps({**body, **change}).encode()
        )
        assert resp.status == 400 and json.loads(resp.body)["error"] == error, change
    assert json.loads(h.request("GET", path, headers=_auth(token)).body) == body


def test_wrong_missing_token_and_unknown_client_are_indistinguishable() -> None:
    h = Harness()
    reg = h.register()
    other = h.register()
    path = _path(h, reg)
    answers = [
        h.request("GET", path),
        h.request("GET", path, headers=_auth("wrong")),
        h.request("GET", path, headers=_auth(other["registration_access_token"])),
        h.request("DELETE", path, headers=_auth("wrong")),
        h.request("PUT", path, headers=JSON + _auth("wrong"), body=b"{}"),
        h.request(
            "GET", "/register/no-such-client", headers=_auth(reg["registration_access_token"])
        ),
    ]
    for resp in answers:
        assert resp.status == 401
        assert json.loads(resp.body)["error"] == "invalid_token"
        assert resp.header("www-authenticate") == 'Bearer error="invalid_token"'
    bodies = {r.body for r in answers[1:]}  # a missing token says so; existence never shows
    assert len(bodies) == 1
    # The client is untouched.
    assert h.request("GET", path, headers=_auth(reg["registration_access_token"])).status == 200


def test_preflight_allows_management_methods() -> None:
    h = Harness()
    reg = h.register()
    resp = h.request("OPTIONS", _path(h, reg))
    assert resp.status == 204
    assert "DELETE" in (resp.header("access-control-allow-methods") or "")


def test_deleting_a_registration_ends_its_refresh_tokens() -> None:
    """RFC 7592 §2.3: after DELETE the client's grants can no longer be used to mint tokens, and
    its access tokens are refused at once (spec/security.md 34; through the real adapters in
    test_invariant_34_deleted_client.py)."""
    h = Harness()
    reg = h.register()
    code = h.full_code(reg, VERIFIER)
    tok = json.loads(
        h.token(
            {
                "grant_type": "authorization_code",
                "code": code,
                "client_id": reg["client_id"],
                "redirect_uri": reg["redirect_uris"][0],
                "code_verifier": VERIFIER,
            }
        ).body
    )
    assert "refresh_token" in tok, tok
    refresh = {
        "grant_type": "refresh_token",
        "refresh_token": tok["refresh_token"],
        "client_id": reg["client_id"],
    }
    assert (
        h.request("DELETE", _path(h, reg), headers=_auth(reg["registration_access_token"])).status
        == 204
    )
    assert isinstance(h.bearer(tok["access_token"]), Challenge)
    resp = h.token(refresh)
    assert resp.status in (400, 401)
    assert json.loads(resp.body)["error"] in ("invalid_client", "invalid_grant")
    assert "access_token" not in json.loads(resp.body)
