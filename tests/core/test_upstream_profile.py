"""The upstream side: request builders, response parsers and RFC 9207 issuer checks.

GitHub-shaped cases follow spec/interop.md ("Upstream providers: the quirks"); the property tests check
that the parsers only ever return a record or raise an ``UpstreamError``, and that no secret leaks
into a ``repr`` or an error message.
"""

from __future__ import annotations

import base64
import json
import unicodedata
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from oauthproxy_core.effects import HttpFailure, HttpRequest, HttpResponse
from oauthproxy_core.errors import (
    InvalidGrantError,
    InvalidRequestError,
    OAuthError,
    TemporarilyUnavailableError,
)
from oauthproxy_core.upstream import (
    MAX_RESPONSE_BYTES,
    UpstreamDeniedError,
    UpstreamError,
    UpstreamIdentity,
    UpstreamMixUpError,
    UpstreamProfile,
    UpstreamProtocolError,
    UpstreamTokens,
    UpstreamUnavailableError,
    build_authorize_url,
    build_refresh_request,
    build_token_request,
    build_userinfo_request,
    check_callback_issuer,
    parse_identity,
    parse_token_response,
)

NOW = 1_700_000_000
REDIRECT = "https://proxy.example/upstream/callback"
UNRESERVED = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
JSON_HEADERS = (("Content-Type", "application/json; charset=utf-8"),)
FORM_HEADERS = (("Content-Type", "application/x-www-form-urlencoded"),)


def github(**overrides: Any) -> UpstreamProfile:
    values: dict[str, Any] = {
        "name": "github",
        "authorize_url": "https://github.com/login/oauth/authorize",
        "token_url": "https://github.com/login/oauth/access_token",
        "client_id": "Iv1.abc123",
        "client_secret": "gh-secret-value",
        "scopes": ("read:user", "user:email"),
        "userinfo_url": "https://api.github.com/user",
        "subject_field": "id",
    }
    values.update(overrides)
    return UpstreamProfile(**values)


def oidc(**overrides: Any) -> UpstreamProfile:
    values: dict[str, Any] = {
        "name": "oauth2",
        "authorize_url": "https://idp.example/authorize",
        "token_url": "https://idp.example/token",
        "client_id": "proxy",
        "client_secret": "s3cr3t",
        "scopes": ("openid", "email"),
        "issuer": "https://idp.example",
        "require_iss": True,
        "userinfo_url": "https://idp.example/userinfo",
    }
    values.update(overrides)
    return UpstreamProfile(**values)


def query_of(url: str) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(url).query, keep_blank_values=True, strict_parsing=True)


def form_of(request: HttpRequest) -> dict[str, str]:
    pairs = parse_qsl(request.body.decode("ascii"), keep_blank_values=True, strict_parsing=True)
    assert len({k for k, _ in pairs}) == len(pairs), "a parameter is repeated"
    return dict(pairs)


def headers_of(request: HttpRequest) -> dict[str, str]:
    return {k.lower(): v for k, v in request.headers}


def json_response(body: Any, status: int = 200) -> HttpResponse:
    return HttpResponse(status=status, headers=JSON_HEADERS, body=json.dumps(body).encode())


# --------------------------------------------------------------------------------------------------
# Profile validation


def test_profile_defaults() -> None:
    p = UpstreamProfile(name="x", authorize_url="https://a/", token_url="https://t/", client_id="c")
    assert p.token_auth_method == "client_secret_post"
    assert p.use_pkce and not p.forward_resource and not p.require_iss
    assert p.subject_field == "sub"
    assert p.identity_fields == ("login", "email", "name", "preferred_username")
    assert p.timeout == 10.0


def test_profile_converts_lists_to_tuples() -> None:
    p = github(scopes=["repo"], extra_authorize_params=[("allow_signup", "false")])
    assert p.scopes == ("repo",)
    assert p.extra_authorize_params == (("allow_signup", "false"),)


