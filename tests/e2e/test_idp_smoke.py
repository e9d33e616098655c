"""Smoke tests for the loopback upstream IdP (tests/upstream_idp): the authorization-code + PKCE
flow exactly as the proxy will run it against a real provider, plus denial, mandatory PKCE and
access-token expiry."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from urllib.parse import parse_qsl, urljoin, urlsplit

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from tests.e2e import conftest_idp as idp_support
from tests.e2e.conftest_idp import CLIENT_ID, CLIENT_SECRET, TEST_USER, IdpProcess, free_port

# The fixtures under test, bound here so this module also runs before tests/e2e/conftest.py
# exposes them (a module-level fixture simply takes precedence over a conftest one).
idp_installed = idp_support.idp_installed
oidc_idp = idp_support.oidc_idp

SCOPE = "openid email profile offline_access"


def _callback() -> str:
    # The proxy's callback; nothing listens there, the redirect is only inspected.
    return f"http://127.0.0.1:{free_port()}/auth/callback"


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _authorize(idp: IdpProcess, redirect_uri: str, **params: str) -> dict[str, str]:
    """Play the browser: follow the IdP's redirects by hand (keeping its cookies) until one
    points at ``redirect_uri``; return that redirect's query parameters."""
    query = {"response_type": "code", "client_id": CLIENT_ID, "redirect_uri": redirect_uri}
    query.update(params)
    with httpx.Client(follow_redirects=False, timeout=5.0) as browser:
        response = browser.get(idp.authorization_endpoint, params=query)
        for _ in range(10):
            assert response.status_code in (302, 303), (
                f"{response.status_code} {response.text}\n{idp.output()}"
            )
            location = urljoin(str(response.url), response.headers["location"])
            if location.split("?", 1)[0] == redirect_uri:
                return dict(parse_qsl(urlsplit(location).query))
            assert location.startswith(idp.issuer + "/"), location
            response = browser.get(location)
    raise AssertionError(f"no redirect to {redirect_uri} after 10 hops\n{idp.output()}")


def _token(idp: IdpProcess, **form: str) -> httpx.Response:
    body = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, **form}
    return httpx.post(idp.token_endpoint, data=body, timeout=5.0)


def _userinfo(idp: IdpProcess, access_token: str) -> httpx.Response:
    return httpx.get(
        idp.userinfo_endpoint, headers={"Authorization": f"Bearer {access_token}"}, timeout=5.0
    )


