"""Prometheus metrics (issue 8, ``oauthproxy_adapters.metrics``): exact counters after a complete
flow and after error flows, bounded labels with no client id or secret in them, latency histograms
for the store and the upstream, and ``GET /metrics`` off by default in the standalone server."""

from __future__ import annotations

import asyncio
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from oauthproxy_adapters.app import build_app
from oauthproxy_adapters.config_file import ConfigError, parse_settings
from oauthproxy_adapters.metrics import Metrics, error_code
from oauthproxy_adapters.proxy import Proxy
from oauthproxy_core import HttpFailure, Response
from oauthproxy_core.handlers.bearer import Challenge, Principal
from oauthproxy_core.http import json_response
from oauthproxy_core.pages import error_page
from tests.clients.support import CIMD_URL, REDIRECT, cimd_harness, document
from tests.harness import (
    VERIFIER,
    Browser,
    Harness,
    consent_fields,
    keys,
    make_config,
    redirect_params,
)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: bytes) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(text: bytes, name: str, **labels: str) -> float | None:
    return samples(text).get((name, frozenset(labels.items())))


def series(text: bytes, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: v for (n, labels), v in samples(text).items() if n == name}


def metered(h: Harness, metrics: Metrics) -> Proxy:
    """Route every request of ``h`` through a ``Proxy`` that records ``metrics``."""
    proxy = Proxy(
        h.config,
        keys(),
        h.store,
        h.upstream,
        fetch=h.fetch,
        clock=h.clock,
        random=h.random,
        token_cache=False,
        metrics=metrics,
    )

    def request(method: str, target: str, **kw: Any) -> Response:
        req = h.make_request(method, target, **kw)
        resp = proxy.handle(req)
        browser = kw.get("browser")
        if browser is not None:
            browser.absorb(resp)
        return resp

    h.request = request  # type: ignore[method-assign,assignment]
    return proxy


def redeem(h: Harness, client: dict[str, Any], code: str) -> Response:
    return h.token(
        {
            "grant_type": "authorization_code",
            "code": code,
            "client_id": client["client_id"],
            "redirect_uri": client["redirect_uris"][0],
            "code_verifier": VERIFIER,
        }
    )


def test_complete_flow_counts_every_transition_exactly() -> None:
    h, metrics = Harness(), Metrics()
    proxy = metered(h, metrics)
    client = h.register()
    code = h.full_code(client, VERIFIER)
    tokens = json.loads(redeem(h, client, code).body)
    assert isinstance(proxy.verify(f"Bearer {tokens['access_token']}"), Principal)
    refreshed = h.token(
        {
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": client["client_id"],
        }
    )
    assert refreshed.status == 200
    text = metrics.exposition()

    transitions = series(text, "oauthproxy_transitions_total")
    expected = {
        ("client_registered", "", "applied"): 1.0,
        ("transaction", "pkce_bound", "applied"): 1.0,
        ("transaction", "upstream_pending", "applied"): 1.0,
        ("transaction", "code_issued", "applied"): 1.0,
        ("transaction", "exchanged", "applied"): 1.0,
        ("grant_issued", "authorization_code", "applied"): 1.0,
        ("grant_rotated", "", "applied"): 1.0,
        # No [access] rule: everyone is admitted, and each admission is counted all the same.
        ("access_decision", "admitted", "applied"): 1.0,
    }
    got = {
        (dict(labels)["event"], dict(labels)["state"], dict(labels)["outcome"]): v
        for labels, v in transitions.items()
    }
    assert got == expected
    # A successful flow answers no error.
    assert series(text, "oauthproxy_errors_total") == {}
    # The upstream was called once at its token endpoint and once for the user, both 200.
    upstream = series(text, "oauthproxy_upstream_request_duration_seconds_count")
    assert upstream == {
        frozenset({("kind", "token"), ("status_class", "2xx")}): 1.0,
        frozenset({("kind", "userinfo"), ("status_class", "2xx")}): 1.0,
    }
    # Every store call was timed, labelled by operation and store type only.
    store = series(text, "oauthproxy_store_operation_duration_seconds_count")
    assert store, text
    assert all(dict(labels)["store"] == "memory" for labels in store)
    assert {dict(labels)["operation"] for labels in store} <= {
        "get",
        "put",
        "take",
        "compare_and_set",
        "delete",
    }
    assert store[frozenset({("operation", "compare_and_set"), ("store", "memory")})] >= 5