@pytest.mark.parametrize(
    "overrides",
    [
        {"name": ""},
        {"name": "Git:Hub"},
        {"client_id": ""},
        {"token_auth_method": "private_key_jwt"},
        {"authorize_url": "github.com/login"},
        {"token_url": "ftp://github.com/token"},
        {"token_url": "https://github.com/token#frag"},
        {"userinfo_url": "/user"},
        {"scopes": ("two words",)},
        {"require_iss": True, "issuer": None},
        {"issuer": ""},
        {"timeout": 0},
        {"timeout": float("nan")},
        {"subject_field": ""},
        {"extra_authorize_params": (("state", "x"),)},
        {"extra_authorize_params": (("prompt", "a"), ("prompt", "b"))},
        {"extra_token_params": (("client_secret", "x"),)},
    ],
)
def test_profile_rejects_bad_shapes(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        github(**overrides)


# --------------------------------------------------------------------------------------------------
# Authorization request (RFC 6749 §4.1.1, RFC 7636 §4.3)


def test_authorize_url_exact_params() -> None:
    url = build_authorize_url(
        oidc(extra_authorize_params=(("access_type", "offline"), ("prompt", "consent"))),
        redirect_uri=REDIRECT,
        state="st-1",
        code_challenge="E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        resource="https://mcp.example/mcp",
    )
    assert url.startswith("https://idp.example/authorize?")
    assert query_of(url) == [
        ("response_type", "code"),
        ("client_id", "proxy"),
        ("redirect_uri", REDIRECT),
        ("state", "st-1"),
        ("scope", "openid email"),
        ("code_challenge", "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"),
        ("code_challenge_method", "S256"),
        ("access_type", "offline"),
        ("prompt", "consent"),
    ]
    assert "scope=openid%20email" in url  # space as %20, understood by every provider
    assert "#" not in url


def test_authorize_url_keeps_existing_query() -> None:
    profile = oidc(authorize_url="https://login.example/tenant/authorize?domain_hint=corp")
    url = build_authorize_url(
        profile, redirect_uri=REDIRECT, state="s", code_challenge="c", resource=None
    )
    assert urlsplit(url).path == "/tenant/authorize"
    assert query_of(url)[0] == ("domain_hint", "corp")
    assert ("state", "s") in query_of(url)


def test_authorize_url_omits_empty_scope_and_pkce_when_disabled() -> None:
    url = build_authorize_url(
        oidc(scopes=(), use_pkce=False),
        redirect_uri=REDIRECT,
        state="s",
        code_challenge=None,
        resource=None,
    )
    names = [k for k, _ in query_of(url)]
    assert names == ["response_type", "client_id", "redirect_uri", "state"]


def test_authorize_url_requires_challenge_with_pkce() -> None:
    with pytest.raises(ValueError):
        build_authorize_url(
            oidc(), redirect_uri=REDIRECT, state="s", code_challenge=None, resource=None
        )


@pytest.mark.parametrize("forward", [False, True])
def test_authorize_url_resource_only_when_enabled(forward: bool) -> None:
    url = build_authorize_url(
        oidc(forward_resource=forward),
        redirect_uri=REDIRECT,
        state="s",
        code_challenge="c",
        resource="https://mcp.example/mcp",
    )
    resources = [v for k, v in query_of(url) if k == "resource"]
    assert resources == (["https://mcp.example/mcp"] if forward else [])


def test_authorize_url_encodes_reserved_characters() -> None:
    url = build_authorize_url(
        oidc(),
        redirect_uri="https://p.example/cb?x=1&y=2",
        state="a b&c=d",
        code_challenge="c",
        resource=None,
    )
    q = dict(query_of(url))
    assert q["redirect_uri"] == "https://p.example/cb?x=1&y=2"
    assert q["state"] == "a b&c=d"


# --------------------------------------------------------------------------------------------------
# Token and refresh requests (RFC 6749 §4.1.3, §6, §2.3.1)


def test_token_request_client_secret_post() -> None:
    req = build_token_request(
        github(timeout=4.5),
        code="abc",
        redirect_uri=REDIRECT,
        code_verifier="v" * 43,
        resource="https://mcp.example/mcp",
    )
    assert req.method == "POST"
    assert req.url == "https://github.com/login/oauth/access_token"
    assert req.timeout == 4.5
    assert req.max_response_bytes == MAX_RESPONSE_BYTES
    headers = headers_of(req)
    assert headers["content-type"] == "application/x-www-form-urlencoded"
    assert headers["accept"] == "application/json"
    assert "authorization" not in headers
    assert form_of(req) == {
        "grant_type": "authorization_code",
        "code": "abc",
        "redirect_uri": REDIRECT,
        "code_verifier": "v" * 43,
        "client_id": "Iv1.abc123",
        "client_secret": "gh-secret-value",
    }


def test_token_request_client_secret_basic_encodes_per_rfc6749_2_3_1() -> None:
    profile = oidc(
        token_auth_method="client_secret_basic",
        client_id="my client:1",
        client_secret="p@ss:w%rd+/ é",
    )
    req = build_token_request(
        profile, code="abc", redirect_uri=REDIRECT, code_verifier="v" * 43, resource=None
    )
    scheme, _, b64 = headers_of(req)["authorization"].partition(" ")
    assert scheme == "Basic"
    decoded = base64.b64decode(b64, validate=True).decode("ascii")
    # Form-urlencoded before base64: ':' inside the id or secret is escaped, space becomes '+'.
    assert decoded == "my+client%3A1:p%40ss%3Aw%25rd%2B%2F+%C3%A9"
    form = form_of(req)
    assert "client_secret" not in form and "client_id" not in form


def test_token_request_auth_none_sends_client_id_only() -> None:
    req = build_token_request(
        oidc(token_auth_method="none", client_secret=""),
        code="abc",
        redirect_uri=REDIRECT,
        code_verifier="v" * 43,
        resource=None,
    )
    form = form_of(req)
    assert form["client_id"] == "proxy"
    assert "client_secret" not in form
    assert "authorization" not in headers_of(req)


@pytest.mark.parametrize("forward", [False, True])
def test_token_and_refresh_resource_only_when_enabled(forward: bool) -> None:
    profile = oidc(forward_resource=forward)
    for req in (
        build_token_request(
            profile, code="c", redirect_uri=REDIRECT, code_verifier="v" * 43, resource="https://m/"
        ),
        build_refresh_request(profile, refresh_token="rt", resource="https://m/"),
    ):
        assert ("resource" in form_of(req)) is forward


def test_token_request_without_pkce_omits_verifier() -> None:
    req = build_token_request(
        oidc(use_pkce=False), code="c", redirect_uri=REDIRECT, code_verifier=None, resource=None
    )
    assert "code_verifier" not in form_of(req)
    with pytest.raises(ValueError):
        build_token_request(
            oidc(), code="c", redirect_uri=REDIRECT, code_verifier=None, resource=None
        )


def test_refresh_request_exact_params_and_extras() -> None:
    req = build_refresh_request(
        oidc(extra_token_params=(("audience", "api"),)), refresh_token="rt-1", resource=None
    )
    assert req.method == "POST"
    assert req.url == "https://idp.example/token"
    assert headers_of(req)["accept"] == "application/json"
    assert list(parse_qsl(req.body.decode())) == [
        ("grant_type", "refresh_token"),
        ("refresh_token", "rt-1"),
        ("client_id", "proxy"),
        ("client_secret", "s3cr3t"),
        ("audience", "api"),
    ]


def test_userinfo_request() -> None:
    req = build_userinfo_request(github(), access_token="gho_abc")
    assert req.method == "GET"
    assert req.url == "https://api.github.com/user"
    assert req.body == b""
    headers = headers_of(req)
    assert headers["authorization"] == "Bearer gho_abc"
    assert headers["accept"] == "application/json"


def test_userinfo_request_errors() -> None:
    with pytest.raises(ValueError):
        build_userinfo_request(github(userinfo_url=None), access_token="t")
    with pytest.raises(ValueError) as info:
        build_userinfo_request(github(), access_token="gho_SECRET\r\nX-Injected: 1")
    assert "SECRET" not in str(info.value)


# --------------------------------------------------------------------------------------------------
# Token responses: GitHub (spec/interop.md)


def test_github_form_encoded_response() -> None:
    body = (
        b"access_token=gho_16C7e42F292c6912E7710c838347Ae178B4a&scope=repo%2Cuser&token_type=bearer"
    )
    tokens = parse_token_response(
        HttpResponse(status=200, headers=FORM_HEADERS, body=body), now=NOW
    )
    assert tokens.access_token == "gho_16C7e42F292c6912E7710c838347Ae178B4a"
    assert tokens.token_type == "Bearer"
    assert tokens.scope == ("repo", "user")
    assert tokens.expires_at is None
    assert tokens.refresh_token is None
    assert tokens.id_token is None


def test_github_form_body_without_content_type() -> None:
    body = b"access_token=gho_x&scope=&token_type=bearer"
    tokens = parse_token_response(HttpResponse(status=200, body=body), now=NOW)
    assert tokens.access_token == "gho_x"
    assert tokens.scope == ()


def test_github_json_response_without_expiry() -> None:
    tokens = parse_token_response(
        json_response({"access_token": "gho_x", "token_type": "bearer", "scope": "repo,gist"}),
        now=NOW,
    )
    assert tokens.expires_at is None
    assert tokens.scope == ("repo", "gist")


def test_github_app_rotating_refresh_token() -> None:
    tokens = parse_token_response(
        json_response(
            {
                "access_token": "ghu_a",
                "expires_in": 28800,
                "refresh_token": "ghr_b",
                "refresh_token_expires_in": 15811200,
                "scope": "",
                "token_type": "bearer",
            }
        ),
        now=NOW,
    )
    assert tokens.expires_at == NOW + 28800
    assert tokens.refresh_token == "ghr_b"


@pytest.mark.parametrize("code", ["bad_verification_code", "bad_refresh_token", "invalid_grant"])
def test_github_http_200_with_error_is_denied(code: str) -> None:
    for response in (
        json_response({"error": code, "error_description": "The code passed is incorrect."}),
        HttpResponse(status=200, headers=FORM_HEADERS, body=f"error={code}".encode()),
    ):
        with pytest.raises(UpstreamDeniedError) as info:
            parse_token_response(response, now=NOW)
        assert "incorrect" not in str(info.value)
        assert info.value.error == "invalid_grant" and info.value.status == 400


@pytest.mark.parametrize("code", ["incorrect_client_credentials", "invalid_client"])
def test_client_credential_errors_are_protocol_errors(code: str) -> None:
    with pytest.raises(UpstreamProtocolError) as info:
        parse_token_response(json_response({"error": code}, status=200), now=NOW)
    assert info.value.description == "upstream rejected the proxy's client credentials"


# --------------------------------------------------------------------------------------------------
# Token responses: generic (RFC 6749 §5.1, §5.2)


def test_generic_json_response() -> None:
    tokens = parse_token_response(
        json_response(
            {
                "access_token": "at",
                "token_type": "Bearer",
                "expires_in": "3600",
                "refresh_token": "rt",
                "scope": "openid email email",
                "id_token": "eyJ.eyJ.sig",
            }
        ),
        now=NOW,
    )
    assert tokens == UpstreamTokens(
        access_token="at",
        token_type="Bearer",
        refresh_token="rt",
        expires_at=NOW + 3600,
        scope=("openid", "email"),
        id_token="eyJ.eyJ.sig",
    )
    assert (tokens.access_token, tokens.refresh_token, tokens.id_token) == (
        "at",
        "rt",
        "eyJ.eyJ.sig",
    )


def test_token_type_absent_defaults_to_bearer_and_zero_expiry() -> None:
    tokens = parse_token_response(json_response({"access_token": "at", "expires_in": 0}), now=NOW)
    assert tokens.token_type == "Bearer"
    assert tokens.expires_at == NOW


@pytest.mark.parametrize(
    "body",
    [
        {"token_type": "Bearer"},
        {"access_token": ""},
        {"access_token": 12345},
        {"access_token": "at", "token_type": "mac"},
        {"access_token": "at", "token_type": "DPoP"},
        {"access_token": "at", "expires_in": -1},
        {"access_token": "at", "expires_in": 10**12},
        {"access_token": "at", "expires_in": "10" * 20},
        {"access_token": "at", "expires_in": 3600.0},
        {"access_token": "at", "expires_in": True},
        {"access_token": "at", "expires_in": "1h"},
        {"access_token": "at", "expires_in": "٣٦"},
        {"access_token": "at", "scope": ["openid"]},
        {"access_token": "at", "scope": 'a"b'},
        {"access_token": "at", "refresh_token": {"x": 1}},
        {"access_token": "at", "refresh_token": False},
        {"access_token": "at\r\nX: y"},
        {"error": 17},
        {"error": "invalid_request"},
        {"error": "invalid_target"},
        [1, 2],
        "access_token",
    ],
)
def test_malformed_token_responses(body: Any) -> None:
    with pytest.raises(UpstreamProtocolError) as info:
        parse_token_response(json_response(body), now=NOW)
    assert info.value.error == "server_error" and info.value.status == 502


@pytest.mark.parametrize(
    "body",
    [b"", b"<html>oops</html>", b"\xff\xfe\x00", b"[" * 100_000, b"a=1&a=2"],
)
def test_undecodable_token_bodies(body: bytes) -> None:
    with pytest.raises(UpstreamProtocolError):
        parse_token_response(HttpResponse(status=200, body=body), now=NOW)


def test_oversized_body_rejected() -> None:
    body = json.dumps({"access_token": "a", "pad": "x" * MAX_RESPONSE_BYTES}).encode()
    with pytest.raises(UpstreamProtocolError):
        parse_token_response(HttpResponse(status=200, headers=JSON_HEADERS, body=body), now=NOW)


@pytest.mark.parametrize("code", ["invalid_grant", "access_denied", "unauthorized_client"])
def test_400_denied(code: str) -> None:
    with pytest.raises(UpstreamDeniedError) as info:
        parse_token_response(json_response({"error": code}, status=400), now=NOW)
    assert isinstance(info.value, InvalidGrantError)


@pytest.mark.parametrize(
    "result",
    [
        HttpFailure(reason="timeout"),
        HttpFailure(reason="connect"),
        HttpFailure(reason="too_large"),
        HttpResponse(status=500, body=b"boom"),
        HttpResponse(status=502),
        HttpResponse(status=503, headers=(("Retry-After", "30"),)),
        HttpResponse(status=429, headers=(("Retry-After", "99999999"),)),
        json_response({"error": "temporarily_unavailable"}, status=400),
        json_response({"access_token": "at"}, status=503),
    ],
)
def test_unavailable(result: HttpResponse | HttpFailure) -> None:
    with pytest.raises(UpstreamUnavailableError) as info:
        parse_token_response(result, now=NOW)
    err = info.value
    assert isinstance(err, TemporarilyUnavailableError)
    assert (err.error, err.status) == ("temporarily_unavailable", 503)
    if isinstance(result, HttpResponse) and result.header("retry-after"):
        assert err.retry_after is not None and 0 <= err.retry_after <= 3600


def test_unexpected_statuses_are_protocol_errors() -> None:
    for status in (301, 400, 401, 404):
        with pytest.raises(UpstreamProtocolError):
            parse_token_response(HttpResponse(status=status, body=b"nope"), now=NOW)


def test_error_classes() -> None:
    expected = {
        UpstreamError: ("server_error", 502),
        UpstreamDeniedError: ("invalid_grant", 400),
        UpstreamUnavailableError: ("temporarily_unavailable", 503),
        UpstreamProtocolError: ("server_error", 502),
        UpstreamMixUpError: ("invalid_request", 400),
    }
    for cls, (code, status) in expected.items():
        assert issubclass(cls, UpstreamError) and issubclass(cls, OAuthError)
        assert (cls.error, cls.status) == (code, status)
    assert issubclass(UpstreamMixUpError, InvalidRequestError)


# --------------------------------------------------------------------------------------------------
# Identity (OIDC Core §5.3; GitHub GET /user)


def test_github_identity() -> None:
    body = {
        "login": "octocat",
        "id": 583231,
        "email": None,
        "name": "The\x00 Octo\ncat",
        "site_admin": False,
    }
    identity = parse_identity(github(), json_response(body))
    assert identity == UpstreamIdentity(
        subject="583231", claims=(("login", "octocat"), ("name", "The Octocat"))
    )


def test_oidc_identity_truncates_claims() -> None:
    body = {
        "sub": "248289761001",
        "email": "j@example.com",
        "email_verified": True,
        "name": "x" * 1000,
        "login": True,
    }
    identity = parse_identity(oidc(email_verified_claim="email_verified"), json_response(body))
    assert identity.subject == "248289761001"
    claims = dict(identity.claims)
    assert claims["email"] == "j@example.com"
    assert claims["name"] == "x" * 256
    assert "login" not in claims


@pytest.mark.parametrize(
    "body",
    [
        {"id": 1},
        {"sub": ""},
        {"sub": True},
        {"sub": 1.5},
        {"sub": None},
        {"sub": ["a"]},
        {"sub": "a\nb"},
        {"sub": "x" * 256},
        ["sub"],
    ],
)
def test_identity_bad_subject(body: Any) -> None:
    with pytest.raises(UpstreamProtocolError):
        parse_identity(oidc(), json_response(body))


@pytest.mark.parametrize(
    ("result", "error"),
    [
        (HttpResponse(status=401), UpstreamDeniedError),
        (HttpResponse(status=403), UpstreamDeniedError),
        (
            HttpResponse(status=403, headers=(("X-RateLimit-Remaining", "0"),)),
            UpstreamUnavailableError,
        ),
        (HttpResponse(status=429), UpstreamUnavailableError),
        (HttpResponse(status=500), UpstreamUnavailableError),
        (HttpFailure(reason="timeout"), UpstreamUnavailableError),
        (HttpResponse(status=404), UpstreamProtocolError),
        (HttpResponse(status=200, body=b"not json"), UpstreamProtocolError),
        (HttpResponse(status=200, body=b"a" * (MAX_RESPONSE_BYTES + 1)), UpstreamProtocolError),
    ],
)
def test_identity_failures(result: HttpResponse | HttpFailure, error: type[UpstreamError]) -> None:
    with pytest.raises(error):
        parse_identity(oidc(), result)


# --------------------------------------------------------------------------------------------------
# RFC 9207 issuer at the callback


def test_issuer_matches() -> None:
    check_callback_issuer(oidc(), "https://idp.example")


@pytest.mark.parametrize(
    "iss", [None, "https://idp.example/", "https://evil.example", "HTTPS://idp.example", ""]
)
def test_issuer_rejected_when_required(iss: str | None) -> None:
    with pytest.raises(UpstreamMixUpError) as info:
        check_callback_issuer(oidc(), iss)
    assert (info.value.error, info.value.status) == ("invalid_request", 400)
    if iss:
        assert iss not in str(info.value)


def test_issuer_absent_allowed_when_not_required() -> None:
    check_callback_issuer(github(), None)
    check_callback_issuer(oidc(require_iss=False), None)


def test_issuer_present_without_configured_issuer_rejected() -> None:
    with pytest.raises(UpstreamMixUpError):
        check_callback_issuer(github(), "https://github.com")


def test_issuer_present_but_wrong_when_not_required() -> None:
    with pytest.raises(UpstreamMixUpError):
        check_callback_issuer(oidc(require_iss=False), "https://other.example")


# --------------------------------------------------------------------------------------------------
# Properties

tokens_st = st.text(alphabet=UNRESERVED, min_size=1, max_size=64)
scope_token_st = st.text(alphabet=UNRESERVED + ":/", min_size=1, max_size=20)


@st.composite
def valid_token_responses(draw: st.DrawFn) -> tuple[HttpResponse, dict[str, Any]]:
    fields: dict[str, Any] = {"access_token": draw(tokens_st)}
    if draw(st.booleans()):
        fields["token_type"] = draw(st.sampled_from(["Bearer", "bearer", "BEARER"]))
    expires_in = draw(st.none() | st.integers(0, 10**8))
    if expires_in is not None:
        fields["expires_in"] = str(expires_in) if draw(st.booleans()) else expires_in
    refresh = draw(st.none() | tokens_st)
    if refresh is not None:
        fields["refresh_token"] = refresh
    scopes: list[str] = draw(st.lists(scope_token_st, max_size=5, unique=True))
    send_empty_scope: bool = draw(st.booleans())
    if scopes or send_empty_scope:
        fields["scope"] = draw(st.sampled_from([" ", ","])).join(scopes)
    expected = {
        "access_token": fields["access_token"],
        "refresh_token": refresh,
        "expires_at": None if expires_in is None else NOW + expires_in,
        "scope": tuple(scopes),
    }
    if draw(st.booleans()):
        form = {k: str(v) for k, v in fields.items()}
        response = HttpResponse(status=200, headers=FORM_HEADERS, body=urlencode(form).encode())
    else:
        response = HttpResponse(
            status=draw(st.sampled_from([200, 201])),
            headers=JSON_HEADERS,
            body=json.dumps(fields).encode(),
        )
    return response, expected


@given(valid_token_responses())
def test_property_valid_token_responses_recovered(
    case: tuple[HttpResponse, dict[str, Any]],
) -> None:
    response, expected = case
    tokens = parse_token_response(response, now=NOW)
    assert tokens.access_token == expected["access_token"]
    assert tokens.refresh_token == expected["refresh_token"]
    assert tokens.expires_at == expected["expires_at"]
    assert tokens.scope == expected["scope"]
    assert tokens.token_type == "Bearer"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
token_keys = st.sampled_from(
    ["access_token", "token_type", "expires_in", "refresh_token", "scope", "id_token", "error"]
)
# Near-valid documents (one valid base, one field replaced by anything) reach the success path and
# the field checks far more often than fully random dictionaries.
valid_token_dict = st.fixed_dictionaries(
    {"access_token": tokens_st},
    optional={
        "token_type": st.just("bearer"),
        "expires_in": st.integers(0, 10**6),
        "refresh_token": tokens_st,
        "scope": st.just("repo,user"),
    },
)
valid_identity_dict = st.fixed_dictionaries(
    {"sub": tokens_st, "id": st.integers(1, 10**12)},
    optional={"login": st.text(max_size=300), "email": st.text(), "name": st.integers()},
)


def _near(valid: st.SearchStrategy[dict[str, Any]], keys: st.SearchStrategy[str]) -> Any:
    return valid | st.builds(lambda base, k, v: {**base, k: v}, valid, keys, json_values)


identity_keys = st.sampled_from(["sub", "id", "login", "email", "name", "preferred_username", "x"])
token_like = st.dictionaries(token_keys, json_values, max_size=7) | _near(
    valid_token_dict, token_keys
)
identity_like = st.dictionaries(identity_keys, json_values, max_size=7) | _near(
    valid_identity_dict, identity_keys
)
statuses = st.sampled_from([200, 200, 200, 201, 204, 301, 400, 401, 403, 404, 429, 500, 503]) | (
    st.integers(100, 599)
)
content_types = st.sampled_from([(), JSON_HEADERS, FORM_HEADERS, (("Content-Type", "text/html"),)])


def _bodies(objects: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=200),
        json_values.map(lambda v: json.dumps(v).encode()),
        objects.map(lambda v: json.dumps(v).encode()),
        objects.map(
            lambda v: urlencode(
                {k: json.dumps(x) if not isinstance(x, str) else x for k, x in v.items()}
            ).encode()
        ),
    )


