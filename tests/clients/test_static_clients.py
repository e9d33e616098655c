"""Pre-registered clients from the configuration file (``[[clients.static]]``) and the ``[clients]``
CIMD switches: parsed into ``ProxyConfig``, found by ``client_lookup`` without the store, and
authenticated by their configured method only (spec/security.md 22)."""

from __future__ import annotations

import base64
import json
import tomllib
from pathlib import Path
from typing import Any

import pytest

from oauthproxy_adapters.config_file import ConfigError, parse_settings
from oauthproxy_core.crypto import digest
from tests.harness import VERIFIER, Browser, Harness, make_config, redirect_params

SECRET = "static-client-secret-0123456789"


def _doc(clients: dict[str, Any] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "server": {"base_url": "https://mcp.example"},
        "upstream": {"provider": "github", "client_id": "gh", "client_secret": "gh-secret"},
    }
    if clients is not None:
        doc["clients"] = clients
    return doc


def test_defaults_cimd_on_loopback_off_no_static_clients() -> None:
    cfg = parse_settings(_doc()).proxy
    assert cfg.cimd_enabled is True and cfg.cimd_allow_loopback is False
    assert cfg.static_clients == ()


def test_static_clients_are_parsed_with_secret_digests() -> None:
    cfg = parse_settings(
        _doc(
            {
                "cimd": False,
                "cimd_allow_loopback": True,
                "static": [
                    {
                        "client_id": "cli",
                        "client_secret": SECRET,
                        "redirect_uris": ["http://127.0.0.1/callback"],
                    },
                    {
                        "client_id": "web",
                        "redirect_uris": ["https://app.example/cb"],
                        "token_endpoint_auth_method": "none",
                        "client_name": "Web App",
                    },
                ],
            }
        )
    ).proxy
    assert cfg.cimd_enabled is False and cfg.cimd_allow_loopback is True
    cli, web = cfg.static_clients
    assert cli.token_endpoint_auth_method == "client_secret_basic"
    assert cli.secret_hash == digest(SECRET) and SECRET not in repr(cli)
    assert web.secret_hash is None and web.client_name == "Web App"
    assert cfg.static_client("cli") is cli and cfg.static_client("nope") is None


@pytest.mark.parametrize(
    ("entry", "key"),
    [
        ({"redirect_uris": ["https://a.example/cb"]}, "client_id"),
        ({"client_id": "x"}, "redirect_uris"),
        ({"client_id": "x", "redirect_uris": ["javascript:alert(1)"]}, "redirect_uris"),
        (
            {"client_id": "x", "redirect_uris": ["https://a.example/cb"], "client_secret": "short"},
            "client_secret",
        ),
        (
            {
                "client_id": "x",
                "redirect_uris": ["https://a.example/cb"],
                "token_endpoint_auth_method": "client_secret_post",
            },
            "client_secret",
        ),
        (
            {
                "client_id": "x",
                "redirect_uris": ["https://a.example/cb"],
                "token_endpoint_auth_method": "private_key_jwt",
            },
            # Allowed since issue 16 (machine clients), with its keys: here they are missing.
            "jwks",
        ),
        ({"client_id": "x", "redirect_uris": ["https://a.example/cb"], "secret": "x"}, "secret"),
    ],
)
def test_bad_static_clients_are_config_errors(entry: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_settings(_doc({"static": [entry]}))
    assert f"[clients.static[0]].{key}" in str(err.value)


def test_unknown_clients_key_and_duplicate_ids() -> None:
    with pytest.raises(ConfigError, match=r"\[clients\]\.cimd_typo"):
        parse_settings(_doc({"cimd_typo": True}))
    dup = {"client_id": "x", "redirect_uris": ["https://a.example/cb"]}
    with pytest.raises(ConfigError, match="twice"):
        parse_settings(_doc({"static": [dup, dup]}))


def test_static_client_completes_a_flow_and_authenticates_by_its_method_only() -> None:
    static = parse_settings(
        _doc(
            {
                "static": [
                    {
                        "client_id": "cli",
                        "client_secret": SECRET,
                        "redirect_uris": ["http://127.0.0.1:33418/callback"],
                    }
                ]
            }
        )
    ).proxy.static_clients
    h = Harness(make_config(static_clients=static))
    client = {"client_id": "cli", "redirect_uris": ["http://127.0.0.1:33418/callback"]}
    code = redirect_params(h.run_to_callback(client, VERIFIER, Browser()))["code"]
    assert not any(kind == "client" for kind, _, _ in h.store.dump())  # never stored
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": "http://127.0.0.1:33418/callback",
        "code_verifier": VERIFIER,
    }
    wrong = h.token({**form, "client_id": "cli", "client_secret": SECRET})  # post, not basic
    assert wrong.status == 401
    bad = base64.b64encode(b"cli:wrong-secret-wrong-secret").decode()
    assert h.token(form, headers=(("authorization", f"Basic {bad}"),)).status == 401
    good = base64.b64encode(f"cli:{SECRET}".encode()).decode()
    resp = h.token(form, headers=(("authorization", f"Basic {good}"),))
    assert resp.status == 200, resp.body  # the failures above consumed nothing
    assert json.loads(resp.body)["token_type"] == "Bearer"
    # A static client has no registration access token: not manageable through RFC 7592.
    assert h.request("GET", "/register/cli", headers=(("authorization", "Bearer x"),)).status == 401


