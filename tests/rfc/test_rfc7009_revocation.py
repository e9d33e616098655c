"""Token revocation, RFC 7009 §2: client authentication as at the token endpoint, 200 for any token
the caller may not or cannot revoke (§2.2), and revocation of a grant with every token of its family
(§2.1; spec/security.md 21). Revoking another client's token changes nothing."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from oauthproxy_core.handlers.bearer import Challenge, Principal
from oauthproxy_core.http import Response
from tests.harness import VERIFIER, Harness

RESOURCE = "https://proxy.example/mcp"


def _issue(h: Harness, **meta: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    client = h.register(**meta)
    code = h.full_code(client, VERIFIER)
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "client_id": client["client_id"],
        "redirect_uri": client["redirect_uris"][0],
        "code_verifier": VERIFIER,
        "resource": RESOURCE,
    }
    if client["token_endpoint_auth_method"] == "client_secret_post":
        form["client_secret"] = client["client_secret"]
    resp = h.token(form)
    assert resp.status == 200, resp.body
    return client, json.loads(resp.body)


def _revoke(h: Harness, client: dict[str, Any], token: str, **extra: str) -> Response:
    form = {"token": token, "client_id": client["client_id"], **extra}
    if client["token_endpoint_auth_method"] == "client_secret_post":
        form.setdefault("client_secret", client["client_secret"])
    return h.form("/revoke", form)


def _refresh(h: Harness, client: dict[str, Any], token: str) -> Response:
    form = {"grant_type": "refresh_token", "refresh_token": token, "client_id": client["client_id"]}
    if client["token_endpoint_auth_method"] == "client_secret_post":
        form["client_secret"] = client["client_secret"]
    return h.token(form)


def _ok_200(resp: Response) -> None:
    assert resp.status == 200, resp.body
    assert resp.body == b""
    assert resp.header("cache-control") == "no-store"
    assert resp.header("access-control-allow-origin") == "*"


def _is_dead(h: Harness, access: str) -> bool:
    verdict = h.bearer(access)
    return isinstance(verdict, Challenge) and verdict.status == 401


@pytest.mark.parametrize(
    "token",
    ["unknown", "A" * 22 + "." + "B" * 43, "eyJhbGciOiJub25lIn0.e30.", "x" * 4000, ""],
)
def test_rfc7009_2_2_unknown_tokens_are_200(token: str) -> None:
    h = Harness()
    client, tokens = _issue(h)
    _ok_200(_revoke(h, client, token))
    _ok_200(_revoke(h, client, token, token_type_hint="refresh_token"))
    _ok_200(_revoke(h, client, token, token_type_hint="something_else"))
    assert not _is_dead(h, tokens["access_token"])
    assert _refresh(h, client, tokens["refresh_token"]).status == 200


def test_rfc7009_2_1_revoking_the_refresh_token_revokes_the_grant() -> None:
    h = Harness()
    client, tokens = _issue(h)
    _ok_200(_revoke(h, client, tokens["refresh_token"], token_type_hint="refresh_token"))
    assert _is_dead(h, tokens["access_token"])
    resp = _refresh(h, client, tokens["refresh_token"])
    assert resp.status == 400
    assert json.loads(resp.body)["error"] == "invalid_grant"
    # Revoking again is still 200.
    _ok_200(_revoke(h, client, tokens["refresh_token"]))


def test_rfc7009_2_1_revoking_an_access_token_revokes_its_grant() -> None:
    h = Harness()
    client, tokens = _issue(h)
    _ok_200(_revoke(h, client, tokens["access_token"], token_type_hint="access_token"))
    assert _is_dead(h, tokens["access_token"])
    resp = _refresh(h, client, tokens["refresh_token"])
    assert resp.status == 400
    assert json.loads(resp.body)["error"] == "invalid_grant"


def test_revoking_a_rotated_refresh_token_revokes_the_successors() -> None:
    h = Harness()
    client, tokens = _issue(h)
    successor = json.loads(_refresh(h, client, tokens["refresh_token"]).body)
    _ok_200(_revoke(h, client, tokens["refresh_token"]))
    assert _is_dead(h, successor["access_token"])
    assert _refresh(h, client, successor["refresh_token"]).status == 400


@pytest.mark.parametrize("which", ["refresh_token", "access_token"])
def test_invariant_21_revoking_another_clients_token_changes_nothing(which: str) -> None:
    h = Harness()
    victim, tokens = _issue(h)
    attacker = h.register()
    before = sorted(h.store.dump())
    _ok_200(_revoke(h, attacker, tokens[which]))
    assert sorted(h.store.dump()) == before
    assert isinstance(h.bearer(tokens["access_token"]), Principal)
    assert _refresh(h, victim, tokens["refresh_token"]).status == 200


def test_invariant_21_revoking_one_grant_leaves_other_grants_alone() -> None:
    h = Harness()
    client, first = _issue(h)
    code = h.full_code(client, VERIFIER)
    second = json.loads(
        h.token(
            {
                "grant_type": "authorization_code",
                "code": code,
                "client_id": client["client_id"],
                "redirect_uri": client["redirect_uris"][0],
                "code_verifier": VERIFIER,
            }
        ).body
    )
    _ok_200(_revoke(h, client, first["refresh_token"]))
    assert _is_dead(h, first["access_token"])
    assert isinstance(h.bearer(second["access_token"]), Principal)
    assert _refresh(h, client, second["refresh_token"]).status == 200


def test_rfc7009_2_1_confidential_client_must_authenticate() -> None:
    h = Harness()
    client, tokens = _issue(h, token_endpoint_auth_method="client_secret_post")
    for extra in ({"client_secret": "wrong"}, {"client_secret": ""}):
        resp = _revoke(h, client, tokens["refresh_token"], **extra)
        assert resp.status == 401
        assert json.loads(resp.body)["error"] == "invalid_client"
        assert resp.header("www-authenticate") is not None
        assert resp.header("cache-control") == "no-store"
    assert not _is_dead(h, tokens["access_token"])
    # No client authentication at all.
    resp = h.form("/revoke", {"token": tokens["refresh_token"]})
    assert resp.status == 401
    assert json.loads(resp.body)["error"] == "invalid_client"
    assert not _is_dead(h, tokens["access_token"])
    # Basic works for a basic client; the right secret works for this one.
    _ok_200(_revoke(h, client, tokens["refresh_token"]))
    assert _is_dead(h, tokens["access_token"])


def test_rfc7009_basic_client_revokes_with_basic_credentials() -> None:
    h = Harness()
    client = h.register(token_endpoint_auth_method="client_secret_basic")
    code = h.full_code(client, VERIFIER)
    basic = base64.b64encode(f"{client['client_id']}:{client['client_secret']}".encode()).decode()
    auth = (("authorization", f"Basic {basic}"),)
    tokens = json.loads(
        h.token(
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": client["redirect_uris"][0],
                "code_verifier": VERIFIER,
            },
            headers=auth,
        ).body
    )
    _ok_200(h.form("/revoke", {"token": tokens["refresh_token"]}, headers=auth))
    assert _is_dead(h, tokens["access_token"])


def test_rfc7009_2_1_missing_token_parameter_is_invalid_request() -> None:
    h = Harness()
    client, _ = _issue(h)
    resp = h.form("/revoke", {"client_id": client["client_id"]})
    assert resp.status == 400
    assert json.loads(resp.body)["error"] == "invalid_request"
    assert resp.header("cache-control") == "no-store"


def test_rfc7009_upstream_token_revocation_is_a_noop() -> None:
    h = Harness()
    client, tokens = _issue(h)
    for upstream in list(h.upstream.tokens):
        _ok_200(_revoke(h, client, upstream))
    assert isinstance(h.bearer(tokens["access_token"]), Principal)
