"""private_key_jwt client authentication for CIMD clients (RFC 7523 §2.2, §3): success with jwks and
with jwks_uri, and the failures: wrong aud, expired, too long-lived, replayed jti, HS256, unknown kid,
another key, iss/sub mismatch. A failed authentication consumes nothing (spec/security.md 22).

The audience follows draft-ietf-oauth-rfc7523bis: the issuer identifier as a JSON string and nothing
else. The token endpoint URL, an array (even ``[issuer]``: the draft says the value "MUST be a JSON
string, and not a single-valued JSON array") and an array that adds a foreign audience are refused
(issue 13, item 7: all but the single-valued array were accepted, the 2025 audience-injection class).
The real ``mcp`` SDK's assertion builder, given the issuer from our metadata as its
``PrivateKeyJWTOAuthProvider`` does, is accepted through the ASGI app."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from joserfc import jwt
from joserfc.jwk import OctKey, OKPKey, RSAKey
from mcp.client.auth.extensions.client_credentials import SignedJWTParameters
from mcp.shared.auth import OAuthMetadata

from oauthproxy_adapters.asgi import OAuthProxyApp
from oauthproxy_adapters.proxy import AsyncProxy
from oauthproxy_adapters.stores.memory import AsyncMemoryStore
from oauthproxy_adapters.testing.flow import Reply, authorize, drive, post_form, request
from oauthproxy_core import FetchDocument, HttpFailure, HttpRequest, HttpResponse
from oauthproxy_core.client_auth import ASSERTION_TYPE
from tests.clients.support import (
    CIMD_URL,
    REDIRECT,
    DocumentHost,
    assertion,
    cimd_harness,
    document,
    new_ec_key,
    public_jwks,
)
from tests.harness import (
    VERIFIER,
    Browser,
    Harness,
    UpstreamUser,
    keys,
    make_config,
    redirect_params,
)
from tests.hostile.support import CookieJar, asgi_sender

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


def _code_form(code: str, client_assertion: str, **extra: str) -> dict[str, str]:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "code_verifier": VERIFIER,
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": client_assertion,
    }
    form.update(extra)
    return form


def _redeem(h: Harness, code: str, client_assertion: str, **extra: str) -> Any:
    return h.token(_code_form(code, client_assertion, resource=h.config.resource, **extra))


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
            "client_assertion": assertion(key, now=h.clock.now),
        }
    )
    assert fresh.status == 200, fresh.body


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
    assert any(f.url.endswith("/jwks.json") and f.purpose == "jwks" for f in host.fetches)


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
    assert plain.status == 401  # registered method is private_key_jwt (spec/security.md 22)


# -- the audience: the issuer, as a string, and nothing else (draft-ietf-oauth-rfc7523bis) -----------

#: Audiences that RFC 7523 let servers accept and the draft forbids, and their near misses.
FORBIDDEN_AUDIENCES: dict[str, Any] = {
    "token endpoint URL": "https://proxy.example/token",
    "revocation endpoint URL": "https://proxy.example/revoke",
    "issuer in a one-element array": ["https://proxy.example"],
    "issuer and a foreign audience": ["https://proxy.example", "https://other.example"],
    "foreign audience and the issuer": ["https://other.example", "https://proxy.example"],
    "token endpoint and the issuer": ["https://proxy.example/token", "https://proxy.example"],
    "issuer with a trailing slash": "https://proxy.example/",
    "issuer in upper case": "HTTPS://PROXY.EXAMPLE",
    "issuer with the default port": "https://proxy.example:443",
    "empty array": [],
    "missing": None,
    "a number": 1,
    "an object": {"aud": "https://proxy.example"},
}


@pytest.mark.parametrize("name", sorted(FORBIDDEN_AUDIENCES))
def test_invariant_22_assertion_audience_must_be_the_issuer_alone(name: str) -> None:
    h = _harness()
    _refused(h, assertion(h._good_key, now=h.clock.now, aud=FORBIDDEN_AUDIENCES[name]))  # type: ignore[attr-defined]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    aud=st.one_of(
        st.text(max_size=40),
        st.sampled_from(["https://proxy.example/token", "https://proxy.example/", "proxy.example"]),
        st.lists(
            st.sampled_from(["https://proxy.example", "https://other.example"]) | st.text(),
            max_size=3,
        ),
        st.integers(),
        st.none(),
    ).filter(lambda aud: aud != "https://proxy.example")
)
def test_invariant_22_property_any_other_audience_is_refused_and_consumes_nothing(aud: Any) -> None:
    h = _harness()
    _refused(h, assertion(h._good_key, now=h.clock.now, aud=aud))  # type: ignore[attr-defined]


# -- through the real ASGI app, with the mcp SDK's own assertion builder -----------------------------


BASE = "http://127.0.0.1:8935"


def _asgi_world(key: Any) -> tuple[Any, DocumentHost, Any]:
    config = make_config(issuer=BASE, cimd_allow_loopback=False)
    host = DocumentHost(callback_url=config.callback_url)
    host.serve(
        CIMD_URL,
        document(token_endpoint_auth_method="private_key_jwt", jwks=public_jwks(key)),
    )

    async def http(req: HttpRequest) -> HttpResponse | HttpFailure:
        return host(req)

    async def fetch(doc: FetchDocument) -> HttpResponse | HttpFailure:
        return host.fetch(doc)

    loop = asyncio.new_event_loop()
    proxy = AsyncProxy(config, keys(), AsyncMemoryStore(), http, fetch=fetch)
    return CookieJar(asgi_sender(OAuthProxyApp(proxy), loop), BASE), host, loop


def _asgi_redeem(jar: Any, host: DocumentHost, client_assertion: str) -> Reply:
    client = {"client_id": CIMD_URL, "redirect_uris": [REDIRECT]}
    jar.cookies.clear()
    code = drive(authorize(BASE, client, upstream=host, user=UpstreamUser(42, "octocat")), jar)[
        "code"
    ]
    reply: Reply = drive(post_form(BASE + "/token", _code_form(code, client_assertion)), jar)
    return reply


def _sdk_assertion(key: Any, audience: str) -> str:
    """What the mcp SDK's SignedJWTParameters builds for ``audience`` (its provider passes
    ``str(oauth_metadata.issuer)``)."""
    params = SignedJWTParameters(
        issuer=CIMD_URL,
        subject=CIMD_URL,
        signing_key=key.as_pem(private=True).decode(),
        signing_algorithm="ES256",
        lifetime_seconds=120,
    )
    return asyncio.run(params.create_assertion_provider()(audience))


@pytest.mark.parametrize(
    "name", ["token endpoint URL", "issuer and a foreign audience", "issuer in a one-element array"]
)
def test_invariant_22_regression_foreign_audiences_refused_through_the_asgi_app(name: str) -> None:
    key = new_ec_key()
    jar, host, loop = _asgi_world(key)
    try:
        aud = FORBIDDEN_AUDIENCES[name]
        now = int(time.time())
        refused = _asgi_redeem(jar, host, assertion(key, now=now, aud=_on_base(aud)))
        assert refused.status == 401 and refused.json()["error"] == "invalid_client", refused
        assert "access_token" not in refused.json()
    finally:
        loop.close()


def _on_base(aud: Any) -> Any:
    # FORBIDDEN_AUDIENCES name the harness issuer; this app's issuer is BASE.
    if isinstance(aud, list):
        return [_on_base(a) for a in aud]
    return aud.replace("https://proxy.example", BASE) if isinstance(aud, str) else aud


def test_invariant_22_the_mcp_sdk_assertion_for_our_issuer_is_accepted() -> None:
    key = new_ec_key()
    jar, host, loop = _asgi_world(key)
    try:
        metadata = drive(request("GET", BASE + "/.well-known/oauth-authorization-server"), jar)
        issuer = str(OAuthMetadata.model_validate(metadata.json()).issuer)
        assert issuer == BASE  # byte-identical: no trailing slash added (spec/interop.md)
        accepted = _asgi_redeem(jar, host, _sdk_assertion(key, issuer))
        assert accepted.status == 200, accepted
        assert accepted.json()["token_type"] == "Bearer"
        # The same SDK, pointed at the token endpoint URL as RFC 7523 once suggested: refused.
        refused = _asgi_redeem(jar, host, _sdk_assertion(key, metadata.json()["token_endpoint"]))
        assert refused.status == 401, refused
    finally:
        loop.close()