@given(status=statuses, headers=content_types, body=_bodies(token_like))
@settings(max_examples=300)
def test_property_token_parser_total(
    status: int, headers: tuple[tuple[str, str], ...], body: bytes
) -> None:
    try:
        result = parse_token_response(
            HttpResponse(status=status, headers=headers, body=body), now=NOW
        )
    except UpstreamError as exc:
        assert isinstance(exc, OAuthError)
        event(type(exc).__name__)
    else:
        event("UpstreamTokens")
        assert isinstance(result, UpstreamTokens)
        assert 200 <= status < 300
        assert result.access_token


@given(status=statuses, headers=content_types, body=_bodies(identity_like))
@settings(max_examples=300)
def test_property_identity_parser_total(
    status: int, headers: tuple[tuple[str, str], ...], body: bytes
) -> None:
    for profile in (oidc(), github()):
        try:
            identity = parse_identity(
                profile, HttpResponse(status=status, headers=headers, body=body)
            )
        except UpstreamError as exc:
            event(type(exc).__name__)
        else:
            event("UpstreamIdentity")
            assert isinstance(identity, UpstreamIdentity)
            assert 0 < len(identity.subject) <= 255
            for name, value in identity.claims:
                assert name in profile.identity_fields
                assert 0 < len(value) <= 256
                assert not any(unicodedata.category(c) == "Cc" for c in value)


