"""Regression: GitHub's callbacks carry RFC 9207 ``iss=https://github.com/login/oauth`` (since April
2026). The github profile used to have no issuer, so ``check_callback_issuer`` refused every such
callback as a mix-up ("iss parameter but no issuer is configured"): no GitHub sign-in could finish.
The profile now expects GitHub's issuer (derived from the authorize URL, so GitHub Enterprise gets
its own host), accepts callbacks without ``iss`` (older Enterprise servers), and still refuses any
other issuer."""

from __future__ import annotations

from typing import Any

import pytest

from oauthproxy_adapters.config_file import parse_settings
from oauthproxy_core.providers import github_app_profile, github_profile
from oauthproxy_core.providers.github import github_issuer
from oauthproxy_core.upstream import UpstreamMixUpError, check_callback_issuer


def test_github_com_callback_with_its_iss_is_accepted() -> None:
    profile = github_profile(client_id="c", client_secret="s")
    assert profile.issuer == "https://github.com/login/oauth"
    check_callback_issuer(profile, "https://github.com/login/oauth")
    check_callback_issuer(profile, None)  # before the rollout, and older servers
    assert not profile.require_iss


@pytest.mark.parametrize(
    "iss",
    ["https://github.com", "https://github.com/login/oauth/", "https://evil.example/login/oauth"],
)
def test_github_callback_with_another_iss_is_a_mix_up(iss: str) -> None:
    profile = github_app_profile(client_id="c", client_secret="s")
    with pytest.raises(UpstreamMixUpError):
        check_callback_issuer(profile, iss)


def test_enterprise_issuer_follows_its_host() -> None:
    ghe = github_profile(client_id="c", client_secret="s", enterprise_host="github.example.com")
    assert ghe.issuer == "https://github.example.com/login/oauth"
    with pytest.raises(UpstreamMixUpError):
        check_callback_issuer(ghe, "https://github.com/login/oauth")
    # Not GitHub-shaped: no issuer is assumed (and then an `iss` is refused, as before).
    assert github_issuer("https://sso.example/oauth/authorize") is None
    assert github_issuer("https://ghe.example/login/oauth/authorize?x=1") is None


def _settings(**upstream: Any) -> Any:
    data = {
        "server": {"base_url": "https://mcp.example"},
        "upstream": {"provider": "github", "client_id": "c", "client_secret": "s", **upstream},
    }
    return parse_settings(data).upstream


def test_config_file_github_gets_the_github_issuer() -> None:
    assert _settings().issuer == "https://github.com/login/oauth"
    enterprise = _settings(
        authorize_url="https://ghe.example/login/oauth/authorize",
        token_url="https://ghe.example/login/oauth/access_token",
        api_base_url="https://ghe.example/api/v3",
    )
    assert enterprise.issuer == "https://ghe.example/login/oauth"
    assert _settings(issuer="https://ghe.example/custom").issuer == "https://ghe.example/custom"
