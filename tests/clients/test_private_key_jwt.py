"""private_key_jwt client authentication for CIMD clients (RFC 7523 §2.2, §3): success with jwks and
with jwks_uri, and the failures: wrong aud, expired, too long-lived, replayed jti, HS256, unknown kid,
another key, iss/sub mismatch. A failed authentication consumes nothing (SECURITY.md 22)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import OctKey, OKPKey, RSAKey

from oauthproxy_core.client_auth import ASSERTION_TYPE
from tests.clients.support import (
    CIMD_URL,
    REDIRECT,
    assertion,
    cimd_harness,
    document,
    new_ec_key,
    public_jwks,
)
from tests.harness import VERIFIER, Browser, Harness, redirect_params

JWKS_URL = "https://client.example/oauth/jwks.json"


def _setup(*keys: Any, via_uri: bool = False) -> tuple[Harness, Any]:
    h, host = cimd_harness()
    if via_uri:
        host.serve(
            CIMD_URL, document(token_endpoint_auth_method="private_key_jwt", jwks_uri=JWKS_URL)
        )
        host.serve(JWKS_URL, public_jwks(*keys))
    else:
        host.serve(
            CIMD_URL,
            document(token_endpoint_auth_method="private_key_jwt", jwks=public_jwks(*keys)),
        )
    return h, host


def _code(h: Harness) -> str:
    client = {"client_id": CIMD_URL, "redirect_uris": [REDIRECT]}
    return redirect_params(h.run_to_callback(client, VERIFIER, Browser()))["code"]


def _redeem(h: Harness, code: str, client_assertion: str, **extra: str) -> Any:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "code_verifier": VERIFIER,
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": client_assertion,
        "resource": h.config.resource,
    }
    form.update(extra)
    return h.token(form)


def test_private_key_jwt_with_jwks_succeeds_and_the_jti_cannot_be_replayed() -> None:
    key = new_ec_key()
    h, _ = _setup(key)
    code = _code(h)
    signed = assertion(key, now=h.clock.now)
    resp = _redeem(h, code, signed, client_id=CIMD_URL)
    assert resp.status == 200, resp.body
    refresh = json.loads(resp.body)["refresh_token"]
    replay = h.token(
        {
            "grant_type": "refresh_token",
            "refresh_token": refresh,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": signed,
        }
    )
    assert replay.status == 401 and json.loads(replay.body)["error"] == "invalid_client"
    fresh = h.token(
        {
            "grant_type": "refresh_token",
            "refresh_token": refresh,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion(key, now=h.clock.now, aud=h.config.issuer),
        }
    )
    assert fresh.status == 200, fresh.body  # the issuer is an accepted audience too


@pytest.mark.filterwarnings("ignore:EdDSA is deprecated")
def test_private_key_jwt_with_jwks_uri_and_other_algorithms() -> None:
    ec = new_ec_key("ec")
    rsa = RSAKey.generate_key(2048, parameters={"kid": "rsa"})
    ed = OKPKey.generate_key("Ed25519", parameters={"kid": "ed"})
    h, host = _setup(ec, rsa, ed, via_uri=True)
    for key, alg in ((rsa, "RS256"), (ed, "EdDSA"), (ec, "ES256")):
        code = _code(h)
        resp = _redeem(h, code, assertion(key, now=h.clock.now, alg=alg, kid=key.kid))
        assert resp.status == 200, (alg, resp.body)
    assert any(f.url.endswith("/jwks.json") for f in host.fetches)


def _refused(h: Harness, signed: str, **extra: str) -> None:
    code = _code(h)
    resp = _redeem(h, code, signed, **extra)
    assert resp.status == 401, resp.body
    assert json.loads(resp.body)["error"] == "invalid_client"
    # Nothing consumed: the same code still redeems with a good assertion.
    key = h._good_key  # type: ignore[attr-defined]
    again = _redeem(h, code, assertion(key, now=h.clock.now))
    assert again.status == 200, again.body


def _harness() -> Harness:
    key = new_ec_key()
    h, _ = _setup(key)
    h._good_key = key  # type: ignore[attr-defined]
    return h


def test_wrong_audience_is_refused() -> None:
    h = _harness()
    _refused(h, assertion(h._good_key, now=h.clock.now, aud="https://other.example/token"))  # type: ignore[attr-defined]


def test_expired_and_overlong_assertions_are_refused() -> None:
    h = _harness()
    key = h._good_key  # type: ignore[attr-defined]
    _refused(h, assertion(key, now=h.clock.now - 600, lifetime=120))
    _refused(h, assertion(key, now=h.clock.now, lifetime=3600))
    _refused(h, assertion(key, now=h.clock.now, exp=None, iat=None))


def test_hs256_is_refused() -> None:
    h = _harness()
    secret = OctKey.generate_key(256, parameters={"kid": "k1"})
    signed = jwt.encode(
        {"alg": "HS256", "kid": "k1"},
        {
            "iss": CIMD_URL,
            "sub": CIMD_URL,
            "aud": h.config.token_endpoint,
            "exp": h.clock.now + 60,
            "jti": "x1",
        },
        secret,
        algorithms=["HS256"],
    )
    _refused(h, signed)


def test_unknown_kid_and_foreign_key_are_refused() -> None:
    h = _harness()
    _refused(h, assertion(h._good_key, now=h.clock.now, kid="nope"))  # type: ignore[attr-defined]
    _refused(h, assertion(new_ec_key("k1"), now=h.clock.now))


def test_iss_sub_and_client_id_must_agree() -> None:
    h = _harness()
    key = h._good_key  # type: ignore[attr-defined]
    _refused(h, assertion(key, now=h.clock.now, sub="someone-else"))
    _refused(h, assertion(key, now=h.clock.now), client_id="https://client.example/other.json")


def test_a_public_cimd_client_cannot_use_an_assertion_and_vice_versa() -> None:
    key = new_ec_key()
    h, host = cimd_harness()
    host.serve(CIMD_URL, document())  # token_endpoint_auth_method none
    code = _code(h)
    resp = _redeem(h, code, assertion(key, now=h.clock.now))
    assert resp.status == 401
    h2 = _harness()
    code2 = _code(h2)
    plain = h2.token(
        {
            "grant_type": "authorization_code",
            "code": code2,
            "redirect_uri": REDIRECT,
            "code_verifier": VERIFIER,
            "client_id": CIMD_URL,
        }
    )
    assert plain.status == 401  # registered method is private_key_jwt (SECURITY.md 22)