@given(reason=st.text(max_size=20))
def test_property_failures_unavailable(reason: str) -> None:
    with pytest.raises(UpstreamUnavailableError) as info:
        parse_token_response(HttpFailure(reason=reason), now=NOW)
    known = ("timeout", "connect", "too_large", "protocol")
    shown = reason if reason in known else "failure"
    assert str(info.value) == f"upstream token endpoint unreachable ({shown})"
    with pytest.raises(UpstreamUnavailableError):
        parse_identity(github(), HttpFailure(reason=reason))


secret_st = st.text(alphabet=UNRESERVED, min_size=8, max_size=32).map(lambda s: "SECRET" + s)


@given(client_secret=secret_st, access=secret_st, refresh=secret_st, id_token=secret_st)
def test_property_secrets_never_in_repr(
    client_secret: str, access: str, refresh: str, id_token: str
) -> None:
    profile = github(client_secret=client_secret)
    tokens = UpstreamTokens(
        access_token=access,
        token_type="Bearer",
        refresh_token=refresh,
        expires_at=None,
        scope=(),
        id_token=id_token,
    )
    for text in (repr(profile), str(profile), repr(tokens), str(tokens)):
        for secret in (client_secret, access, refresh, id_token):
            assert secret not in text
            assert "SECRET" not in text


