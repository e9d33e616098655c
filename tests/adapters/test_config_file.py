"""``proxy.toml`` loading: valid files build the core's config; every problem names its key."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from oauthproxy_adapters.config_file import ConfigError, Settings, load_settings
from oauthproxy_adapters.start_summary import summary_lines

SECRET = "upstream-S3CRET-do-not-print"

GITHUB = f"""
[server]
base_url = "https://mcp.example"

[upstream]
provider = "github"
client_id = "Iv1.abc"
client_secret = "{SECRET}"
"""

OAUTH2 = f"""
[server]
host = "127.0.0.1"
port = 8123
base_url = "http://127.0.0.1:8123"
mcp_path = "/mcp"
service_name = "Test server"
scopes_supported = ["mcp", "offline_access"]
default_scopes = ["mcp"]

[upstream]
provider = "oauth2"
client_id = "proxy-client"
client_secret = "{SECRET}"
scopes = ["profile"]
authorize_url = "https://idp.example/authorize"
token_url = "https://idp.example/token"
userinfo_url = "https://idp.example/userinfo"
userinfo_subject_field = "uid"

[consent]
mode = "remember"

[store]
url = "sqlite:///state.db"

[keys]
file = "keys/keys.json"

[gateway]
upstream_url = "http://127.0.0.1:9100/mcp"
"""


def load(tmp_path: Path, text: str, **kw: Any) -> Settings:
    path = tmp_path / "proxy.toml"
    path.write_text(text)
    return load_settings(path, **kw)


def error(tmp_path: Path, text: str, **kw: Any) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, **kw)
    message = str(info.value)
    assert SECRET not in message
    assert "Traceback" not in message
    return message


# -- valid files --------------------------------------------------------------------------------------


def test_minimal_github(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OAUTHPROXY_DATA_DIR", raising=False)
    s = load(tmp_path, GITHUB)
    up = s.upstream
    assert s.issuer == "https://mcp.example"
    assert s.proxy.resource == "https://mcp.example/mcp"
    # Issue 20: the embedded durable store is the default (memory:// only when asked for).
    assert (s.host, s.port, s.store_url) == ("127.0.0.1", 8000, "sqlite://")
    assert up.name == "github"
    assert up.authorize_url == "https://github.com/login/oauth/authorize"
    assert up.token_url == "https://github.com/login/oauth/access_token"
    assert up.userinfo_url == "https://api.github.com/user"
    assert up.subject_field == "id"
    assert up.scopes == ("read:user",)
    assert up.client_secret == SECRET
    assert s.keys_file == str(tmp_path / ".oauthproxy" / "keys.json")
    assert s.gateway_upstream_url is None
    assert s.proxy.consent_mode == "always"


def test_github_api_base_url_and_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OAUTHPROXY_DATA_DIR", str(tmp_path / "data"))
    text = GITHUB + 'api_base_url = "https://ghe.example/api/v3"\nscopes = ["repo"]\n'
    s = load(tmp_path, text)
    assert s.upstream.userinfo_url == "https://ghe.example/api/v3/user"
    assert s.upstream.scopes == ("repo",)
    assert s.keys_file == str(tmp_path / "data" / "keys.json")


def test_full_oauth2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = load(tmp_path, OAUTH2)
    assert s.issuer == "http://127.0.0.1:8123"
    assert s.port == 8123
    assert s.proxy.service_name == "Test server"
    assert s.proxy.scopes_supported == ("mcp", "offline_access")
    assert s.proxy.consent_mode == "remember"
    assert s.upstream.name == "oauth2"
    assert s.upstream.subject_field == "uid"
    assert s.upstream.userinfo_url == "https://idp.example/userinfo"
    assert s.store_url == "sqlite:///state.db"
    assert s.keys_file == str(tmp_path / "keys" / "keys.json")
    assert s.gateway_upstream_url == "http://127.0.0.1:9100/mcp"


def test_client_secret_env(tmp_path: Path) -> None:
    text = GITHUB.replace(f'client_secret = "{SECRET}"', 'client_secret_env = "GH_SECRET"')
    s = load(tmp_path, text, environ={"GH_SECRET": SECRET})
    assert s.upstream.client_secret == SECRET


def test_insecure_http_on_loopback_is_allowed_when_asked(tmp_path: Path) -> None:
    text = OAUTH2.replace("https://idp.example", "http://127.0.0.1:9999").replace(
        'scopes = ["profile"]', 'scopes = ["profile"]\nallow_insecure_http = true'
    )
    s = load(tmp_path, text)
    assert s.upstream.token_url == "http://127.0.0.1:9999/token"


# -- every error names its key ------------------------------------------------------------------------


def test_missing_client_id(tmp_path: Path) -> None:
    text = GITHUB.replace('client_id = "Iv1.abc"\n', "")
    assert error(tmp_path, text) == "[upstream].client_id: required"


def test_base_url_trailing_slash(tmp_path: Path) -> None:
    text = GITHUB.replace('"https://mcp.example"', '"https://mcp.example/"')
    assert error(tmp_path, text) == "[server].base_url: must not end with '/'"


def test_base_url_plain_http_off_loopback(tmp_path: Path) -> None:
    text = GITHUB.replace('"https://mcp.example"', '"http://mcp.example"')
    assert error(tmp_path, text).startswith("[server].base_url: must be https")


def test_missing_base_url(tmp_path: Path) -> None:
    text = GITHUB.replace('base_url = "https://mcp.example"\n', "")
    assert error(tmp_path, text) == "[server].base_url: required"


def test_http_upstream_without_allow_insecure_http(tmp_path: Path) -> None:
    text = OAUTH2.replace("https://idp.example/token", "http://127.0.0.1:9999/token")
    message = error(tmp_path, text)
    assert message.startswith("[upstream].token_url: must be https")
    assert "allow_insecure_http" in message


def test_non_loopback_http_even_with_allow_insecure_http(tmp_path: Path) -> None:
    text = OAUTH2.replace("https://idp.example/token", "http://idp.example/token").replace(
        'scopes = ["profile"]', 'scopes = ["profile"]\nallow_insecure_http = true'
    )
    message = error(tmp_path, text)
    assert message.startswith("[upstream].token_url: http is allowed only on a loopback host")


def test_unknown_key_is_named(tmp_path: Path) -> None:
    text = GITHUB + 'clientid = "typo"\n'
    assert error(tmp_path, text) == "[upstream].clientid: unknown key"


def test_unknown_table_is_named(tmp_path: Path) -> None:
    assert error(tmp_path, GITHUB + "[sever]\nport = 1\n").startswith("[sever]: unknown table")


def test_bad_store_scheme(tmp_path: Path) -> None:
    text = GITHUB + '[store]\nurl = "foo://bar"\n'
    assert error(tmp_path, text).startswith("[store].url: unknown scheme 'foo'")


@pytest.mark.parametrize("query", ["prefix=", "prefix=two%20words"])
def test_a_redis_key_prefix_serve_would_refuse_is_refused_by_check_config(
    tmp_path: Path, query: str
) -> None:
    """``check-config`` promises what ``serve`` does: the store's own option check runs at load."""
    text = GITHUB + f'[store]\nurl = "redis://:pw-{query}@127.0.0.1:6379/0?{query}"\n'
    message = error(tmp_path, text)
    assert message.startswith("[store].url: the key prefix must be non-empty, no spaces"), message
    assert "pw-" not in message


