"""One complete flow through the sync driver and the async driver: register (RFC 7591), authorize
(OAuth 2.1 §4.1.1), consent, upstream callback, token (§4.1.3), bearer verification (RFC 6750),
refresh (§4.3), revocation (RFC 7009)."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlencode

from oauthproxy_core.handlers.bearer import Challenge, Principal
from tests.harness import (
    CONSENT_FORM_HEADERS,
    ISSUER,
    VERIFIER,
    AsyncHarness,
    Browser,
    Harness,
    UpstreamUser,
    consent_fields,
    redirect_params,
)


def test_complete_flow_sync_driver() -> None:
    h = Harness()
    client = h.register()
    browser = Browser()
    resp = h.run_to_callback(client, VERIFIER, browser)
    assert resp.status == 302
    params = redirect_params(resp)
    assert params["state"] == "client-state-1"
    assert params["iss"] == ISSUER
    assert resp.header(
        "location",
    ).startswith(client["redirect_uris"][0] + "?")

    resp = h.token(
        {
            "grant_type": "authorization_code",
            "code": params["code"],
            "client_id": client["client_id"],
            "redirect_uri": client["redirect_uris"][0],
            "code_verifier": VERIFIER,
            "resource": h.config.resource,
        }
    )
    assert resp.status == 200, resp.body
    assert resp.header("cache-control") == "no-store"
    body = json.loads(resp.body)
    assert body["token_type"] == "Bearer" and body["scope"] == "mcp" and body["expires_in"] == 3600
    principal = h.bearer(body["access_token"], ("mcp",))
    assert isinstance(principal, Principal)
    assert principal.subject == "idp:42" and principal.client_id == client["client_id"]
    assert dict(principal.claims)["login"] == "octocat"

    resp = h.token(
        {
            "grant_type": "refresh_token",
            "refresh_token": body["refresh_token"],
            "client_id": client["client_id"],
        }
    )
    assert resp.status == 200, resp.body
    refreshed = json.loads(resp.body)
    assert refreshed["refresh_token"] != body["refresh_token"]
    assert isinstance(h.bearer(refreshed["access_token"]), Principal)

    resp = h.form(
        "/revoke", {"token": refreshed["refresh_token"], "client_id": client["client_id"]}
    )
    assert resp.status == 200
    for token in (body["access_token"], refreshed["access_token"]):
        verdict = h.bearer(token)
        assert isinstance(verdict, Challenge) and verdict.status == 401
        assert 'error="invalid_token"' in verdict.www_authenticate
    resp = h.token(
        {
            "grant_type": "refresh_token",
            "refresh_token": refreshed["refresh_token"],
            "client_id": client["client_id"],
        }
    )
    assert resp.status == 400 and json.loads(resp.body)["error"] == "invalid_grant"


def test_complete_flow_async_driver() -> None:
    h = AsyncHarness()

    async def flow() -> None:
        reg = await h.arequest(
            "POST",
            "/register",
            headers=(("content-type", "application/json"),),
            body=json.dumps(
                {
                    "redirect_uris": ["http://127.0.0.1:5000/cb"],
                    "token_endpoint_auth_method": "client_secret_post",
                    "grant_types": ["authorization_code", "refresh_token"],
                }
            ).encode(),
        )
        assert reg.status == 201
        client = json.loads(reg.body)
        assert (
            client["client_secret"] and client["token_endpoint_auth_method"] == "client_secret_post"
        )
        browser = Browser()
        resp = await h.arequest("GET", h.authorize_url(client, VERIFIER), browser=browser)
        page = await h.arequest(
            "GET", resp.header("location").removeprefix(ISSUER), browser=browser
        )
        fields = consent_fields(page)
        form = "&".join(f"{k}={v}" for k, v in {**fields, "decision": "approve"}.items()).encode()
        resp = await h.arequest(
            "POST",
            "/consent",
            body=form,
            browser=browser,
            headers=(("content-type", "application/x-www-form-urlencoded"), *CONSENT_FORM_HEADERS),
        )
        assert resp.status == 303
        callback = h.upstream.login(
            resp.header("location"),
            user=UpstreamUser(id=7, login="ada"),
        )
        resp = await h.arequest("GET", callback.removeprefix(ISSUER), browser=browser)
        code = redirect_params(resp)["code"]
        tok = await h.arequest(
            "POST",
            "/token",
            headers=(("content-type", "application/x-www-form-urlencoded"),),
            body=urlencode(
                {
                    "grant_type": "authorization_code",
                    "code": code,
                    "client_id": client["client_id"],
                    "client_secret": client["client_secret"],
                    "redirect_uri": client["redirect_uris"][0],
                    "code_verifier": VERIFIER,
                }
            ).encode(),
        )
        assert tok.status == 200, tok.body
        body = json.loads(tok.body)
        ref = await h.arequest(
            "POST",
            "/token",
            headers=(("content-type", "application/x-www-form-urlencoded"),),
            body=urlencode(
                {
                    "grant_type": "refresh_token",
                    "refresh_token": body["refresh_token"],
                    "client_id": client["client_id"],
                    "client_secret": client["client_secret"],
                }
            ).encode(),
        )
        assert ref.status == 200, ref.body
        rev = await h.arequest(
            "POST",
            "/revoke",
            headers=(("content-type", "application/x-www-form-urlencoded"),),
            body=urlencode(
                {
                    "token": json.loads(ref.body)["access_token"],
                    "client_id": client["client_id"],
                    "client_secret": client["client_secret"],
                }
            ).encode(),
        )
        assert rev.status == 200
        again = await h.arequest(
            "POST",
            "/token",
            headers=(("content-type", "application/x-www-form-urlencoded"),),
            body=urlencode(
                {
                    "grant_type": "refresh_token",
                    "refresh_token": json.loads(ref.body)["refresh_token"],
                    "client_id": client["client_id"],
                    "client_secret": client["client_secret"],
                }
            ).encode(),
        )
        assert again.status == 400

    asyncio.run(flow())