def _code_flow(idp: IdpProcess, redirect_uri: str) -> dict[str, object]:
    verifier, challenge = _pkce()
    state = secrets.token_urlsafe(16)
    result = _authorize(
        idp,
        redirect_uri,
        scope=SCOPE,
        state=state,
        code_challenge=challenge,
        code_challenge_method="S256",
    )
    assert result.get("state") == state
    assert result.get("iss") == idp.issuer
    assert "code" in result, result
    response = _token(
        idp,
        grant_type="authorization_code",
        code=result["code"],
        redirect_uri=redirect_uri,
        code_verifier=verifier,
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_code_flow_with_pkce_userinfo_and_refresh(oidc_idp) -> None:
    redirect_uri = _callback()
    idp = oidc_idp([redirect_uri])
    assert idp.issuer == f"http://127.0.0.1:{idp.port}"
    for name in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri"):
        assert idp.endpoints[name].startswith(idp.issuer + "/")

    tokens = _code_flow(idp, redirect_uri)
    assert tokens["token_type"] == "Bearer"
    assert tokens["expires_in"] == 3600
    assert set(str(tokens["scope"]).split()) >= {"openid", "email", "profile"}
    for name in ("access_token", "refresh_token", "id_token"):
        assert isinstance(tokens[name], str) and tokens[name], name

    keys = KeySet.import_key_set(httpx.get(idp.jwks_uri, timeout=5.0).json())
    claims = jwt.decode(str(tokens["id_token"]), keys, algorithms=["RS256"]).claims
    assert claims["iss"] == idp.issuer
    assert claims["aud"] == CLIENT_ID
    assert claims["sub"] == "testuser"

    info = _userinfo(idp, str(tokens["access_token"]))
    assert info.status_code == 200, info.text
    assert {k: info.json().get(k) for k in TEST_USER} == TEST_USER

    refreshed = _token(idp, grant_type="refresh_token", refresh_token=str(tokens["refresh_token"]))
    assert refreshed.status_code == 200, refreshed.text
    new = refreshed.json()
    assert new["access_token"] != tokens["access_token"]
    assert _userinfo(idp, new["access_token"]).json()["sub"] == "testuser"


def test_deny_answers_access_denied(oidc_idp) -> None:
    redirect_uri = _callback()
    idp = oidc_idp([redirect_uri], deny=True)
    _, challenge = _pkce()
    result = _authorize(
        idp,
        redirect_uri,
        scope=SCOPE,
        state="s-deny",
        code_challenge=challenge,
        code_challenge_method="S256",
    )
    assert result.get("error") == "access_denied"
    assert result.get("state") == "s-deny"
    assert result.get("iss") == idp.issuer
    assert "code" not in result


def test_pkce_is_required(oidc_idp) -> None:
    redirect_uri = _callback()
    idp = oidc_idp([redirect_uri])

    # No code_challenge, or a non-S256 method: refused at the authorization endpoint.
    missing = _authorize(idp, redirect_uri, scope="openid", state="s1")
    assert missing.get("error") == "invalid_request", missing
    plain = _authorize(
        idp,
        redirect_uri,
        scope="openid",
        state="s2",
        code_challenge="x" * 43,
        code_challenge_method="plain",
    )
    assert plain.get("error") == "invalid_request", plain

    # A challenged code redeemed without (or with a wrong) code_verifier: invalid_grant.
    _, challenge = _pkce()
    result = _authorize(
        idp,
        redirect_uri,
        scope="openid",
        state="s3",
        code_challenge=challenge,
        code_challenge_method="S256",
    )
    response = _token(
        idp, grant_type="authorization_code", code=result["code"], redirect_uri=redirect_uri
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_grant"


def _bogus_code_grant(
    idp: IdpProcess,
    redirect_uri: str,
    *,
    data: dict[str, str] | None = None,
    auth: tuple[str, str] | None = None,
) -> httpx.Response:
    form = {
        "grant_type": "authorization_code",
        "code": "not-a-code",
        "redirect_uri": redirect_uri,
        "code_verifier": "v" * 43,
        **(data or {}),
    }
    return httpx.post(idp.token_endpoint, data=form, auth=auth, timeout=5.0)


def test_client_authentication(oidc_idp) -> None:
    redirect_uri = _callback()
    idp = oidc_idp([redirect_uri])
    good = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
    # Client authenticated, so the (bogus) code is what gets refused. The client is registered
    # with client_secret_post; oidc-provider treats HTTP Basic as equivalent and takes it too.
    assert _bogus_code_grant(idp, redirect_uri, data=good).json()["error"] == "invalid_grant"
    basic = _bogus_code_grant(idp, redirect_uri, auth=(CLIENT_ID, CLIENT_SECRET))
    assert basic.json()["error"] == "invalid_grant", basic.text
    for form in ({**good, "client_secret": "wrong"}, {"client_id": CLIENT_ID}):
        refused = _bogus_code_grant(idp, redirect_uri, data=form)
        assert (refused.status_code, refused.json()["error"]) == (401, "invalid_client"), form
    wrong_basic = _bogus_code_grant(idp, redirect_uri, auth=(CLIENT_ID, "wrong"))
    assert (wrong_basic.status_code, wrong_basic.json()["error"]) == (401, "invalid_client")


def test_access_ttl_makes_upstream_token_expire(oidc_idp) -> None:
    redirect_uri = _callback()
    idp = oidc_idp([redirect_uri], access_ttl=1)
    tokens = _code_flow(idp, redirect_uri)
    assert tokens["expires_in"] == 1
    time.sleep(1.5)
    expired = _userinfo(idp, str(tokens["access_token"]))
    assert expired.status_code == 401, expired.text
    refreshed = _token(idp, grant_type="refresh_token", refresh_token=str(tokens["refresh_token"]))
    assert refreshed.status_code == 200, refreshed.text
    assert refreshed.json()["expires_in"] == 1


def test_stop_terminates_the_process(oidc_idp) -> None:
    idp = oidc_idp([_callback()])
    assert idp.running()
    idp.stop()
    assert not idp.running()
    assert idp.proc.returncode == 0, idp.output()
    with pytest.raises(httpx.TransportError):
        httpx.get(idp.jwks_uri, timeout=2.0)