def test_client_secret_env_missing(tmp_path: Path) -> None:
    text = GITHUB.replace(f'client_secret = "{SECRET}"', 'client_secret_env = "NOPE_SECRET"')
    message = error(tmp_path, text, environ={})
    assert message.startswith("[upstream].client_secret_env:")
    assert "NOPE_SECRET" in message


def test_missing_secret(tmp_path: Path) -> None:
    text = GITHUB.replace(f'client_secret = "{SECRET}"\n', "")
    assert error(tmp_path, text).startswith("[upstream].client_secret: required")


def test_both_secret_and_env(tmp_path: Path) -> None:
    text = GITHUB + 'client_secret_env = "X"\n'
    assert error(tmp_path, text).startswith("[upstream].client_secret:")


def test_wrong_types_are_named(tmp_path: Path) -> None:
    text = GITHUB.replace("[upstream]", '[upstream]\nallow_insecure_http = "yes"')
    assert error(tmp_path, text) == "[upstream].allow_insecure_http: must be true or false"
    text = GITHUB.replace("[server]", '[server]\nport = "80"')
    assert error(tmp_path, text) == "[server].port: must be an integer"
    text = GITHUB.replace("[server]", "[server]\nport = true")
    assert error(tmp_path, text) == "[server].port: must be an integer"
    text = GITHUB + 'scopes = "read:user"\n'
    assert error(tmp_path, text).startswith("[upstream].scopes: must be a list")


