"""The README's configuration example is a valid configuration (the docs show working code)."""

from __future__ import annotations

import re
from pathlib import Path

from oauthproxy_adapters.config_file import load_settings

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
    assert "s3cret" not in repr(settings) and "s3cret" not in settings.summary()
