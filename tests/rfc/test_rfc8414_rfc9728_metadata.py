"""Discovery: RFC 8414 (authorization server metadata, also at the OpenID Connect Discovery 1.0 §4
alias), RFC 9728 (protected resource metadata) and the JWKS (RFC 7517 §5), as spec/interop.md requires:
direct 200s at every probed URL, one byte-identical issuer everywhere, CORS for any origin."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.harness import (
    ISSUER,
    UPSTREAM,
    VERIFIER,
    Browser,
    Harness,
    UpstreamUser,
    consent_fields,
    make_config,
    redirect_params,
)

RESOURCE = "https://proxy.example/mcp"
AS_PATHS = ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration")
PRM_PATHS = ("/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource")
TENANT = "https://proxy.example/tenant"
TENANT_AS_PATHS = (
    "/.well-known/oauth-authorization-server/tenant",
    "/.well-known/openid-configuration/tenant",
    "/tenant/.well-known/openid-configuration",
)


def _json_200(h: Harness, path: str) -> dict[str, Any]:
    resp = h.request("GET", path)
    assert resp.status == 200, (path, resp.status, resp.body)
    assert resp.header("location") is None
    assert resp.header("content-type") == "application/json"
    assert resp.header("access-control-allow-origin") == "*"
    return json.loads(resp.body)  # type: ignore[no-any-return]


def _path(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


@pytest.mark.parametrize("path", AS_PATHS)
def test_rfc8414_3_metadata_served_directly_at_every_probed_url(path: str) -> None:
    h = Harness()
    meta = _json_200(h, path)
    assert meta["issuer"] == ISSUER
    assert meta["issuer"] == h.config.issuer
    assert not meta["issuer"].endswith("/")


def test_rfc8414_both_urls_serve_identical_documents() -> None:
    h = Harness()
    first, second = (h.request("GET", p) for p in AS_PATHS)
    assert first.body == second.body


def test_rfc8414_2_required_fields_from_interop() -> None:
    h = Harness()
    meta = _json_200(h, AS_PATHS[0])
    assert meta["response_types_supported"] == ["code"]
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert {"authorization_code", "refresh_token"} <= set(meta["grant_types_supported"])
    assert {"none", "client_secret_post", "client_secret_basic"} <= set(
        meta["token_endpoint_auth_methods_supported"]
    )
    assert meta["authorization_response_iss_parameter_supported"] is True
    assert meta["scopes_supported"] == ["mcp", "offline_access"]
    assert meta["authorization_endpoint"] == ISSUER + "/authorize"
    assert meta["token_endpoint"] == ISSUER + "/token"
    assert meta["registration_endpoint"] == ISSUER + "/register"
    assert meta["revocation_endpoint"] == ISSUER + "/revoke"
    assert meta["jwks_uri"] == ISSUER + "/jwks.json"
    # Every advertised endpoint is actually routed by this server.
    for name in (
        "authorization_endpoint",
        "token_endpoint",
        "registration_endpoint",
        "revocation_endpoint",
        "jwks_uri",
    ):
        assert meta[name].startswith(ISSUER + "/")
        assert h.server.handles(urlsplit(meta[name]).path), name


def test_rfc9207_issuer_identical_in_metadata_prm_and_authorization_response() -> None:
    h = Harness()
    meta = _json_200(h, AS_PATHS[0])
    prm = _json_200(h, PRM_PATHS[0])
    client = h.register()
    resp = h.run_to_callback(client, VERIFIER, Browser())
    assert resp.status == 302
    iss = redirect_params(resp)["iss"]
    assert meta["issuer"] == prm["authorization_servers"][0] == iss == h.config.issuer
    assert prm["authorization_servers"] == [meta["issuer"]]


@pytest.mark.parametrize("path", [*AS_PATHS, *PRM_PATHS, "/jwks.json"])
def test_cors_preflight_on_metadata(path: str) -> None:
    h = Harness()
    resp = h.request(
        "OPTIONS",
        path,
        headers=(
            ("origin", "https://app.example"),
            ("access-control-request-method", "GET"),
            ("access-control-request-headers", "authorization, mcp-protocol-version"),
        ),
    )
    assert resp.status == 204
    assert resp.body == b""
    assert resp.header("access-control-allow-origin") == "*"
    allowed = {
        h_.strip().lower() for h_ in (resp.header("access-control-allow-headers") or "").split(",")
    }
    assert {"authorization", "mcp-protocol-version"} <= allowed
    methods = {m.strip() for m in (resp.header("access-control-allow-methods") or "").split(",")}
    assert "GET" in methods


@pytest.mark.parametrize("path", ["/register", "/token", "/revoke"])
def test_cors_preflight_on_json_endpoints(path: str) -> None:
    h = Harness()
    resp = h.request("OPTIONS", path)
    assert resp.status == 204
    assert resp.header("access-control-allow-origin") == "*"
    allowed = {
        h_.strip().lower() for h_ in (resp.header("access-control-allow-headers") or "").split(",")
    }
    assert {"authorization", "mcp-protocol-version"} <= allowed
    assert "POST" in (resp.header("access-control-allow-methods") or "")


@pytest.mark.parametrize("path", ["/authorize", "/consent"])
def test_no_cors_on_browser_endpoints(path: str) -> None:
    # spec/interop.md: browser endpoints (authorization, consent) answer no CORS.
    h = Harness()
    pre = h.request("OPTIONS", path)
    assert pre.status != 204
    assert pre.header("access-control-allow-origin") is None
    resp = h.request("GET", path)
    assert resp.header("access-control-allow-origin") is None


@pytest.mark.parametrize("path", PRM_PATHS)
def test_rfc9728_3_protected_resource_metadata(path: str) -> None:
    h = Harness()
    prm = _json_200(h, path)
    assert prm["resource"] == RESOURCE
    assert prm["resource"] == h.config.resource
    assert prm["authorization_servers"] == [ISSUER]
    assert "header" in prm["bearer_methods_supported"]
    assert "mcp" in prm["scopes_supported"]


def test_mcp_2026_07_28_offline_access_is_in_the_catalogue_not_in_the_resource_metadata() -> None:
    """SEP-2207: clients add offline_access themselves when the authorization server lists it;
    the resource lists only what it needs."""
    h = Harness()
    assert _json_200(h, AS_PATHS[0])["scopes_supported"] == ["mcp", "offline_access"]
    for path in PRM_PATHS:
        assert _json_200(h, path)["scopes_supported"] == ["mcp"]


def test_rfc7517_jwks_holds_public_keys_only() -> None:
    h = Harness()
    jwks = _json_200(h, "/jwks.json")
    assert jwks["keys"]
    private_members = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}
    for key in jwks["keys"]:
        assert "kty" in key and "kid" in key
        assert not private_members & set(key), sorted(key)
    # The access tokens the proxy issues name a kid that is published.
    client = h.register()
    code = h.full_code(client, VERIFIER)
    tok = h.token(
        {
            "grant_type": "authorization_code",
            "code": code,
            "client_id": client["client_id"],
            "redirect_uri": client["redirect_uris"][0],
            "code_verifier": VERIFIER,
        }
    )
    header_b64 = json.loads(tok.body)["access_token"].split(".")[0]
    header = json.loads(base64.urlsafe_b64decode(header_b64 + "=" * (-len(header_b64) % 4)))
    assert header["kid"] in {k["kid"] for k in jwks["keys"]}
    assert header["typ"] == "at+jwt"


# -- issuer with a path ------------------------------------------------------------------------


@pytest.mark.parametrize("path", TENANT_AS_PATHS)
def test_rfc8414_3_1_issuer_with_path_answers_every_probed_url(path: str) -> None:
    h = Harness(make_config(issuer=TENANT))
    meta = _json_200(h, path)
    assert meta["issuer"] == TENANT
    assert meta["token_endpoint"] == TENANT + "/token"
    for name in ("authorization_endpoint", "token_endpoint", "registration_endpoint", "jwks_uri"):
        assert h.server.handles(urlsplit(meta[name]).path), name


def test_rfc8414_3_1_issuer_with_path_is_not_served_at_the_root_urls() -> None:
    # The path-less URLs belong to another issuer (the host's root); answering them with this
    # issuer would make a client's issuer check fail anyway.
    h = Harness(make_config(issuer=TENANT))
    for path in AS_PATHS:
        assert h.request("GET", path).status == 404


def test_rfc9728_issuer_with_path_prm_and_flow_iss() -> None:
    h = Harness(make_config(issuer=TENANT))
    prm = _json_200(h, "/.well-known/oauth-protected-resource/tenant/mcp")
    assert prm["resource"] == TENANT + "/mcp"
    assert prm["authorization_servers"] == [TENANT]

    # A whole flow under the path issuer: the iss of the authorization response is the issuer.
    reg = h.request(
        "POST",
        "/tenant/register",
        headers=(("content-type", "application/json"),),
        body=json.dumps(
            {
                "redirect_uris": ["http://127.0.0.1:33418/callback"],
                "token_endpoint_auth_method": "none",
            }
        ).encode(),
    )
    assert reg.status == 201, reg.body
    client = json.loads(reg.body)
    browser = Browser()
    url = h.authorize_url(client, VERIFIER)
    assert url.startswith("/tenant/authorize?")  # under the issuer's path
    resp = h.request("GET", url, browser=browser)
    assert resp.status == 302, resp.body
    consent = resp.header("location") or ""
    assert consent.startswith(TENANT + "/consent?")
    page = h.request("GET", _path(consent), browser=browser)
    assert page.status == 200
    resp = h.form(
        "/tenant/consent", {**consent_fields(page), "decision": "approve"}, browser=browser
    )
    assert resp.status == 303
    assert (resp.header("location") or "").startswith(UPSTREAM + "/authorize?")
    callback = h.upstream.login(resp.header("location") or "", UpstreamUser(id=1, login="a"))
    assert callback.startswith(TENANT + "/auth/callback?")
    resp = h.request("GET", _path(callback), browser=browser)
    assert resp.status == 302, resp.body
    params = redirect_params(resp)
    assert params["iss"] == TENANT == prm["authorization_servers"][0]
    assert "code" in params