# -- machine clients: the client credentials grant's keys (issue 16) -------------------------------

KEY_JWK = {"kty": "EC", "crv": "P-256", "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU"}
KEY_JWK["y"] = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"
CI_BOT = {
    "client_id": "ci-bot",
    "client_secret_env": "CI_BOT_SECRET",
    "grant_types": ["client_credentials"],
    "scopes": ["mcp"],
    "subject": "service:ci-bot",
}


def _machines(*entries: dict[str, Any], env: dict[str, str] | None = None) -> Any:
    return parse_settings(
        _doc({"static": list(entries)}), environ={"CI_BOT_SECRET": SECRET} if env is None else env
    ).proxy


def test_machine_clients_are_parsed_from_the_contract_keys() -> None:
    signer = {
        "client_id": "signer",
        "token_endpoint_auth_method": "private_key_jwt",
        "jwks": {"keys": [KEY_JWK]},
        "grant_types": ["client_credentials", "authorization_code"],
        "redirect_uris": ["https://signer.example/cb"],
        "subject": "service:signer",
    }
    fetcher = {
        "client_id": "fetcher",
        "token_endpoint_auth_method": "private_key_jwt",
        "jwks_uri": "https://keys.example/jwks.json",
        "grant_types": ["client_credentials"],
        "subject": "agent:fetcher",
    }
    cfg = _machines(CI_BOT, signer, fetcher)
    ci, sig, fetch = cfg.static_clients
    assert ci.token_endpoint_auth_method == "client_secret_basic"  # a secret: the RFC 7591 default
    assert ci.secret_hash == digest(SECRET) and SECRET not in repr(ci)
    assert ci.grant_types == ("client_credentials",) and ci.redirect_uris == ()
    assert ci.scope == ("mcp",) and ci.subject == "service:ci-bot" and ci.source == "static"
    assert sig.secret_hash is None and sig.grant_types == (
        "client_credentials",
        "authorization_code",
    )
    assert json.loads(dict(sig.metadata)["jwks"]) == {"keys": [KEY_JWK]}
    assert json.loads(dict(fetch.metadata)["jwks_uri"]) == "https://keys.example/jwks.json"
    assert fetch.scope == ()  # every supported scope, decided at the token endpoint
    # The secret's value is nowhere in the configuration record.
    assert SECRET not in repr(cfg)


