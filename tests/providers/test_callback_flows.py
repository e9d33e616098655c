"""Provider profiles through the whole core: callback -> ID token / JWKS / nonce, mix-up defence,
outages, and the upstream token lifecycle (refresh, rotation, revocation)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import attrs
import pytest

from oauthproxy_adapters.driver import run
from oauthproxy_core.crypto import digest
from oauthproxy_core.effects import HttpFailure, HttpRequest, HttpResponse
from oauthproxy_core.errors import InvalidTokenError, TemporarilyUnavailableError
from oauthproxy_core.handlers.upstream_token import upstream_access_token
from oauthproxy_core.providers import github_app_profile, github_profile, google_profile
from oauthproxy_core.upstream import nonce_for_state
from tests.harness import (
    VERIFIER,
    Browser,
    Harness,
    UpstreamUser,
    make_config,
    redirect_params,
)

from .idp import RSA_KEY_2, OidcUpstream, json_response

BASE = "https://idp.example"


def google_like(**fields: Any) -> Harness:
    discovery = {
        "issuer": BASE,
        "authorization_endpoint": BASE + "/authorize",
        "token_endpoint": BASE + "/token",
        "userinfo_endpoint": BASE + "/userinfo",
        "jwks_uri": BASE + "/jwks",
        "id_token_signing_alg_values_supported": ["RS256"],
    }
    # google_profile checks the issuer is Google's: build it, then point it at the test provider.
    profile = google_profile(client_id="cid.apps.example", client_secret="gsecret", **fields)
    profile = attrs.evolve(
        profile,
        issuer=discovery["issuer"],
        authorize_url=discovery["authorization_endpoint"],
        token_url=discovery["token_endpoint"],
        userinfo_url=discovery["userinfo_endpoint"],
        jwks_uri=discovery["jwks_uri"],
        id_token_issuers=(),
    )
    h = Harness(make_config(upstream=profile))
    h.upstream = OidcUpstream(  # type: ignore[assignment]
        callback_url=h.config.callback_url, issuer=BASE, client_id="cid.apps.example", base=BASE
    )
    h.upstream.now = h.clock.now  # type: ignore[attr-defined]
    return h


def flow(h: Harness, user: UpstreamUser | None = None) -> Any:
    client = h.register()
    return client, h.run_to_callback(
        client, VERIFIER, Browser(), user or UpstreamUser(id=7, login="ada")
    )


def redeem(h: Harness, client: dict[str, Any], resp: Any) -> dict[str, Any]:
    code = redirect_params(resp)["code"]
    tok = h.token(
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": client["redirect_uris"][0],
            "client_id": client["client_id"],
            "code_verifier": VERIFIER,
            "resource": h.config.resource,
        }
    )
    assert tok.status == 200, tok.body
    return json.loads(tok.body)  # type: ignore[no-any-return]


def test_google_shaped_flow_verifies_id_token_with_nonce() -> None:
    h = google_like()
    client, resp = flow(h)
    assert resp.status == 302, resp.body
    params = redirect_params(resp)
    assert "code" in params and params["iss"] == h.config.issuer
    up: OidcUpstream = h.upstream  # type: ignore[assignment]
    assert up.count("/jwks") == 1 and up.count("/userinfo") == 0
    body = redeem(h, client, resp)
    principal = h.bearer(body["access_token"])
    assert principal.subject == "google:7"  # type: ignore[union-attr]
    assert dict(principal.claims)["email"] == "ada@example.com"  # type: ignore[union-attr]
    # A second sign-in uses the cached JWK Set.
    flow(h)
    assert up.count("/jwks") == 1


def test_authorize_request_has_google_parameters() -> None:
    h = google_like()
    client = h.register()
    browser = Browser()
    captured: list[str] = []
    original = h.upstream.login

    def spy(url: str, user: Any, **kw: Any) -> str:
        captured.append(url)
        return original(url, user, **kw)

    h.upstream.login = spy  # type: ignore[method-assign]
    h.run_to_callback(client, VERIFIER, browser)
    q = dict(parse_qsl(urlsplit(captured[0]).query))
    assert q["access_type"] == "offline" and q["prompt"] == "consent"
    assert q["nonce"] == nonce_for_state(q["state"])
    assert q["scope"] == "openid email profile"


@pytest.mark.parametrize(
    "override",
    [
        {"nonce": "replayed-from-another-sign-in"},
        {"iss": "https://evil.example"},
        {"aud": "someone-else"},
        {"exp": 1_000},
    ],
)
def test_bad_id_token_issues_no_code(override: dict[str, Any]) -> None:
    h = google_like()
    h.upstream.claims_override = override  # type: ignore[attr-defined]
    _client, resp = flow(h)
    assert resp.status == 302
    params = redirect_params(resp)
    assert "code" not in params and params["error"] == "access_denied"


def test_rotated_key_is_fetched_once() -> None:
    h = google_like()
    flow(h)
    up: OidcUpstream = h.upstream  # type: ignore[assignment]
    up.key = RSA_KEY_2
    up.jwks_keys = [RSA_KEY_2]
    _client, resp = flow(h)
    assert "code" in redirect_params(resp)
    assert up.count("/jwks") == 2


def test_unknown_key_after_refetch_is_rejected() -> None:
    h = google_like()
    flow(h)
    up: OidcUpstream = h.upstream  # type: ignore[assignment]
    up.key = RSA_KEY_2  # signs with a key the JWK Set never publishes
    _client, resp = flow(h)
    assert redirect_params(resp)["error"] == "access_denied"
    assert up.count("/jwks") == 2


def test_idp_outage_is_temporarily_unavailable() -> None:
    h = google_like()
    client = h.register()
    up: OidcUpstream = h.upstream  # type: ignore[assignment]
    original = up.login

    def login_then_fail(url: str, user: Any, **kw: Any) -> str:
        out = original(url, user, **kw)
        up.down = True
        return out

    up.login = login_then_fail  # type: ignore[method-assign]
    resp = h.run_to_callback(client, VERIFIER, Browser())
    params = redirect_params(resp)
    assert params["error"] == "temporarily_unavailable" and "code" not in params
    assert "connect" not in params.get("error_description", "")


# -- mix-up defence (RFC 9207, RFC 9700 §4.4) -----------------------------------------------------


def test_callback_with_another_issuer_never_reaches_a_token_endpoint() -> None:
    h = Harness(make_config())
    client = h.register()
    orig = h.upstream.login

    def evil(url: str, user: Any, **kw: Any) -> str:
        return orig(url, user, **kw).replace(
            "iss=https%3A%2F%2Fidp.example", "iss=https%3A%2F%2Fevil.example"
        )

    h.upstream.login = evil  # type: ignore[method-assign]
    resp = h.run_to_callback(client, VERIFIER, Browser())
    assert "code" not in redirect_params(resp)
    assert h.upstream.calls == []  # not even our own token endpoint was contacted


def test_code_is_redeemed_only_at_the_profiles_token_endpoint() -> None:
    h = Harness(make_config())
    client = h.register()
    orig = h.upstream.login

    def with_noise(url: str, user: Any, **kw: Any) -> str:
        # Parameters an attacker might add to steer the redemption are ignored.
        return (
            orig(url, user, **kw) + "&token_url=https%3A%2F%2Fevil.example%2Ftoken&token_endpoint=x"
        )

    h.upstream.login = with_noise  # type: ignore[method-assign]
    resp = h.run_to_callback(client, VERIFIER, Browser())
    assert "code" in redirect_params(resp)
    posts = [c for c in h.upstream.calls if c.method == "POST"]
    assert [c.url for c in posts] == [h.config.upstream.token_url]


# -- GitHub: X-OAuth-Scopes and token lifecycle ---------------------------------------------------


class GitHubUpstream:
    """GitHub responses as documented: 200 + error, X-OAuth-Scopes, App token rotation."""

    def __init__(self, h: Harness, *, app: bool) -> None:
        self.inner = h.upstream
        self.app = app
        self.clock = h.clock
        self.refreshes: list[str] = []
        self.refresh_answer: HttpResponse | HttpFailure | None = None
        self.valid_refresh = "ghr_first"

    def login(self, url: str, user: Any, **kw: Any) -> str:
        return self.inner.login(url, user, **kw)

    def __call__(self, req: HttpRequest) -> HttpResponse | HttpFailure:
        path = urlsplit(req.url).path
        form = dict(parse_qsl(req.body.decode())) if req.body else {}
        if path == "/token" and form.get("grant_type") == "refresh_token":
            self.refreshes.append(form["refresh_token"])
            if self.refresh_answer is not None:
                return self.refresh_answer
            if form["refresh_token"] != self.valid_refresh:
                return json_response(
                    {"error": "bad_refresh_token", "error_description": "secret detail"}
                )
            self.valid_refresh = f"ghr_{len(self.refreshes)}"
            return json_response(
                {
                    "access_token": f"ghu_{len(self.refreshes)}",
                    "expires_in": 28800,
                    "refresh_token": self.valid_refresh,
                    "refresh_token_expires_in": 15811200,
                    "scope": "",
                    "token_type": "bearer",
                }
            )
        out = self.inner(req)
        if path == "/token" and self.app and isinstance(out, HttpResponse):
            body = json.loads(out.body)
            if "access_token" in body:
                body.update(
                    expires_in=28800, refresh_token="ghr_first", refresh_token_expires_in=15811200
                )
                return json_response(body)
        if path == "/user" and isinstance(out, HttpResponse) and out.status == 200:
            # The granted scopes say more than what was asked for: replace the inner provider's.
            kept = tuple((k, v) for k, v in out.headers if k.lower() != "x-oauth-scopes")
            return HttpResponse(
                status=200,
                headers=(*kept, ("X-OAuth-Scopes", "read:user, user:email")),
                body=out.body,
            )
        return out


def github_harness(*, app: bool) -> tuple[Harness, GitHubUpstream]:
    factory = github_app_profile if app else github_profile
    profile = factory(
        client_id="Iv1.abc",
        client_secret="upstream-client-secret-value",
        authorize_url="https://idp.example/authorize",
        token_url="https://idp.example/token",
        api_base_url="https://idp.example",
        issuer="https://idp.example",
    )
    h = Harness(make_config(upstream=profile))
    gh = GitHubUpstream(h, app=app)
    h.upstream = gh  # type: ignore[assignment]
    return h, gh


def grant_of(h: Harness, token: str) -> str:
    principal = h.bearer(token)
    return principal.grant_id  # type: ignore[union-attr]


def upstream_token(h: Harness, grant_id: str) -> Any:
    ctx = h.server.context(now=h.clock.now, random=h.random)
    return run(upstream_access_token(ctx, grant_id), h.store, h.upstream)


def test_github_oauth_app_scopes_from_header_and_no_refresh() -> None:
    h, _gh = github_harness(app=False)
    client, resp = flow(h)
    body = redeem(h, client, resp)
    principal = h.bearer(body["access_token"])
    assert principal.subject == "github:7"  # type: ignore[union-attr]
    assert dict(principal.claims) == {"login": "ada", "name": "Ada"}  # type: ignore[union-attr]
    access = upstream_token(h, principal.grant_id)  # type: ignore[union-attr]
    assert access.scope == ("read:user", "user:email")  # from X-OAuth-Scopes
    assert access.expires_at is None  # OAuth Apps: no expiry, nothing to refresh
    h.clock.advance(10 * 24 * 3600)
    assert upstream_token(h, principal.grant_id).access_token == access.access_token  # type: ignore[union-attr]
    # Our own tokens still expire and refresh.
    assert body["expires_in"] <= 3600 and "refresh_token" in body


def test_github_app_rotates_refresh_tokens() -> None:
    h, gh = github_harness(app=True)
    client, resp = flow(h)
    grant = grant_of(h, redeem(h, client, resp)["access_token"])
    h.clock.advance(28800)
    first = upstream_token(h, grant)
    assert first.access_token == "ghu_1" and gh.refreshes == ["ghr_first"]
    h.clock.advance(28800)
    assert upstream_token(h, grant).access_token == "ghu_2"
    assert gh.refreshes == ["ghr_first", "ghr_1"]  # the rotated token was used


@pytest.mark.parametrize(
    "answer",
    [
        HttpFailure(reason="timeout"),
        json_response({"message": "Server Error"}, 502),
        json_response({"message": "slow down"}, 429, (("Retry-After", "30"),)),
        json_response({"error": "temporarily_unavailable"}, 503),
    ],
)
def test_transient_refresh_failure_revokes_nothing(answer: HttpResponse | HttpFailure) -> None:
    h, gh = github_harness(app=True)
    client, resp = flow(h)
    body = redeem(h, client, resp)
    grant = grant_of(h, body["access_token"])
    h.clock.advance(28800)
    gh.refresh_answer = answer
    with pytest.raises(TemporarilyUnavailableError) as info:
        upstream_token(h, grant)
    assert info.value.error == "temporarily_unavailable"
    gh.refresh_answer = None
    assert upstream_token(h, grant).access_token == "ghu_2"  # the grant survived


def test_upstream_invalid_grant_revokes_the_grant_without_leaking_text() -> None:
    h, gh = github_harness(app=True)
    client, resp = flow(h)
    body = redeem(h, client, resp)
    grant = grant_of(h, body["access_token"])
    h.clock.advance(28800)
    gh.valid_refresh = "something-else"
    with pytest.raises(InvalidTokenError) as info:
        upstream_token(h, grant)
    assert "secret detail" not in str(info.value)
    with pytest.raises(InvalidTokenError, match="revoked"):
        upstream_token(h, grant)
    assert gh.refreshes == ["ghr_first"]  # the revoked grant never refreshes again


def test_concurrent_rotation_loser_uses_winners_tokens() -> None:
    h, gh = github_harness(app=True)
    client, resp = flow(h)
    grant = grant_of(h, redeem(h, client, resp)["access_token"])
    h.clock.advance(28800)
    ctx = h.server.context(now=h.clock.now, random=h.random)
    loser = upstream_access_token(ctx, grant)
    # Drive the loser until it is about to refresh, let the winner complete, then resume the loser.
    effect = next(loser)
    while not hasattr(effect, "request"):
        effect = loser.send(_apply(h, effect))
    winner = upstream_token(h, grant)
    result = _finish(h, loser, gh(effect.request))
    assert result.access_token == winner.access_token  # not revoked: the winner's token is used
    assert gh.refreshes == ["ghr_first", "ghr_first"]


def _apply(h: Harness, effect: Any) -> Any:
    def one() -> Any:
        return (yield effect)

    return run(one(), h.store, h.upstream)


def _finish(h: Harness, gen: Any, first: Any) -> Any:
    try:
        effect = gen.send(first)
        while True:
            result = h.upstream(effect.request) if hasattr(effect, "request") else _apply(h, effect)
            effect = gen.send(result)
    except StopIteration as stop:
        return stop.value


def test_expired_refresh_token_is_not_sent() -> None:
    h, gh = github_harness(app=True)
    client, resp = flow(h)
    grant = grant_of(h, redeem(h, client, resp)["access_token"])
    h.clock.advance(15811200 + 1)
    with pytest.raises(InvalidTokenError):
        upstream_token(h, grant)
    assert gh.refreshes == []


def test_jwks_record_kind_is_jwks() -> None:
    h = google_like()
    flow(h)
    assert h.store.get("jwks", digest(BASE + "/jwks")) is not None
