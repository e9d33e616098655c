"""RFC 7009 §2.1: ``token_type_hint`` is only a hint. "If the server is unable to locate the token
using the given hint, it MUST extend its search across all of its supported token types." A token sent
with the wrong hint, an unknown hint or none is found and revoked all the same."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oauthproxy_core.handlers.bearer import Challenge
from tests.harness import VERIFIER, Harness

hints = (
    st.none()
    | st.sampled_from(["access_token", "refresh_token", "", "id_token"])
    | st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", max_size=20)
)


def issue(h: Harness) -> tuple[dict[str, Any], dict[str, Any]]:
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
    assert resp.status == 200, resp.body
    return client, json.loads(resp.body)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(which=st.sampled_from(["access_token", "refresh_token"]), hint=hints)
def test_rfc7009_2_1_hint_never_limits_the_search(which: str, hint: str | None) -> None:
    h = Harness()
    client, tokens = issue(h)
    form = {"token": tokens[which], "client_id": client["client_id"]}
    if hint is not None:
        form["token_type_hint"] = hint
    resp = h.form("/revoke", form)
    assert resp.status == 200, resp.body
    # The whole grant is gone, whichever token was sent and whatever it was hinted as.
    verdict = h.bearer(tokens["access_token"])
    assert isinstance(verdict, Challenge) and verdict.status == 401
    refreshed = h.token(
        {
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": client["client_id"],
        }
    )
    assert refreshed.status == 400
    assert json.loads(refreshed.body)["error"] == "invalid_grant"


def test_rfc7009_2_1_wrong_hint_table() -> None:
    """The two wrong-hint cases the requirement names, spelled out."""
    for which, wrong in (("refresh_token", "access_token"), ("access_token", "refresh_token")):
        h = Harness()
        client, tokens = issue(h)
        resp = h.form(
            "/revoke",
            {"token": tokens[which], "token_type_hint": wrong, "client_id": client["client_id"]},
        )
        assert resp.status == 200
        assert isinstance(h.bearer(tokens["access_token"]), Challenge), (which, wrong)
