"""The testing kit (``oauthproxy_adapters.testing``) against the real proxy.

- The flow driver completes the whole flow against the real ASGI app, in process, both with the user
  signing in at the fake provider without HTTP and with the browser following the provider's redirect
  over ``httpx.ASGITransport``; the tokens it gets verify (``AsyncProxy.verify``) and the refreshed
  ones too.
- The same driver completes the flow against live base URLs: the proxy under uvicorn calling the
  provider over real loopback HTTP, and ``oauthproxy serve`` run by the kit's process runner.
- The fake provider checks what a real one checks (a wrong verifier, a reused code, a wrong secret).
- The driver fails with ``FlowError`` where the server does not behave.
- The runner starts ``serve`` on a free loopback port, and its ``stop`` ends that process.
"""

from __future__ import annotations

import asyncio
import os
import signal
import tomllib
from pathlib import Path

import httpx
import pytest

from oauthproxy_adapters.asgi import OAuthProxyApp
from oauthproxy_adapters.config_file import parse_settings
from oauthproxy_adapters.http_clients import AsyncHttpClient
from oauthproxy_adapters.keygen import new_keyring
from oauthproxy_adapters.proxy import AsyncProxy
from oauthproxy_adapters.stores.memory import AsyncMemoryStore
from oauthproxy_adapters.testing import (
    AppThread,
    FakeProvider,
    FlowError,
    ServeProcess,
    UpstreamUser,
    in_memory_proxy,
    proxy_config,
)
from oauthproxy_adapters.testing.flow import (
    adrive_httpx,
    asgi_client,
    drive_httpx,
    login,
    new_verifier,
    refresh,
    register,
    s256,
    to_callback,
)
from oauthproxy_core import HttpRequest
from oauthproxy_core.handlers.bearer import Principal

BASE = "https://proxy.example"


def provider_for(base: str, **kw: object) -> FakeProvider:
    return FakeProvider(redirect_uri=base + "/auth/callback", **kw)  # type: ignore[arg-type]


async def verified(proxy: AsyncProxy, token: str) -> Principal:
    verdict = await proxy.verify(f"Bearer {token}", ("mcp",))
    assert isinstance(verdict, Principal), verdict
    return verdict


@pytest.mark.parametrize("leg", ["sign_in_in_process", "redirect_over_asgi"])
def test_driver_completes_the_flow_in_process_and_its_tokens_verify(leg: str) -> None:
    provider = provider_for(BASE, user=UpstreamUser(id=99, login="grace"))
    proxy = in_memory_proxy(proxy_config(BASE, provider), provider)
    mounts = {provider.base: provider.app} if leg == "redirect_over_asgi" else None
    upstream = provider if leg == "sign_in_in_process" else None

    async def scenario() -> None:
        async with asgi_client(OAuthProxyApp(proxy), BASE, mounts=mounts) as client:
            session = await adrive_httpx(login(BASE, upstream), client)
            principal = await verified(proxy, session.tokens["access_token"])
            assert principal.subject == "github:99"
            assert session.redirect["iss"] == BASE

            fresh = await adrive_httpx(
                refresh(BASE, session.client, session.tokens["refresh_token"]), client
            )
            assert fresh["refresh_token"] != session.tokens["refresh_token"]
            assert (await verified(proxy, fresh["access_token"])).subject == "github:99"

    asyncio.run(scenario())
    # In process the provider was reached only as the proxy's HTTP client: token, then user.
    paths = [httpx.URL(c.url).path for c in provider.calls]
    assert paths == ["/login/oauth/access_token", "/user"]


def test_driver_completes_the_flow_against_a_live_proxy_calling_a_live_provider() -> None:
    provider_box: list[FakeProvider] = []
    proxy_box: list[AsyncProxy] = []

    def build_proxy(base: str) -> OAuthProxyApp:
        provider = provider_box[0]
        provider.redirect_uri = base + "/auth/callback"
        config = proxy_config(base, provider)
        proxy = AsyncProxy(config, new_keyring(), AsyncMemoryStore(), AsyncHttpClient())
        proxy_box.append(proxy)
        return OAuthProxyApp(proxy)

    def build_provider(base: str) -> object:
        provider_box.append(FakeProvider(redirect_uri="", base=base))
        return provider_box[0].app

    upstream = AppThread(build_provider)
    server = AppThread(build_proxy)
    try:
        with httpx.Client(timeout=10, trust_env=False) as client:
            session = drive_httpx(login(server.base), client)
            me = client.get(server.base + "/mcp", headers={"authorization": "Bearer x"})
            assert me.status_code == 401
        principal = asyncio.run(verified(proxy_box[0], session.tokens["access_token"]))
        assert principal.subject == "github:4242"
        # Over HTTP the provider kept no record of calls: it was reached only through its app.
        assert provider_box[0].calls == [] and len(provider_box[0].tokens) == 1
    finally:
        server.stop()
        upstream.stop()