def test_oauth2_needs_its_endpoints(tmp_path: Path) -> None:
    text = OAUTH2.replace('userinfo_url = "https://idp.example/userinfo"\n', "")
    assert error(tmp_path, text) == "[upstream].userinfo_url: required with provider = 'oauth2'"


def test_unknown_provider(tmp_path: Path) -> None:
    text = GITHUB.replace('"github"', '"gitlab"')
    assert error(tmp_path, text).startswith("[upstream].provider: must be one of")


def test_google_with_explicit_endpoints_is_oidc_like(tmp_path: Path) -> None:
    text = OAUTH2.replace('"oauth2"', '"google"').replace(
        'scopes = ["profile"]', 'scopes = ["openid"]\nissuer = "https://accounts.google.com"'
    )
    s = load(tmp_path, text)
    assert s.upstream.name == "google"
    assert s.upstream.issuer == "https://accounts.google.com"


ENTRA = GITHUB.replace('"github"', '"entra"')


def test_entra_graph_url_is_where_a_group_overage_is_resolved(tmp_path: Path) -> None:
    """Without graph_url, Microsoft Graph; with it (a national cloud, or a loopback fake in the
    tests with allow_insecure_http), the overage call goes there."""
    assert load(tmp_path, ENTRA).upstream.group_overage_url == (
        "https://graph.microsoft.com/v1.0/me/getMemberObjects"
    )
    text = ENTRA + 'graph_url = "https://graph.microsoft.us/"\n'
    assert load(tmp_path, text).upstream.group_overage_url == (
        "https://graph.microsoft.us/v1.0/me/getMemberObjects"
    )
    text = ENTRA + 'graph_url = "http://127.0.0.1:9999"\nallow_insecure_http = true\n'
    assert load(tmp_path, text).upstream.group_overage_url == (
        "http://127.0.0.1:9999/v1.0/me/getMemberObjects"
    )


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('graph_url = "http://127.0.0.1:9999"', "[upstream].graph_url: must be https"),
        (
            'graph_url = "http://graph.example"\nallow_insecure_http = true',
            "[upstream].graph_url: http is allowed only on a loopback host",
        ),
        ('graph_url = "https://graph.example/?x=1"', "[upstream].graph_url: must not have a query"),
        (
            'graph_url = "https://graph.example/#f"',
            "[upstream].graph_url: must not contain a fragment",
        ),
    ],
)
def test_entra_graph_url_refused(tmp_path: Path, line: str, problem: str) -> None:
    assert error(tmp_path, ENTRA + line + "\n").startswith(problem)


def test_graph_url_is_for_entra_only(tmp_path: Path) -> None:
    message = error(tmp_path, GITHUB + 'graph_url = "https://graph.microsoft.com"\n')
    assert message == "[upstream].graph_url: only used with provider = 'entra'"


def test_default_scopes_outside_supported(tmp_path: Path) -> None:
    text = GITHUB.replace("[server]", '[server]\ndefault_scopes = ["admin"]')
    assert error(tmp_path, text).startswith("[server].default_scopes:")


def test_consent_mode(tmp_path: Path) -> None:
    assert error(tmp_path, GITHUB + '[consent]\nmode = "never"\n').startswith("[consent].mode:")


def test_mcp_path(tmp_path: Path) -> None:
    text = GITHUB.replace("[server]", '[server]\nmcp_path = "/mcp/"')
    assert error(tmp_path, text).startswith("[server].mcp_path:")


def test_gateway_url(tmp_path: Path) -> None:
    text = GITHUB + '[gateway]\nupstream_url = "ftp://x/mcp"\n'
    assert error(tmp_path, text).startswith("[gateway].upstream_url:")


def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    assert "not valid TOML" in error(tmp_path, "[server\n")
    with pytest.raises(ConfigError, match="no such file"):
        load_settings(tmp_path / "absent.toml")


# -- secrets ------------------------------------------------------------------------------------------


def test_secrets_absent_from_repr_str_and_summary(tmp_path: Path) -> None:
    """The start summary is what ``serve`` and ``check-config`` print (start_summary.py)."""
    text = GITHUB + '[store]\nurl = "redis://:redis-PASSWORD@127.0.0.1:6379/0"\n'
    s = load(tmp_path, text)
    summary = "\n".join(summary_lines(s, environ={}))
    for rendered in (repr(s), str(s), summary, repr(s.proxy), repr(s.upstream)):
        assert SECRET not in rendered
        assert "redis-PASSWORD" not in rendered
    assert "client_id Iv1.abc" in summary
    assert "redis://:***@127.0.0.1:6379/0" in summary  # the store is shown, its password is not


