"""The token endpoint: ``authorization_code`` (RFC 6749 §4.1.3 / OAuth 2.1 §4.1.3, RFC 7636 §4.5-4.6,
RFC 8707 §2.2) and ``refresh_token`` (OAuth 2.1 §4.3, RFC 9700 §4.14.2), client authentication
(RFC 6749 §2.3.1) and the response headers of §5.1.

spec/security.md 5, 8, 9, 18-22, 26. The decision of invariant 9, documented in
``oauthproxy_core/handlers/token.py``: after the client authenticated, a redemption failing any binding
check consumes the code; a failed client authentication consumes nothing."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oauthproxy_core.handlers.bearer import Challenge, Principal
from oauthproxy_core.http import Response
from oauthproxy_core.tokens import mint_access_token
from tests.harness import VERIFIER, Browser, Harness, UpstreamUser, redirect_params

REDIRECT = "http://127.0.0.1:33418/callback"
RESOURCE = "https://proxy.example/mcp"


def _setup(h: Harness | None = None, **meta: Any) -> tuple[Harness, dict[str, Any], str]:
    h = h or Harness()
    client = h.register(**meta)
    return h, client, h.full_code(client, VERIFIER)


def _redeem_form(client: dict[str, Any], code: str, **overrides: str | None) -> dict[str, str]:
    form: dict[str, str | None] = {
        "grant_type": "authorization_code",
        "code": code,
        "client_id": client["client_id"],
        "redirect_uri": client["redirect_uris"][0],
        "code_verifier": VERIFIER,
        "resource": RESOURCE,
    }
    if "client_secret" in client and client["token_endpoint_auth_method"] == "client_secret_post":
        form["client_secret"] = client["client_secret"]
    form.update(overrides)
    return {k: v for k, v in form.items() if v is not None}


def _ok(resp: Response) -> dict[str, Any]:
    assert resp.status == 200, resp.body
    assert resp.header("content-type") == "application/json"
    assert resp.header("cache-control") == "no-store"
    assert resp.header("pragma") == "no-cache"
    return json.loads(resp.body)  # type: ignore[no-any-return]


def _err(resp: Response, status: int, error: str) -> dict[str, Any]:
    assert resp.status == status, (resp.status, resp.body)
    assert resp.header("content-type") == "application/json"
    assert resp.header("cache-control") == "no-store"
    assert resp.header("pragma") == "no-cache"
    body = json.loads(resp.body)
    assert body["error"] == error, body
    return body  # type: ignore[no-any-return]


def _refresh(h: Harness, client: dict[str, Any], token: str, **extra: str) -> Response:
    return h.token(
        {
            "grant_type": "refresh_token",
            "refresh_token": token,
            "client_id": client["client_id"],
            **extra,
        }
    )


def _revoked(h: Harness, access_token: str) -> bool:
    verdict = h.bearer(access_token)
    if isinstance(verdict, Challenge):
        assert verdict.status == 401
        assert 'error="invalid_token"' in verdict.www_authenticate
        return True
    return False


def _claims(access_token: str) -> dict[str, Any]:
    payload = access_token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))  # type: ignore[no-any-return]


# -- code redemption -------------------------------------------------------------------------


def test_rfc6749_5_1_successful_response() -> None:
    h, client, code = _setup()
    body = _ok(h.token(_redeem_form(client, code)))
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["scope"] == "mcp"
    assert body["access_token"] and body["refresh_token"]
    assert isinstance(h.bearer(body["access_token"], ("mcp",)), Principal)


def test_redemption_without_resource_and_redirect_uri_when_not_sent_at_authorize() -> None:
    h = Harness()
    client = h.register()
    browser = Browser()
    resp = h.run_to_callback(client, VERIFIER, browser, redirect_uri=None)  # type: ignore[arg-type]
    code = redirect_params(resp)["code"]
    _ok(h.token(_redeem_form(client, code, redirect_uri=None, resource=None)))


@pytest.mark.parametrize(
    "overrides",
    [
        {"code_verifier": "w" * 43},
        {"code_verifier": VERIFIER[:-1]},
        {"code_verifier": VERIFIER + "x"},
        {"code_verifier": None},
        {"code_verifier": "short"},
        {"redirect_uri": "http://127.0.0.1:33418/other"},
        {"redirect_uri": None},
        {"redirect_uri": "http://127.0.0.1:33419/callback"},
        {"resource": "https://proxy.example/other"},
        {"resource": "https://evil.example/mcp"},
        {"resource": "not-a-uri"},
    ],
    ids=[
        "wrong-verifier",
        "verifier-prefix",
        "verifier-longer",
        "no-verifier",
        "short-verifier",
        "other-redirect",
        "missing-redirect",
        "other-port",
        "other-resource",
        "foreign-resource",
        "malformed-resource",
    ],
)
def test_invariants_5_9_binding_mismatch_is_invalid_grant_and_consumes_the_code(
    overrides: dict[str, str | None],
) -> None:
    h, client, code = _setup()
    _err(h.token(_redeem_form(client, code, **overrides)), 400, "invalid_grant")
    # Decided in handlers/token.py: the failed redemption consumed the code.
    _err(h.token(_redeem_form(client, code)), 400, "invalid_grant")
    assert not [r for r in h.store.dump() if r[0] == "grant"]


def test_invariant_9_code_of_another_client_is_invalid_grant_and_consumed() -> None:
    h, client, code = _setup()
    thief = h.register()
    _err(h.token(_redeem_form(client, code, client_id=thief["client_id"])), 400, "invalid_grant")
    _err(h.token(_redeem_form(client, code)), 400, "invalid_grant")


def test_invariant_9_expired_code_is_invalid_grant() -> None:
    h, client, code = _setup()
    h.clock.advance(121)
    _err(h.token(_redeem_form(client, code)), 400, "invalid_grant")
    _err(h.token(_redeem_form(client, code)), 400, "invalid_grant")


def test_invariant_9_code_just_within_its_lifetime_works() -> None:
    h, client, code = _setup()
    h.clock.advance(119)
    _ok(h.token(_redeem_form(client, code)))


@pytest.mark.parametrize("code", ["", "x", "A" * 43, "A" * 5000])
def test_unknown_code_is_invalid_grant(code: str) -> None:
    h, client, _ = _setup()
    resp = h.token(_redeem_form(client, code))
    if code == "" or len(code) > 4096:  # missing, or over the parameter length bound
        _err(resp, 400, "invalid_request")
    else:
        _err(resp, 400, "invalid_grant")


def test_invariant_8_second_redemption_revokes_everything_from_the_first() -> None:
    h, client, code = _setup()
    first = _ok(h.token(_redeem_form(client, code)))
    assert not _revoked(h, first["access_token"])
    _err(h.token(_redeem_form(client, code)), 400, "invalid_grant")
    assert _revoked(h, first["access_token"])
    _err(_refresh(h, client, first["refresh_token"]), 400, "invalid_grant")


def test_invariant_8_replay_after_a_refresh_revokes_the_successors_too() -> None:
    h, client, code = _setup()
    first = _ok(h.token(_redeem_form(client, code)))
    second = _ok(_refresh(h, client, first["refresh_token"]))
    _err(h.token(_redeem_form(client, code)), 400, "invalid_grant")
    assert _revoked(h, second["access_token"])
    _err(_refresh(h, client, second["refresh_token"]), 400, "invalid_grant")


# -- client authentication (22) ---------------------------------------------------------------


def test_invariant_22_wrong_secret_is_401_and_consumes_nothing() -> None:
    h, client, code = _setup(token_endpoint_auth_method="client_secret_post")
    for bad in ("wrong", client["client_secret"] + "x", ""):
        resp = h.token(_redeem_form(client, code, client_secret=bad))
        _err(resp, 401, "invalid_client")
        assert (resp.header("www-authenticate") or "").startswith("Basic ")
    # Missing secret for a confidential client: authenticates as "none", which is not its method.
    _err(h.token(_redeem_form(client, code, client_secret=None)), 401, "invalid_client")
    _ok(h.token(_redeem_form(client, code)))


def test_invariant_22_unknown_client_is_401() -> None:
    h, client, code = _setup()
    resp = h.token(_redeem_form(client, code, client_id="nobody"))
    _err(resp, 401, "invalid_client")
    assert resp.header("www-authenticate") is not None
    _ok(h.token(_redeem_form(client, code)))


def _basic(cid: str, secret: str) -> tuple[tuple[str, str], ...]:
    raw = base64.b64encode(f"{cid}:{secret}".encode()).decode()
    return (("authorization", f"Basic {raw}"),)


def _pct(value: str) -> str:
    return "".join(f"%{b:02X}" for b in value.encode())


@pytest.mark.parametrize("encode", ["plain", "quote", "percent-every-byte"])
def test_rfc6749_2_3_1_client_secret_basic(encode: str) -> None:
    h, client, code = _setup(token_endpoint_auth_method="client_secret_basic")
    cid, secret = client["client_id"], client["client_secret"]
    if encode == "quote":
        cid, secret = quote(cid, safe=""), quote(secret, safe="")
    elif encode == "percent-every-byte":
        cid, secret = _pct(cid), _pct(secret)
    form = _redeem_form(client, code, client_id=None)
    _ok(h.token(form, headers=_basic(cid, secret)))


def test_rfc6749_2_3_1_basic_with_wrong_secret_consumes_nothing() -> None:
    h, client, code = _setup(token_endpoint_auth_method="client_secret_basic")
    form = _redeem_form(client, code, client_id=None)
    _err(h.token(form, headers=_basic(client["client_id"], "nope")), 401, "invalid_client")
    for header in ("Basic !!!notbase64", "Basic " + base64.b64encode(b"no-colon").decode()):
        _err(h.token(form, headers=(("authorization", header),)), 401, "invalid_client")
    _ok(h.token(form, headers=_basic(client["client_id"], client["client_secret"])))


def test_invariant_22_basic_client_using_post_is_401() -> None:
    h, client, code = _setup(token_endpoint_auth_method="client_secret_basic")
    form = _redeem_form(client, code, client_secret=client["client_secret"])
    _err(h.token(form), 401, "invalid_client")
    _ok(
        h.token(
            _redeem_form(client, code, client_id=None),
            headers=_basic(client["client_id"], client["client_secret"]),
        )
    )


def test_invariant_22_post_client_using_basic_is_401() -> None:
    h, client, code = _setup(token_endpoint_auth_method="client_secret_post")
    form = _redeem_form(client, code, client_id=None, client_secret=None)
    _err(
        h.token(form, headers=_basic(client["client_id"], client["client_secret"])),
        401,
        "invalid_client",
    )
    _ok(h.token(_redeem_form(client, code)))


def test_invariant_22_public_client_presenting_a_secret_is_401() -> None:
    h, client, code = _setup()
    _err(h.token(_redeem_form(client, code, client_secret="anything")), 401, "invalid_client")
    _ok(h.token(_redeem_form(client, code)))


def test_basic_and_body_secret_together_is_rejected() -> None:
    h, client, code = _setup(token_endpoint_auth_method="client_secret_basic")
    form = _redeem_form(client, code, client_secret=client["client_secret"])
    resp = h.token(form, headers=_basic(client["client_id"], client["client_secret"]))
    assert resp.status in (400, 401)
    _ok(
        h.token(
            _redeem_form(client, code, client_id=None),
            headers=_basic(client["client_id"], client["client_secret"]),
        )
    )


# -- request shape -------------------------------------------------------------------------------


def test_unsupported_and_missing_grant_type() -> None:
    h, client, _ = _setup()
    _err(
        h.token({"grant_type": "password", "client_id": client["client_id"]}),
        400,
        "unsupported_grant_type",
    )
    _err(h.token({"grant_type": "client_credentials"}), 400, "unsupported_grant_type")
    _err(h.token({"client_id": client["client_id"]}), 400, "invalid_request")


def test_client_not_registered_for_refresh_is_unauthorized_client() -> None:
    h, client, code = _setup(grant_types=["authorization_code"])
    body = _ok(h.token(_redeem_form(client, code)))
    assert "refresh_token" not in body
    _err(_refresh(h, client, "A" * 22 + "." + "B" * 43), 400, "unauthorized_client")


def test_token_endpoint_requires_form_encoding() -> None:
    h, client, code = _setup()
    resp = h.request(
        "POST",
        "/token",
        body=json.dumps(_redeem_form(client, code)).encode(),
        headers=(("content-type", "application/json"),),
    )
    _err(resp, 400, "invalid_request")
    _ok(h.token(_redeem_form(client, code)))


def test_repeated_token_parameter_is_invalid_request() -> None:
    h, client, code = _setup()
    body = urlencode(_redeem_form(client, code)) + "&code=" + code
    resp = h.request(
        "POST",
        "/token",
        body=body.encode(),
        headers=(("content-type", "application/x-www-form-urlencoded"),),
    )
    _err(resp, 400, "invalid_request")


# -- refresh (19, 20) ------------------------------------------------------------------------


def _tokens(
    h: Harness | None = None, **meta: Any
) -> tuple[Harness, dict[str, Any], dict[str, Any]]:
    h, client, code = _setup(h, **meta)
    return h, client, _ok(h.token(_redeem_form(client, code)))


def test_invariant_19_refresh_never_widens_scope() -> None:
    h, client, first = _tokens()
    _err(
        _refresh(h, client, first["refresh_token"], scope="mcp offline_access"),
        400,
        "invalid_scope",
    )
    _err(_refresh(h, client, first["refresh_token"], scope="admin"), 400, "invalid_scope")
    # Nothing was rotated or revoked by the refused attempts.
    body = _ok(_refresh(h, client, first["refresh_token"], scope="mcp"))
    assert body["scope"] == "mcp"


def test_invariant_19_refresh_may_narrow_scope() -> None:
    h = Harness()
    client = h.register()
    resp = h.run_to_callback(client, VERIFIER, Browser(), scope="mcp offline_access")
    first = _ok(h.token(_redeem_form(client, redirect_params(resp)["code"])))
    assert first["scope"] == "mcp offline_access"
    narrowed = _ok(_refresh(h, client, first["refresh_token"], scope="mcp"))
    assert narrowed["scope"] == "mcp"
    assert _claims(narrowed["access_token"])["scope"] == "mcp"


@pytest.mark.parametrize("resource", ["https://proxy.example/other", "https://evil.example/mcp"])
def test_invariant_19_refresh_never_changes_resource(resource: str) -> None:
    h, client, first = _tokens()
    _err(_refresh(h, client, first["refresh_token"], resource=resource), 400, "invalid_target")
    body = _ok(_refresh(h, client, first["refresh_token"], resource=RESOURCE))
    assert _claims(body["access_token"])["aud"] == RESOURCE


def test_invariant_19_refresh_by_another_client_fails_and_changes_nothing() -> None:
    h, client, first = _tokens()
    other = h.register()
    _err(_refresh(h, other, first["refresh_token"]), 400, "invalid_grant")
    assert not _revoked(h, first["access_token"])
    body = _ok(_refresh(h, client, first["refresh_token"]))
    assert _claims(body["access_token"])["client_id"] == client["client_id"]
    assert _claims(body["access_token"])["sub"] == _claims(first["access_token"])["sub"]


def test_invariant_20_retry_within_grace_returns_identical_response() -> None:
    h, client, first = _tokens()
    r0 = first["refresh_token"]
    resp1 = _refresh(h, client, r0)
    body1 = _ok(resp1)
    assert body1["refresh_token"] != r0
    h.clock.advance(29)
    resp_retry = _refresh(h, client, r0)
    _ok(resp_retry)
    assert resp_retry.body == resp1.body
    # The successor still works afterwards: the retry did not fork the family.
    _ok(_refresh(h, client, body1["refresh_token"]))


def test_invariant_20_retry_after_grace_revokes_the_family() -> None:
    h, client, first = _tokens()
    r0 = first["refresh_token"]
    body1 = _ok(_refresh(h, client, r0))
    h.clock.advance(31)
    _err(_refresh(h, client, r0), 400, "invalid_grant")
    _err(_refresh(h, client, body1["refresh_token"]), 400, "invalid_grant")
    assert _revoked(h, body1["access_token"])
    assert _revoked(h, first["access_token"])


def test_invariant_20_reuse_after_successor_was_used_revokes_the_family() -> None:
    h, client, first = _tokens()
    r0 = first["refresh_token"]
    body1 = _ok(_refresh(h, client, r0))
    h.clock.advance(1)
    body2 = _ok(_refresh(h, client, body1["refresh_token"]))
    h.clock.advance(1)
    _err(_refresh(h, client, r0), 400, "invalid_grant")
    _err(_refresh(h, client, body2["refresh_token"]), 400, "invalid_grant")
    assert _revoked(h, body2["access_token"])


def test_invariant_20_unknown_refresh_token_does_not_revoke() -> None:
    h, client, first = _tokens()
    grant_id = first["refresh_token"].split(".")[0]
    for token in (grant_id + "." + "A" * 43, "A" * 22 + "." + "B" * 43, "garbage", ""):
        resp = _refresh(h, client, token)
        _err(resp, 400, "invalid_request" if token == "" else "invalid_grant")
    assert not _revoked(h, first["access_token"])
    _ok(_refresh(h, client, first["refresh_token"]))


def test_refresh_lifetime_is_bounded() -> None:
    h, client, first = _tokens()
    h.clock.advance(30 * 24 * 3600 + 1)
    _err(_refresh(h, client, first["refresh_token"]), 400, "invalid_grant")


# -- tokens (18, 26) ---------------------------------------------------------------------------


def test_invariant_18_access_token_audience_is_the_resource() -> None:
    h, client, first = _tokens()
    claims = _claims(first["access_token"])
    assert claims["aud"] == RESOURCE == h.config.resource
    assert claims["iss"] == h.config.issuer
    assert claims["exp"] - claims["iat"] == 3600
    assert claims["client_id"] == client["client_id"]


def test_invariant_18_token_for_another_audience_is_rejected() -> None:
    h, client, first = _tokens()
    ctx = h.server.context(now=h.clock.now, random=h.random)
    gid = _claims(first["access_token"])["gid"]
    common = {
        "subject": "idp:42",
        "client_id": client["client_id"],
        "scopes": ("mcp",),
        "grant_id": gid,
        "jti": "j" * 22,
    }
    good, _ = mint_access_token(ctx, resource=RESOURCE, **common)  # type: ignore[arg-type]
    assert isinstance(h.bearer(good, ("mcp",)), Principal)  # the control: minting works
    for other in (
        "https://other.example/mcp",
        "https://proxy.example",
        "https://proxy.example/mcp/",
    ):
        foreign, _ = mint_access_token(ctx, resource=other, **common)  # type: ignore[arg-type]
        verdict = h.bearer(foreign, ("mcp",))
        assert isinstance(verdict, Challenge)
        assert verdict.status == 401
        assert 'error="invalid_token"' in verdict.www_authenticate


def test_invariant_18_no_token_passthrough() -> None:
    h, _client, first = _tokens()
    upstream_tokens = list(h.upstream.tokens)
    assert upstream_tokens and all(t.startswith("gho_") for t in upstream_tokens)
    for token in upstream_tokens:
        assert token not in json.dumps(first)
        verdict = h.bearer(token)
        assert isinstance(verdict, Challenge)
        assert verdict.status == 401
        assert 'error="invalid_token"' in verdict.www_authenticate


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(["wrong-verifier", "other-redirect", "other-resource", "ok"]))
def test_invariant_8_at_most_one_successful_redemption(first_kind: str) -> None:
    # Whatever the first attempt was, a code yields tokens at most once over any sequence.
    h, client, code = _setup()
    bad = {
        "wrong-verifier": {"code_verifier": "z" * 43},
        "other-redirect": {"redirect_uri": "http://127.0.0.1:33418/x"},
        "other-resource": {"resource": "https://proxy.example/x"},
        "ok": {},
    }[first_kind]
    statuses = [h.token(_redeem_form(client, code, **bad)).status]  # type: ignore[arg-type]
    statuses += [h.token(_redeem_form(client, code)).status for _ in range(3)]
    assert statuses.count(200) <= 1
    assert statuses.count(200) == (1 if first_kind == "ok" else 0)


def test_token_is_for_the_user_who_signed_in() -> None:
    h = Harness()
    client = h.register()
    resp = h.run_to_callback(client, VERIFIER, Browser(), UpstreamUser(id=7, login="ada"))
    body = _ok(h.token(_redeem_form(client, redirect_params(resp)["code"])))
    principal = h.bearer(body["access_token"])
    assert isinstance(principal, Principal)
    assert principal.subject == "idp:7"