def test_error_flows_count_the_oauth_error_code_by_endpoint() -> None:
    h, metrics = Harness(), Metrics()
    proxy = metered(h, metrics)
    client = h.register()
    code = h.full_code(client, VERIFIER)
    assert redeem(h, client, code).status == 200
    # A replayed code: invalid_grant at the token endpoint, and the transaction is revoked.
    assert redeem(h, client, code).status == 400
    assert redeem(h, client, "not-a-code").status == 400
    # A denied consent redirects access_denied to the client.
    browser = Browser()
    resp = h.request("GET", h.authorize_url(client, VERIFIER), browser=browser)
    consent = h.request(
        "GET", resp.header("location").removeprefix(h.config.issuer), browser=browser
    )

    denied = h.form("/consent", {**consent_fields(consent), "decision": "deny"}, browser=browser)
    assert redirect_params(denied)["error"] == "access_denied"
    # An unknown client at authorize: a rendered page, never a redirect (spec/security.md 2).
    page = h.request("GET", h.authorize_url({**client, "client_id": "nobody"}, VERIFIER))
    assert page.status == 400 and page.header("location") is None
    # A forged bearer token at the resource.
    assert isinstance(proxy.verify("Bearer not.a.jwt"), Challenge)

    text = metrics.exposition()
    errors = series(text, "oauthproxy_errors_total")
    assert errors == {
        frozenset({("endpoint", "token"), ("error", "invalid_grant")}): 2.0,
        frozenset({("endpoint", "consent"), ("error", "access_denied")}): 1.0,
        frozenset({("endpoint", "authorize"), ("error", "invalid_client")}): 1.0,
        frozenset({("endpoint", "resource"), ("error", "invalid_token")}): 1.0,
    }
    assert (
        value(
            text,
            "oauthproxy_transitions_total",
            event="transaction",
            state="revoked",
            outcome="applied",
        )
        == 1.0
    )
    assert (
        value(
            text,
            "oauthproxy_transitions_total",
            event="transaction",
            state="denied",
            outcome="applied",
        )
        == 1.0
    )


#: The ``endpoint`` label of each path a proxy with issuer ``https://proxy.example/t`` and callback
#: path ``/oauth/token-callback`` serves: fixed names that dashboards rely on.
LABELS = {
    "/.well-known/oauth-authorization-server/t": "authorization_server_metadata",
    "/.well-known/openid-configuration/t": "authorization_server_metadata",
    "/t/.well-known/openid-configuration": "authorization_server_metadata",
    "/t/.well-known/oauth-authorization-server": "authorization_server_metadata",
    "/.well-known/oauth-protected-resource/t/mcp": "protected_resource_metadata",
    "/.well-known/oauth-protected-resource": "protected_resource_metadata",
    "/t/jwks.json": "jwks",
    "/t/register": "register",
    "/t/register/some-client": "client_configuration",
    "/t/token": "token",
    "/t/revoke": "revocation",
    "/t/authorize": "authorize",
    "/t/consent": "consent",
    "/t/oauth/token-callback": "callback",
}


def test_every_route_is_labelled_with_its_endpoint_name() -> None:
    """A method no route serves (405 ``method_not_allowed``) at every path: each error is counted
    under the route's name from the core's route table, never a name guessed from the path."""
    config = make_config(issuer="https://proxy.example/t", callback_path="/oauth/token-callback")
    h, metrics = Harness(config), Metrics()
    metered(h, metrics)
    for path in LABELS:
        assert h.request("PATCH", path).status == 405, path
    errors = series(metrics.exposition(), "oauthproxy_errors_total")
    expected: dict[frozenset[tuple[str, str]], float] = {}
    for name in LABELS.values():
        key = frozenset({("endpoint", name), ("error", "method_not_allowed")})
        expected[key] = expected.get(key, 0.0) + 1.0
    assert errors == expected


def test_upstream_failure_is_labelled_by_status_class() -> None:
    h, metrics = Harness(), Metrics()
    metered(h, metrics)
    client = h.register()
    h.upstream.fail_token_with = HttpFailure(reason="timeout")
    resp = h.run_to_callback(client, VERIFIER, Browser())
    assert resp.status >= 300
    text = metrics.exposition()
    assert (
        value(
            text,
            "oauthproxy_upstream_request_duration_seconds_count",
            kind="token",
            status_class="timeout",
        )
        == 1.0
    )
    errors = series(text, "oauthproxy_errors_total")
    assert sum(errors.values()) == 1.0
    ((labels, _),) = errors.items()
    assert dict(labels)["endpoint"] == "callback"


