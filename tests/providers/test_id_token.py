"""OIDC Core §3.1.3.7 ID token validation and the JWK Set cache (record kind ``jwks``)."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import pytest

from oauthproxy_adapters.driver import run
from oauthproxy_adapters.stores.memory import MemoryStore
from oauthproxy_core.crypto import digest
from oauthproxy_core.effects import HttpFailure, HttpRequest, HttpResponse
from oauthproxy_core.providers import (
    IdTokenError,
    UnknownSigningKeyError,
    build_jwks_request,
    parse_jwks_response,
    verified_id_token_claims,
    verify_id_token,
)
from oauthproxy_core.upstream import (
    UpstreamError,
    UpstreamProfile,
    UpstreamProtocolError,
    UpstreamUnavailableError,
    nonce_for_state,
)
from tests.harness import Clock

from .idp import EC_KEY, RSA_KEY, RSA_KEY_2, b64u, json_response, jwks_of, sign, unsigned

NOW = 1_800_000_000
ISSUER = "https://accounts.example"
CLIENT = "proxy-client.apps.example"
NONCE = nonce_for_state("upstream-state-0123456789abcdef0123456789abcdef")


def profile(**overrides: Any) -> UpstreamProfile:
    values: dict[str, Any] = {
        "name": "idp",
        "authorize_url": ISSUER + "/authorize",
        "token_url": ISSUER + "/token",
        "jwks_uri": ISSUER + "/jwks",
        "client_id": CLIENT,
        "client_secret": "s",
        "scopes": ("openid", "email"),
        "issuer": ISSUER,
        "identity_source": "id_token",
        "nonce": True,
        "id_token_signing_algs": ("RS256", "ES256"),
    }
    values.update(overrides)
    return UpstreamProfile(**values)


def claims(**overrides: Any) -> dict[str, Any]:
    c: dict[str, Any] = {
        "iss": ISSUER,
        "aud": CLIENT,
        "sub": "110169484474386276334",
        "iat": NOW - 5,
        "exp": NOW + 3600,
        "nonce": NONCE,
        "email": "user@example.com",
    }
    c.update(overrides)
    return {k: v for k, v in c.items() if v is not None}


def verify(
    token: str, *, p: UpstreamProfile | None = None, jwks: Any = None, nonce: str | None = NONCE
) -> dict[str, Any]:
    return verify_id_token(
        p or profile(), token, jwks or jwks_of(RSA_KEY, EC_KEY), now=NOW, nonce=nonce
    )


def test_good_token() -> None:
    out = verify(sign(claims()))
    assert out["sub"] == "110169484474386276334"
    assert out["email"] == "user@example.com"


def test_good_ec_token() -> None:
    assert verify(sign(claims(), EC_KEY, "ES256"))["sub"]


def test_list_audience_with_azp() -> None:
    assert verify(sign(claims(aud=[CLIENT, "other"], azp=CLIENT)))


@pytest.mark.parametrize(
    "bad",
    [
        {"iss": "https://evil.example"},
        {"iss": ISSUER + "/"},  # exact comparison, no normalisation
        {"iss": None},
        {"aud": "another-client"},
        {"aud": ["another-client"]},
        {"aud": [CLIENT, "other"]},  # several audiences and no azp
        {"azp": "another-client"},
        {"aud": None},
        {"exp": NOW - 61},  # beyond the 60 s skew
        {"exp": None},
        {"iat": NOW + 600},  # issued in the future
        {"iat": None},
        {"sub": None},
        {"nonce": "another-transaction"},
        {"nonce": None},
    ],
)
def test_bad_claims_are_rejected(bad: dict[str, Any]) -> None:
    with pytest.raises(IdTokenError):
        verify(sign(claims(**bad)))


def test_expiry_within_skew_is_accepted() -> None:
    assert verify(sign(claims(exp=NOW - 30)))


def test_nonce_not_required_when_none_was_sent() -> None:
    assert verify(sign(claims(nonce=None)), nonce=None)


def test_unknown_kid() -> None:
    with pytest.raises(UnknownSigningKeyError):
        verify(sign(claims(), RSA_KEY_2))


def test_no_kid_with_ambiguous_set() -> None:
    token = sign(claims(), RSA_KEY, kid=None)
    with pytest.raises(UnknownSigningKeyError):
        verify(token, jwks=jwks_of(RSA_KEY, RSA_KEY_2))
    # With a single RSA key there is nothing to choose: accepted.
    assert verify(token, jwks=jwks_of(RSA_KEY))


def test_alg_none_is_rejected() -> None:
    token = unsigned(claims(), {"alg": "none", "kid": RSA_KEY.kid})
    with pytest.raises(IdTokenError):
        verify(token)


def test_hs256_with_the_public_key_is_rejected() -> None:
    # Algorithm confusion: HMAC keyed with the provider's public key material.
    public_pem = RSA_KEY.as_pem(private=False)
    head = b64u(json.dumps({"alg": "HS256", "kid": RSA_KEY.kid}).encode())
    body = b64u(json.dumps(claims()).encode())
    mac = hmac.new(public_pem, f"{head}.{body}".encode(), hashlib.sha256).digest()
    forged = f"{head}.{body}.{b64u(mac)}"
    with pytest.raises(IdTokenError):
        verify(forged)
    # Even when a (hostile) JWK Set offers an "oct" key under that kid, and the profile allowed HS256
    # by mistake, the profile refuses: HMAC is not an ID token algorithm here.
    oct_set = {"keys": [{"kty": "oct", "kid": RSA_KEY.kid, "k": b64u(public_pem)}]}
    with pytest.raises(IdTokenError):
        verify(forged, jwks=oct_set)
    with pytest.raises(ValueError):
        profile(id_token_signing_algs=("HS256",))


def test_alg_outside_profile_is_rejected() -> None:
    with pytest.raises(IdTokenError):
        verify(sign(claims(), EC_KEY, "ES256"), p=profile(id_token_signing_algs=("RS256",)))


def test_tampered_payload_is_rejected() -> None:
    head, _body, sig = sign(claims()).split(".")
    body = b64u(json.dumps(claims(sub="someone-else")).encode())
    with pytest.raises(IdTokenError):
        verify(f"{head}.{body}.{sig}")


def test_wrong_key_same_kid_is_rejected() -> None:
    impostor = sign(claims(), RSA_KEY_2, kid=RSA_KEY.kid)
    with pytest.raises(IdTokenError):
        verify(impostor)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "a.b",
        "a.b.c.d.e",
        "!!.??.##",
        "e30.e30.",
        "x" * 20000,
        unsigned({}, {"alg": "RS256", "crit": ["b64"]}),
    ],
)
def test_malformed_tokens(token: str) -> None:
    with pytest.raises(IdTokenError):
        verify(token)


# -- the JWK Set: fetch, cache, refetch once on an unknown kid ---------------------------------------


class Jwks:
    def __init__(self, *keys: Any) -> None:
        self.keys = list(keys)
        self.calls: list[HttpRequest] = []
        self.fail: HttpResponse | HttpFailure | None = None

    def __call__(self, req: HttpRequest) -> HttpResponse | HttpFailure:
        self.calls.append(req)
        if self.fail is not None:
            return self.fail
        return json_response(jwks_of(*self.keys))


def drive(store: MemoryStore, http: Jwks, token: str) -> dict[str, Any]:
    return run(verified_id_token_claims(profile(), token, now=NOW, nonce=NONCE), store, http)  # type: ignore[no-any-return]


def test_jwks_is_cached_in_the_store() -> None:
    store, http = MemoryStore(clock=Clock(NOW)), Jwks(RSA_KEY)
    assert drive(store, http, sign(claims()))["sub"]
    assert drive(store, http, sign(claims()))["sub"]
    assert len(http.calls) == 1
    stored = store.get("jwks", digest(ISSUER + "/jwks"))
    assert stored is not None and json.loads(stored.value) == jwks_of(RSA_KEY)


def test_jwks_cache_expires() -> None:
    clock = Clock(NOW)
    store, http = MemoryStore(clock=clock), Jwks(RSA_KEY)
    drive(store, http, sign(claims()))
    clock.advance(3601)
    drive(store, http, sign(claims()))
    assert len(http.calls) == 2


def test_key_rotation_refetches_once() -> None:
    store, http = MemoryStore(clock=Clock(NOW)), Jwks(RSA_KEY)
    drive(store, http, sign(claims()))
    http.keys = [RSA_KEY_2]  # the provider rotated
    assert drive(store, http, sign(claims(), RSA_KEY_2))["sub"]
    assert len(http.calls) == 2
    # The new set is cached now.
    drive(store, http, sign(claims(), RSA_KEY_2))
    assert len(http.calls) == 2


def test_unknown_kid_refetch_still_unknown_rejects() -> None:
    store, http = MemoryStore(clock=Clock(NOW)), Jwks(RSA_KEY)
    drive(store, http, sign(claims()))
    with pytest.raises(UnknownSigningKeyError):
        drive(store, http, sign(claims(), RSA_KEY_2))
    assert len(http.calls) == 2  # exactly one refetch


def test_fresh_fetch_is_not_refetched() -> None:
    store, http = MemoryStore(clock=Clock(NOW)), Jwks(RSA_KEY)
    with pytest.raises(UnknownSigningKeyError):
        drive(store, http, sign(claims(), RSA_KEY_2))
    assert len(http.calls) == 1


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (HttpFailure(reason="timeout"), UpstreamUnavailableError),
        (json_response({}, 503), UpstreamUnavailableError),
        (json_response({}, 429), UpstreamUnavailableError),
        (json_response({}, 404), UpstreamProtocolError),
        (json_response({"keys": "nope"}), UpstreamProtocolError),
        (json_response([1, 2]), UpstreamProtocolError),
        (HttpResponse(status=200, body=b"<html>"), UpstreamProtocolError),
    ],
)
def test_jwks_failures_are_typed(
    answer: HttpResponse | HttpFailure, error: type[UpstreamError]
) -> None:
    with pytest.raises(error):
        parse_jwks_response(answer)
    store, http = MemoryStore(clock=Clock(NOW)), Jwks(RSA_KEY)
    http.fail = answer
    with pytest.raises(error):
        drive(store, http, sign(claims()))
    assert store.get("jwks", digest(ISSUER + "/jwks")) is None  # nothing cached


def test_jwks_request() -> None:
    req = build_jwks_request(profile())
    assert (req.method, req.url) == ("GET", ISSUER + "/jwks")
    assert ("Accept", "application/json") in req.headers
