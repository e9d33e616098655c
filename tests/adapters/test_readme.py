"""The README's configuration example is a valid configuration (the docs show working code)."""

from __future__ import annotations

import re
from pathlib import Path

from oauthproxy_adapters.config_file import load_settings
from oauthproxy_adapters.start_summary import summary_lines

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_config_example_loads(tmp_path: Path) -> None:
    blocks = re.findall(r"```toml\n(.*?)```", README.read_text(), re.S)
    assert blocks, "the README has a TOML example"
    config = tmp_path / "proxy.toml"
    config.write_text(blocks[0])
    settings = load_settings(config, environ={"GITHUB_CLIENT_SECRET": "s3cret"})
    assert settings.issuer == "https://mcp.example.com"
    assert settings.proxy.resource == "https://mcp.example.com/mcp"
    assert settings.upstream.name == "github"
    assert settings.gateway_upstream_url == "http://127.0.0.1:9100/mcp"
    assert "s3cret" not in repr(settings)
    assert "s3cret" not in "\n".join(summary_lines(settings, environ={}))


PROVIDER_SECRETS = {
    name: f"{name.lower()}-value-never-printed"
    for name in (
        "GITHUB_CLIENT_SECRET",
        "GOOGLE_CLIENT_SECRET",
        "ENTRA_CLIENT_SECRET",
        "AUTH0_CLIENT_SECRET",
        "OAUTH2_CLIENT_SECRET",
    )
}


def _providers_section() -> str:
    text = README.read_text()
    match = re.search(r"^## Providers\n(.*?)^## ", text, re.S | re.M)
    assert match, "the README has a Providers section"
    return match.group(1)


def test_readme_provider_configs_load_offline(tmp_path: Path) -> None:
    """Every TOML block of the Providers section is a complete, valid file. None needs the network
    at load (a discovery fetch would fail here: example.com hosts no discovery document)."""
    section = _providers_section()
    blocks = re.findall(r"```toml\n(.*?)```", section, re.S)
    loaded = {}
    for i, block in enumerate(blocks):
        config = tmp_path / f"provider{i}.toml"
        config.write_text(block)
        settings = load_settings(config, environ=PROVIDER_SECRETS)
        up = settings.upstream
        loaded[(up.name, up.token_url)] = up
        # The upstream secret came from the environment and is never shown.
        assert up.client_secret in PROVIDER_SECRETS.values()
        summary = "\n".join(summary_lines(settings, environ={}))
        assert up.client_secret not in repr(settings) and up.client_secret not in summary
        assert settings.issuer == "https://mcp.example.com"
    assert section.count("https://mcp.example.com/auth/callback") >= 1
    names = sorted(name for name, _url in loaded)
    assert names == ["entra", "github", "github", "google", "oauth2", "oidc"], names

    github = loaded[("github", "https://github.com/login/oauth/access_token")]
    assert github.userinfo_url == "https://api.github.com/user" and github.subject_field == "id"
    enterprise = loaded[("github", "https://github.example.com/login/oauth/access_token")]
    assert enterprise.userinfo_url == "https://github.example.com/api/v3/user"
    google = loaded[("google", "https://oauth2.googleapis.com/token")]
    assert google.identity_source == "id_token" and google.nonce and google.jwks_uri
    entra = next(p for (name, _u), p in loaded.items() if name == "entra")
    assert entra.scope_prefix.startswith("api://") and entra.identity_source == "id_token"
    auth0 = next(p for (name, _u), p in loaded.items() if name == "oidc")
    assert ("audience", "https://api.example.com") in auth0.extra_authorize_params
    oauth2 = next(p for (name, _u), p in loaded.items() if name == "oauth2")
    assert oauth2.subject_field == "id"


def test_readme_no_longer_says_google_and_entra_need_explicit_endpoints() -> None:
    text = README.read_text()
    assert "until their dedicated profiles land" not in text
    assert 'provider = "google"' in text and 'provider = "entra"' in text