@given(
    secret=secret_st,
    template=st.sampled_from(
        [
            {"error": "invalid_grant", "error_description": "{s}"},
            {"error": "{s}"},
            {"error": "invalid_client", "error_uri": "{s}"},
            {"access_token": "{s}", "token_type": "{s}"},
            {"access_token": "{s}", "expires_in": "{s}"},
            {"access_token": "{s}", "scope": '"{s}"'},
            {"access_token": "{s}", "refresh_token": "{s}\n"},
            {"refresh_token": "{s}"},
            {"{s}": "{s}"},
        ]
    ),
    status=st.sampled_from([200, 400, 401, 500]),
)
def test_property_secrets_never_in_errors(
    secret: str, template: dict[str, str], status: int
) -> None:
    body = {k.replace("{s}", secret): v.replace("{s}", secret) for k, v in template.items()}
    with pytest.raises(UpstreamError) as info:
        parse_token_response(json_response(body, status=status), now=NOW)
    assert secret not in str(info.value)
    assert secret not in repr(info.value)
    assert "SECRET" not in info.value.description
    # The profile secret never reaches an error either.
    with pytest.raises(UpstreamError) as info2:
        parse_identity(github(client_secret=secret), json_response({"id": secret + "\x00"}))
    assert secret not in str(info2.value)
