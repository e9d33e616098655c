"""``rediss://``: the Redis store over TLS, against a real ``redis-server`` that speaks only TLS.

Managed Redis services (and any Redis reached over a network the operator does not own) take TLS
and a password. The store URL says ``rediss://`` and, for a private CA, ``ssl_ca_certs=<file>``
(redis-py's own URL options, passed through); the certificate and the host name are checked by
default, so a server the CA does not vouch for, or one with another name, is refused: the request
gets a 503 (``StoreUnavailableError``), never an unverified connection. The store's password
never appears in what is raised.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import attrs
import httpx
import pytest
import redis

from oauthproxy_adapters.asgi import OAuthProxyApp
from oauthproxy_adapters.keygen import new_keyring
from oauthproxy_adapters.proxy import AsyncProxy
from oauthproxy_adapters.stores import open_async_store, open_store
from oauthproxy_adapters.stores.base import StoreUnavailableError
from oauthproxy_adapters.testing import FakeProvider, UpstreamUser, proxy_config
from oauthproxy_adapters.testing.flow import adrive_httpx, asgi_client, login
from oauthproxy_core.handlers.bearer import Principal
from tests.stores.redis_topologies import RedisProcess, TlsFiles, free_ports
from tests.tls_material import Authority, issue_server_cert, new_authority

PASSWORD = "tls-store-password-" + "z" * 12
BASE = "https://proxy.example"


@attrs.frozen
class TlsRedis:
    process: RedisProcess
    ca: Authority
    other_ca: Authority

    @property
    def port(self) -> int:
        return self.process.port

    def url(self, *, ca: Path | None = None, host: str = "127.0.0.1", prefix: str = "") -> str:
        prefix = prefix or f"tls-{uuid.uuid4().hex[:8]}:"
        ca_file = quote(str(ca or self.ca.cert_file), safe="")
        return (
            f"rediss://:{PASSWORD}@{host}:{self.port}/0"
            f"?ssl_ca_certs={ca_file}&prefix={quote(prefix, safe='')}"
        )

    def client(self) -> redis.Redis:
        """The test's own client, over TLS with the deployment's CA."""
        return self.process.client()


def _start(tmp: Path, server_names: dict[str, tuple[str, ...]]) -> TlsRedis:
    """A TLS-only redis-server (no plain-text port) whose certificate names ``server_names``."""
    ca = new_authority(tmp / "pki", "test-ca")
    other = new_authority(tmp / "pki", "other-ca")
    cert = issue_server_cert(
        ca,
        tmp / "pki",
        "redis",
        dns_names=server_names.get("dns", ("localhost",)),
        ip_addresses=server_names.get("ip", ("127.0.0.1",)),
    )
    (port,) = free_ports(1)
    files = TlsFiles(ca.cert_file, cert.cert_file, cert.key_file)
    process = RedisProcess(port, tmp / "redis", ("--requirepass", PASSWORD), PASSWORD, files)
    process.start()
    return TlsRedis(process, ca, other)


def _stop(server: TlsRedis) -> None:
    server.process.stop()


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[TlsRedis]:
    server = _start(tmp_path, {})
    try:
        yield server
    finally:
        _stop(server)


def test_rediss_store_works_over_tls_only_verified_against_its_ca(tls_redis: TlsRedis) -> None:
    store = open_store(tls_redis.url())
    try:
        assert store.compare_and_set("grant", "g1", 0, b"sealed-one", 60)
        assert not store.compare_and_set("grant", "g1", 0, b"again", 60)  # CAS still holds
        got = store.get("grant", "g1")
        assert got is not None and (got.value, got.version) == (b"sealed-one", 1)
        store.put("code", "c1", b"code-record", 1, 60)
        taken = store.take("code", "c1")
        assert taken is not None and taken.value == b"code-record"
        assert store.take("code", "c1") is None  # used once
    finally:
        store.close()
    # The server has no plain-text port: what worked above went over TLS.
    plain = redis.Redis(host="127.0.0.1", port=tls_redis.port, password=PASSWORD, socket_timeout=2)
    with pytest.raises(redis.RedisError):
        plain.ping()
    plain.close()


def test_async_rediss_store_runs_a_whole_sign_in_over_tls(tls_redis: TlsRedis) -> None:
    provider = FakeProvider(
        redirect_uri=BASE + "/auth/callback", user=UpstreamUser(id=7, login="ada")
    )
    store = open_async_store(tls_redis.url())
    proxy = AsyncProxy(
        proxy_config(BASE, provider), new_keyring(), store, provider.async_http, token_cache=False
    )

    async def scenario() -> Principal:
        try:
            async with asgi_client(OAuthProxyApp(proxy), BASE) as client:
                session = await adrive_httpx(login(BASE, provider), client)
            verdict = await proxy.verify("Bearer " + session.tokens["access_token"], ("mcp",))
            assert isinstance(verdict, Principal), verdict
            return verdict
        finally:
            await store.close()

    assert asyncio.run(scenario()).subject == "github:7"
    with tls_redis.client() as raw:
        assert raw.dbsize() > 0  # the flow's records are in the TLS server


@pytest.mark.parametrize("how", ["sync", "async"])
def test_rediss_refuses_a_server_its_ca_does_not_vouch_for(tls_redis: TlsRedis, how: str) -> None:
    url = tls_redis.url(ca=tls_redis.other_ca.cert_file)
    with pytest.raises(StoreUnavailableError) as caught:
        if how == "sync":
            store = open_store(url)
            try:
                store.get("grant", "g1")
            finally:
                store.close()
        else:

            async def read() -> None:
                astore = open_async_store(url)
                try:
                    await astore.get("grant", "g1")
                finally:
                    await astore.close()

            asyncio.run(read())
    assert "certificate verify failed" in str(caught.value)
    assert PASSWORD not in str(caught.value)


def test_rediss_checks_the_server_name(tmp_path: Path) -> None:
    """A certificate from the trusted CA for another name is refused: the host name is checked by
    default (redis-py's ``ssl_check_hostname``), so any certificate of a shared CA is not enough."""
    server = _start(tmp_path, {"dns": ("redis.internal",), "ip": ()})
    try:
        store = open_store(server.url())
        with pytest.raises(StoreUnavailableError) as caught:
            store.get("grant", "g1")
        store.close()
        assert "certificate verify failed" in str(caught.value)
        assert PASSWORD not in str(caught.value)
    finally:
        _stop(server)


def test_rediss_url_passes_check_config(tls_redis: TlsRedis, tmp_path: Path) -> None:
    """What the docs tell operators to write loads, keeps its TLS options, and shows no password."""
    from oauthproxy_adapters.config_file import load_settings  # noqa: PLC0415
    from oauthproxy_adapters.start_summary import summary_lines  # noqa: PLC0415

    url = tls_redis.url(prefix="team-a:")
    (tmp_path / "proxy.toml").write_text(
        f"""
[server]
base_url = "http://127.0.0.1:8000"

[upstream]
provider = "github"
client_id = "Iv1.tls"
client_secret = "github-secret-{"s" * 20}"

[store]
url = "{url}"

[keys]
file = "{tmp_path / "keys.json"}"
"""
    )
    settings = load_settings(tmp_path / "proxy.toml")
    assert settings.store_url == url
    summary = "\n".join(summary_lines(settings, environ={}))
    assert "rediss://:***@127.0.0.1" in summary
    assert PASSWORD not in summary
    store = open_store(settings.store_url)
    try:
        store.put("grant", "from-config", b"x", 1, 60)
    finally:
        store.close()
    with tls_redis.client() as raw:
        assert raw.exists("team-a:grant:from-config")
    assert httpx.URL(url).scheme == "rediss"