def test_fake_provider_refuses_a_wrong_verifier_a_reused_code_and_a_wrong_secret() -> None:
    provider = provider_for(BASE)
    verifier = new_verifier()

    def code() -> str:
        query = httpx.QueryParams(
            client_id="proxy-client",
            redirect_uri=BASE + "/auth/callback",
            state="s",
            code_challenge=s256(verifier),
            code_challenge_method="S256",
        )
        back = provider.login(f"{provider.authorize_url}?{query}")
        return httpx.URL(back).params["code"]

    def token(code: str, verifier: str, secret: str = provider.client_secret) -> str:
        form = {
            "client_id": "proxy-client",
            "client_secret": secret,
            "code": code,
            "code_verifier": verifier,
        }
        resp = provider(
            HttpRequest(
                method="POST",
                url=provider.token_url,
                headers=(("Accept", "application/json"),),
                body=str(httpx.QueryParams(form)).encode(),
            )
        )
        assert not isinstance(resp, type(None)) and resp.status == 200  # type: ignore[union-attr]
        body: dict[str, str] = httpx.Response(200, content=resp.body).json()  # type: ignore[union-attr]
        return body.get("access_token") or body["error"]

    assert token(code(), "another-verifier-" + "x" * 30) == "bad_verification_code"
    good = code()
    assert token(good, verifier).startswith("gho_")
    assert token(good, verifier) == "bad_verification_code"  # single use
    assert token(code(), verifier, secret="wrong") == "incorrect_client_credentials"


def test_driver_raises_flow_error_where_the_server_misbehaves() -> None:
    async def broken(scope: object, receive: object, send: object) -> None:
        await send({"type": "http.response.start", "status": 500, "headers": []})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b"boom"})  # type: ignore[operator]

    async def scenario() -> None:
        async with asgi_client(broken, BASE) as client:
            with pytest.raises(FlowError, match="201 from /register: 500 'boom'"):
                await adrive_httpx(register(BASE), client)

    asyncio.run(scenario())


def test_driver_fails_where_the_provider_refuses_the_proxy() -> None:
    provider = provider_for(BASE)
    proxy = in_memory_proxy(proxy_config(BASE, provider), provider)
    provider.redirect_uri = "https://elsewhere.example/auth/callback"  # not the proxy's callback

    async def scenario() -> None:
        async with asgi_client(
            OAuthProxyApp(proxy), BASE, mounts={provider.base: provider.app}
        ) as c:
            client = await adrive_httpx(register(BASE), c)
            with pytest.raises(FlowError, match="provider's redirect back: 400"):
                await adrive_httpx(to_callback(BASE, client), c)

    asyncio.run(scenario())


def test_runner_serves_a_full_flow_then_stops_its_process(tmp_path: Path) -> None:
    provider_box: list[FakeProvider] = []
    upstream = AppThread(
        lambda base: (
            provider_box.append(FakeProvider(redirect_uri="", base=base)) or provider_box[0].app
        )
    )
    provider = provider_box[0]

    def config(port: int) -> str:
        provider.redirect_uri = f"http://127.0.0.1:{port}/auth/callback"
        return f"""
[server]
host = "127.0.0.1"
port = {port}
base_url = "http://127.0.0.1:{port}"

{provider.upstream_toml()}
[store]
url = "memory://"

[keys]
file = "{tmp_path / "keys.json"}"
"""

    proc = ServeProcess.launch(tmp_path, config)
    try:
        pid = proc.pid
        assert proc.running() and proc.starts == 1
        with httpx.Client(timeout=10, trust_env=False) as client:
            session = drive_httpx(login(proc.base_url), client)
            mcp = proc.base_url + "/mcp"
            authorized = client.get(
                mcp, headers={"authorization": "Bearer " + session.tokens["access_token"]}
            )
            refused = client.get(mcp, headers={"authorization": "Bearer not-a-token"})
        assert (authorized.status_code, refused.status_code) == (404, 401)  # no gateway behind it
    finally:
        code = proc.stop()
        upstream.stop()
    # uvicorn shuts down gracefully, then re-raises SIGTERM: either exit status is a clean stop.
    assert code in (0, -signal.SIGTERM), proc.output()
    assert not proc.running()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # gone, and reaped
    assert proc.stop() == code  # stopping a stopped process changes nothing


def test_upstream_toml_configures_serve_for_exactly_that_provider() -> None:
    """What ``upstream_toml`` writes is read back by the configuration loader as the same endpoints,
    client and scopes, whatever characters the secret holds (TOML basic-string escapes)."""
    provider = FakeProvider(
        redirect_uri="http://127.0.0.1:9/auth/callback",
        base="http://127.0.0.1:9/idp/",
        client_id="id-with-\u00e9",
        client_secret='se"cr\\et\n' + "x" * 24,
        paths=("/a", "/t", "/u"),
    )
    text = '[server]\nbase_url = "http://127.0.0.1:9"\n\n' + provider.upstream_toml(
        scopes=("read:user", "user:email")
    )
    upstream = parse_settings(tomllib.loads(text), environ={}).proxy.upstream
    assert (upstream.authorize_url, upstream.token_url, upstream.userinfo_url) == (
        "http://127.0.0.1:9/idp/a",
        "http://127.0.0.1:9/idp/t",
        "http://127.0.0.1:9/idp/u",
    )
    assert (upstream.client_id, upstream.client_secret) == (
        provider.client_id,
        provider.client_secret,
    )
    assert upstream.scopes == ("read:user", "user:email")
    assert upstream.subject_field == "id"
