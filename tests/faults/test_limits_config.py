"""``[limits]`` and ``[server] forwarded_allow_ips`` in ``proxy.toml`` (oauthproxy_core.bounds)."""

from __future__ import annotations

import asyncio
from typing import Any

import attrs
import pytest

from oauthproxy_adapters.config_file import ConfigError, parse_settings
from oauthproxy_core.bounds import Bounds


def _doc(**extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "server": {"base_url": "http://127.0.0.1:8000"},
        "upstream": {"provider": "github", "client_id": "id", "client_secret": "secret"},
    }
    for table, values in extra.items():
        doc.setdefault(table, {}).update(values)
    return doc


def test_limits_default_to_the_core_bounds() -> None:
    settings = parse_settings(_doc())
    assert settings.proxy.bounds == Bounds()
    assert settings.forwarded_allow_ips is None


def test_every_bound_is_configurable() -> None:
    values = {name: i + 2 for i, name in enumerate(sorted(attrs.fields_dict(Bounds)))}
    settings = parse_settings(_doc(limits=values))
    assert settings.proxy.bounds == Bounds(**values)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"registrations_per_address": 0},
            "[limits].registrations_per_address: must be at least 1",
        ),
        ({"authorizations_per_address": "9"}, "[limits].authorizations_per_address: must be an"),
        ({"authorizations_total": True}, "[limits].authorizations_total: must be an"),
        ({"requests_per_second": 5}, "[limits].requests_per_second: unknown key"),
    ],
)
def test_bad_limits_name_the_key(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_settings(_doc(limits=values))
    assert err.value.message.startswith(message)


def test_forwarded_allow_ips() -> None:
    trusted = parse_settings(_doc(server={"forwarded_allow_ips": ["10.0.0.0/8", "::1"]}))
    assert trusted.forwarded_allow_ips == ("10.0.0.0/8", "::1")
    assert parse_settings(_doc(server={"forwarded_allow_ips": []})).forwarded_allow_ips == ()
    with pytest.raises(ConfigError) as err:
        parse_settings(_doc(server={"forwarded_allow_ips": ["proxy.internal"]}))
    assert err.value.message.startswith("[server].forwarded_allow_ips: 'proxy.internal'")


def test_bounds_reject_non_positive_values() -> None:
    with pytest.raises(ValueError, match="authorizations_per_address"):
        Bounds(authorizations_per_address=0)


def test_the_resolver_pool_size_reaches_the_served_app(tmp_path: Any) -> None:
    """``[limits] document_lookups_in_flight`` sizes the safe fetcher's resolver pool (spec/security.md
    35) in the app ``oauthproxy serve`` builds."""
    from oauthproxy_adapters.app import build_app  # noqa: PLC0415
    from oauthproxy_adapters.safe_fetch import AsyncSafeFetcher  # noqa: PLC0415

    doc = _doc(
        limits={"document_lookups_in_flight": 3},
        keys={"file": str(tmp_path / "keys.json")},
    )
    _app, proxy, cleanup = build_app(parse_settings(doc))
    try:
        assert isinstance(proxy.fetch, AsyncSafeFetcher)
        assert proxy.fetch.lookups.size == 3
    finally:
        asyncio.run(cleanup())