def test_document_fetches_are_labelled_by_their_purpose() -> None:
    """A ``FetchDocument`` is timed under the upstream histogram with its purpose as ``kind``;
    one refused because the proxy has no fetcher still counts, as ``refused``."""
    h, host = cimd_harness()
    metrics = Metrics()
    metered(h, metrics)
    host.serve(CIMD_URL, document())
    client = {"client_id": CIMD_URL, "redirect_uris": [REDIRECT]}
    assert h.request("GET", h.authorize_url(client, VERIFIER)).status == 302
    name = "oauthproxy_upstream_request_duration_seconds_count"
    text = metrics.exposition()
    assert value(text, name, kind="client_metadata", status_class="2xx") == 1.0
    assert series(text, name).keys() == {
        frozenset({("kind", "client_metadata"), ("status_class", "2xx")})
    }

    bare, bare_metrics = Harness(), Metrics()  # no document fetcher
    metered(bare, bare_metrics)
    assert bare.request("GET", bare.authorize_url(client, VERIFIER)).status == 400
    text = bare_metrics.exposition()
    assert value(text, name, kind="client_metadata", status_class="refused") == 1.0


def test_no_secret_client_id_or_subject_in_the_output() -> None:
    h, metrics = Harness(), Metrics()
    proxy = metered(h, metrics)
    client = h.register(token_endpoint_auth_method="client_secret_post")
    code = h.full_code(client, VERIFIER)
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "client_id": client["client_id"],
        "client_secret": client["client_secret"],
        "redirect_uri": client["redirect_uris"][0],
        "code_verifier": VERIFIER,
    }
    tokens = json.loads(h.token(form).body)
    proxy.verify(f"Bearer {tokens['access_token']}x")
    h.form("/revoke", {"token": tokens["refresh_token"], "client_id": client["client_id"]})
    text = metrics.exposition().decode()
    for secret in (
        client["client_id"],
        client["client_secret"],
        client["registration_access_token"],
        code,
        tokens["access_token"],
        tokens["refresh_token"],
        *tokens["refresh_token"].split("."),
        VERIFIER,
        "idp:42",
        "octocat",
        *h.upstream.tokens,
    ):
        assert secret not in text
    # Label values come from fixed sets only.
    allowed = {
        "event": {"transaction", "client_registered", "grant_issued", "grant_rotated"}
        | {"grant_revoked", "access_decision"},
        "outcome": {"applied", "conflict"},
    }
    for (name, labels), _v in samples(text.encode()).items():
        for label, val in labels:
            if label in allowed:
                assert val in allowed[label], (name, label, val)


def test_an_error_code_outside_the_known_set_is_other() -> None:
    metrics = Metrics()
    metrics.count_error("token", "attacker-chosen-<value>")
    metrics.count_error("token", "invalid_grant")
    text = metrics.exposition()
    assert value(text, "oauthproxy_errors_total", endpoint="token", error="other") == 1.0
    assert value(text, "oauthproxy_errors_total", endpoint="token", error="invalid_grant") == 1.0
    assert b"attacker" not in text


def test_error_code_is_read_from_json_redirects_and_pages() -> None:
    assert error_code(json_response(400, {"error": "invalid_grant"})) == "invalid_grant"
    assert error_code(json_response(200, {"access_token": "x"})) is None
    assert error_code(error_page(400, "invalid_request", "bad")) == "invalid_request"
    redirect = Response(
        status=302, headers=(("Location", "https://c/cb?error=access_denied&state=s&iss=i"),)
    )
    assert error_code(redirect) == "access_denied"
    # A registered URI may carry its own `error` parameter: ours (a code) comes after it.
    success = Response(status=302, headers=(("Location", "https://c/cb?error=x&code=abc&iss=i"),))
    assert error_code(success) is None


def _settings(tmp_path: Path, **metrics: Any) -> Any:
    return _settings_in(tmp_path, metrics, {"METRICS_TOKEN": "t" * 32})


def _settings_in(tmp_path: Path, metrics: dict[str, Any], environ: dict[str, str]) -> Any:
    data: dict[str, Any] = {
        "server": {"base_url": "http://127.0.0.1:8000"},
        "upstream": {
            "provider": "oauth2",
            "client_id": "c",
            "client_secret": "s",
            "authorize_url": "http://127.0.0.1:9/a",
            "token_url": "http://127.0.0.1:9/t",
            "userinfo_url": "http://127.0.0.1:9/u",
            "allow_insecure_http": True,
        },
        # In-process, per test: memory:// keeps it off the working directory's SQLite default.
        "store": {"url": "memory://"},
        "keys": {"file": str(tmp_path / "keys.json")},
    }
    if metrics:
        data["metrics"] = metrics
    return parse_settings(data, environ=environ)


def _get(settings: Any, *requests: tuple[str, str, Any]) -> list[httpx.Response]:
    app, _proxy, cleanup = build_app(settings)

    async def go() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        out = []
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as c:
            for method, path, headers in requests:
                out.append(await c.request(method, path, headers=headers))
        await cleanup()
        return out

    return asyncio.run(go())


REGISTER = (
    "POST",
    "/register",
    {"content-type": "application/json"},
)