def test_the_default_grant_types_are_unchanged() -> None:
    (client,) = _machines(
        {"client_id": "x", "redirect_uris": ["https://a.example/cb"]}
    ).static_clients
    assert client.grant_types == ("authorization_code", "refresh_token") and client.subject is None


_PRIVATE_JWK = {**KEY_JWK, "d": "jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI"}


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"subject": None}, "subject"),
        (
            {"token_endpoint_auth_method": "none", "client_secret_env": None},
            "token_endpoint_auth_method",
        ),
        ({"subject": "github:4242"}, "subject"),  # the provider's prefix names users
        ({"subject": " service:x"}, "subject"),
        ({"scopes": ["admin"]}, "scopes"),
        ({"scopes": []}, "scopes"),
        ({"grant_types": ["client_credentials", "password"]}, "grant_types"),
        ({"grant_types": ["client_credentials", "refresh_token"]}, "grant_types"),
        ({"grant_types": []}, "grant_types"),
        ({"redirect_uris": ["https://a.example/cb"]}, "redirect_uris"),
        ({"grant_types": ["client_credentials", "authorization_code"]}, "redirect_uris"),
        ({"jwks": {"keys": [KEY_JWK]}}, "jwks"),  # keys with a secret method
        ({"client_secret_env": "UNSET_VARIABLE"}, "client_secret_env"),
        ({"client_secret": SECRET}, "client_secret"),  # and client_secret_env: not both
        ({"client_secret_env": None}, "client_secret"),  # client_secret_basic needs one
    ],
)
def test_bad_machine_clients_are_config_errors_naming_the_key(
    change: dict[str, Any], key: str
) -> None:
    entry = {k: v for k, v in {**CI_BOT, **change}.items() if v is not None}
    with pytest.raises(ConfigError) as err:
        _machines(entry)
    assert f"[clients.static[0]].{key}" in str(err.value), err.value


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"client_secret": SECRET}, "client_secret"),
        ({"jwks": {"keys": [_PRIVATE_JWK]}}, "jwks"),
        ({"jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}}, "jwks"),
        ({"jwks": {"keys": []}}, "jwks"),
        ({"jwks": "keys"}, "jwks"),
        ({"jwks": None}, "jwks"),  # neither jwks nor jwks_uri
        ({"jwks_uri": "https://keys.example/jwks.json"}, "jwks"),  # both
        ({"jwks": None, "jwks_uri": "http://keys.example/jwks.json"}, "jwks_uri"),
        ({"jwks": None, "jwks_uri": "https://127.0.0.1/jwks.json"}, "jwks_uri"),
    ],
)
def test_bad_private_key_jwt_clients_are_config_errors(change: dict[str, Any], key: str) -> None:
    entry = {
        "client_id": "signer",
        "token_endpoint_auth_method": "private_key_jwt",
        "jwks": {"keys": [KEY_JWK]},
        "grant_types": ["client_credentials"],
        "subject": "service:signer",
    }
    entry = {k: v for k, v in {**entry, **change}.items() if v is not None}
    with pytest.raises(ConfigError) as err:
        _machines(entry)
    assert f"[clients.static[0]].{key}" in str(err.value), err.value


def test_the_machine_clients_page_configuration_loads() -> None:
    """spec/docs/machine-clients.md shows a configuration this parser accepts, as documented."""
    page = Path(__file__).resolve().parents[2] / "spec" / "docs" / "machine-clients.md"
    block = page.read_text().split("```toml\n", 1)[1].split("```", 1)[0]
    static = tomllib.loads(block)["clients"]["static"]
    ci, deployer = _machines(*static).static_clients
    assert ci.subject == "service:ci-bot" and ci.scope == ("mcp",)
    assert ci.token_endpoint_auth_method == "client_secret_basic" and ci.secret_hash == digest(
        SECRET
    )
    assert deployer.token_endpoint_auth_method == "private_key_jwt"
    assert deployer.subject == "service:deployer" and deployer.secret_hash is None