def test_secret_absent_from_errors_after_it_was_read(tmp_path: Path) -> None:
    # The secret is read before these keys are checked.
    for extra in ('[store]\nurl = "foo://x"\n', '[consent]\nmode = "x"\n'):
        error(tmp_path, GITHUB + extra)


# -- OIDC discovery on a loopback stand-in -------------------------------------------------------------


@pytest.fixture
def discovery() -> Iterator[tuple[str, dict[str, Any]]]:
    doc: dict[str, Any] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/.well-known/openid-configuration":
                self.send_response(404)
                self.end_headers()
                return
            body = json.dumps(doc).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    issuer = f"http://127.0.0.1:{server.server_address[1]}"
    doc.update(
        issuer=issuer,
        authorization_endpoint=issuer + "/auth",
        token_endpoint=issuer + "/token",
        userinfo_endpoint=issuer + "/me",
        authorization_response_iss_parameter_supported=True,
        token_endpoint_auth_methods_supported=["client_secret_basic"],
    )
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield issuer, doc
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _oidc(issuer: str, insecure: bool = True) -> str:
    return f"""
[server]
base_url = "https://mcp.example"
[upstream]
provider = "oidc"
client_id = "c"
client_secret = "{SECRET}"
issuer = "{issuer}"
allow_insecure_http = {"true" if insecure else "false"}
"""


def test_oidc_discovery(tmp_path: Path, discovery: tuple[str, dict[str, Any]]) -> None:
    issuer, _doc = discovery
    up = load(tmp_path, _oidc(issuer)).upstream
    assert up.authorize_url == issuer + "/auth"
    assert up.token_url == issuer + "/token"
    assert up.userinfo_url == issuer + "/me"
    assert up.issuer == issuer
    assert up.require_iss is True
    assert up.token_auth_method == "client_secret_basic"
    assert up.scopes == ("openid", "profile", "email")


def test_oidc_discovery_checks_the_issuer(
    tmp_path: Path, discovery: tuple[str, dict[str, Any]]
) -> None:
    issuer, doc = discovery
    doc["issuer"] = "https://evil.example"
    assert "names another issuer" in error(tmp_path, _oidc(issuer))


def test_oidc_discovery_checks_endpoint_schemes(
    tmp_path: Path, discovery: tuple[str, dict[str, Any]]
) -> None:
    issuer, doc = discovery
    doc["token_endpoint"] = "http://idp.example/token"
    message = error(tmp_path, _oidc(issuer))
    assert message.startswith("[upstream].issuer (discovered token_endpoint): http is allowed only")


def test_oidc_issuer_http_needs_allow_insecure(
    tmp_path: Path, discovery: tuple[str, dict[str, Any]]
) -> None:
    issuer, _doc = discovery
    assert error(tmp_path, _oidc(issuer, insecure=False)).startswith(
        "[upstream].issuer: must be https"
    )


def test_oidc_discovery_unreachable(tmp_path: Path) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    message = error(tmp_path, _oidc(f"http://127.0.0.1:{port}"))
    assert message.startswith("[upstream].issuer: discovery at")


def test_oidc_discovery_takes_the_cores_defaults(
    tmp_path: Path, discovery: tuple[str, dict[str, Any]]
) -> None:
    """The profile comes from the core's factory (oidc_profile_from_discovery), with its defaults:
    with a JWK Set and a UserInfo endpoint, the ID token is verified (with a nonce) and UserInfo
    read as well; explicit endpoints still win over discovered ones."""
    issuer, doc = discovery
    doc["jwks_uri"] = issuer + "/jwks"
    up = load(tmp_path, _oidc(issuer)).upstream
    assert (up.identity_source, up.nonce, up.jwks_uri) == ("both", True, issuer + "/jwks")
    text = _oidc(issuer) + 'identity_source = "userinfo"\ntoken_url = "http://127.0.0.1:1/t"\n'
    up = load(tmp_path, text).upstream
    assert (up.identity_source, up.nonce, up.token_url) == (
        "userinfo",
        False,
        "http://127.0.0.1:1/t",
    )


def test_oidc_discovery_without_any_way_to_name_the_user(
    tmp_path: Path, discovery: tuple[str, dict[str, Any]]
) -> None:
    issuer, doc = discovery
    del doc["userinfo_endpoint"]
    message = error(tmp_path, _oidc(issuer))
    assert message.startswith("[upstream].issuer (discovered userinfo_endpoint): is missing")