def test_metrics_are_off_by_default(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    assert settings.metrics_enabled is False
    (resp,) = _get(settings, ("GET", "/metrics", {}))
    assert resp.status_code == 404
    assert b"oauthproxy_" not in resp.content


def test_serve_exposes_metrics_when_enabled(tmp_path: Path) -> None:
    settings = _settings(tmp_path, enabled=True)
    app, _proxy, cleanup = build_app(settings)

    async def go() -> tuple[httpx.Response, httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as c:
            registered = await c.post(
                "/register",
                json={
                    "redirect_uris": ["http://127.0.0.1:3000/cb"],
                    "token_endpoint_auth_method": "none",
                },
            )
            bad = await c.post("/token", data={"grant_type": "password"})
            assert bad.status_code == 400
            metrics = await c.get("/metrics")
        await cleanup()
        return registered, metrics

    registered, resp = asyncio.run(go())
    assert registered.status_code == 201
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    assert resp.headers["cache-control"] == "no-store"
    text = resp.content
    assert (
        value(
            text,
            "oauthproxy_transitions_total",
            event="client_registered",
            state="",
            outcome="applied",
        )
        == 1.0
    )
    assert (
        value(text, "oauthproxy_errors_total", endpoint="token", error="unsupported_grant_type")
        == 1.0
    )
    assert registered.json()["client_id"].encode() not in text


def test_metrics_bearer_token_is_required_when_configured(tmp_path: Path) -> None:
    settings = _settings(tmp_path, enabled=True, bearer_token_env="METRICS_TOKEN")
    assert "t" * 32 not in repr(settings)
    none, wrong, right = _get(
        settings,
        ("GET", "/metrics", {}),
        ("GET", "/metrics", {"authorization": "Bearer " + "u" * 32}),
        ("GET", "/metrics", {"authorization": "Bearer " + "t" * 32}),
    )
    assert none.status_code == 401 and wrong.status_code == 401
    assert b"oauthproxy_" not in none.content + wrong.content
    assert right.status_code == 200 and b"oauthproxy_errors_total" in right.content


def test_rfc6750_2_1_metrics_token_is_read_by_the_bearer_parser(tmp_path: Path) -> None:
    """``/metrics`` reads its token like every other bearer check: the scheme name in any case and
    one or more spaces before the token are accepted; a second ``Authorization`` field, or the token
    with something after it, is not."""
    settings = _settings(tmp_path, enabled=True, bearer_token_env="METRICS_TOKEN")
    token = "t" * 32
    lower, spaced, two, trailing = _get(
        settings,
        ("GET", "/metrics", [("authorization", "bearer " + token)]),
        ("GET", "/metrics", [("authorization", "Bearer   " + token)]),
        ("GET", "/metrics", [("authorization", "Bearer " + token)] * 2),
        ("GET", "/metrics", [("authorization", f"Bearer {token} x")]),
    )
    assert lower.status_code == 200 and b"oauthproxy_errors_total" in lower.content
    assert spaced.status_code == 200
    assert two.status_code == 401 and trailing.status_code == 401
    assert b"oauthproxy_" not in two.content + trailing.content


@pytest.mark.parametrize("token", ["x" * 20 + "!", "x" * 10 + " " + "x" * 10, "=" + "x" * 20])
def test_a_metrics_token_no_client_could_present_is_refused(tmp_path: Path, token: str) -> None:
    """RFC 6750 §2.1: only a b64token can follow ``Bearer``; any other token would lock ``/metrics``
    for everyone, so the configuration names the key instead."""
    with pytest.raises(ConfigError, match=r"\[metrics\]\.bearer_token:") as literal:
        _settings(tmp_path, enabled=True, bearer_token=token)
    table = {"enabled": True, "bearer_token_env": "METRICS_TOKEN"}
    with pytest.raises(ConfigError, match=r"\[metrics\]\.bearer_token_env:") as from_env:
        _settings_in(tmp_path, table, {"METRICS_TOKEN": token})
    assert token not in str(literal.value) + str(from_env.value)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"enabled": True, "bearer_token_env": "UNSET_VARIABLE"}, "[metrics].bearer_token_env"),
        ({"bearer_token": "short"}, "[metrics].bearer_token"),
        ({"bearer_token": "x" * 20, "bearer_token_env": "METRICS_TOKEN"}, "[metrics].bearer_token"),
        ({"enable": True}, "[metrics].enable: unknown key"),
    ],
)
def test_bad_metrics_table_names_the_key(
    tmp_path: Path, table: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        _settings(tmp_path, **table)
    assert err.value.message.startswith(message)


def test_readme_metrics_example_loads(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    (block,) = [b for b in re.findall(r"```toml\n(.*?)```", readme, re.S) if "[metrics]" in b]
    settings = _settings(tmp_path, **tomllib.loads(block)["metrics"])
    assert settings.metrics_enabled is True
    assert settings.metrics_bearer_token == "t" * 32
