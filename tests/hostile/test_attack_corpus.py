"""Every string of the attack corpus (attack_corpus.py) through the real application, once through the
ASGI adapter and once through the WSGI adapter: the documented error, never a 5xx, never an exception,
and never a redirect to a URI the client did not register (spec/security.md 1-4, 28, 29)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import pytest

from oauthproxy_core.errors import InvalidRedirectUriError
from oauthproxy_core.redirect_uris import is_acceptable_redirect_uri, validate_redirect_uri
from tests.harness import CONSENT_FORM_HEADERS, VERIFIER, UpstreamUser
from tests.hostile import attack_corpus as corpus
from tests.hostile.support import (
    BASE,
    TALLY,
    Answer,
    asgi_raw,
    async_target,
    documented_statuses,
    wsgi_raw,
    wsgi_target,
)

#: No exception escaped a handler: nothing on an ``oauthproxy`` logger at ERROR (conftest.py).
pytestmark = pytest.mark.usefixtures("no_exception_logged")

CHALLENGE = (
    base64.urlsafe_b64encode(hashlib.sha256(VERIFIER.encode()).digest()).rstrip(b"=").decode()
)
FORM = ("content-type", "application/x-www-form-urlencoded")
JSON_CT = ("content-type", "application/json")


def q(params: list[tuple[str, str]] | dict[str, str]) -> str:
    return urlencode(params, quote_via=quote)


class Target:
    """One adapter in front of a fresh proxy, with a cookie jar and two registered clients."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        if kind == "asgi":
            self.app, self.upstream = async_target()
            self.loop = asyncio.new_event_loop()
        else:
            self.app, self.upstream = wsgi_target()
        self.cookies: dict[str, str] = {}
        self.web = self.register([corpus.REGISTERED_HTTPS, corpus.REGISTERED_LOOPBACK])
        self.local = self.register([corpus.REGISTERED_LOCALHOST])

    def close(self) -> None:
        if self.kind == "asgi":
            self.loop.close()

    def request(
        self,
        method: str,
        path: str,
        query: str = "",
        headers: tuple[tuple[str, str], ...] = (),
        body: bytes = b"",
        *,
        cookies: bool = False,
    ) -> Answer:
        hdrs = list(headers)
        if cookies and self.cookies:
            hdrs.append(("cookie", "; ".join(f"{k}={v}" for k, v in self.cookies.items())))
        if self.kind == "asgi":
            answer = self.loop.run_until_complete(
                asgi_raw(
                    self.app,
                    method,
                    path.encode(),
                    query.encode(),
                    [(k.encode("latin-1"), v.encode("latin-1")) for k, v in hdrs],
                    body,
                )
            )
        else:
            answer = wsgi_raw(self.app, method, path, query, dict(hdrs), body)
        TALLY.record(f"attack corpus ({self.kind})", answer.status)
        assert answer.status < 500, (method, path, answer)
        assert answer.status in documented_statuses(path, method), (method, path, answer)
        for k, v in answer.headers:
            assert "\r" not in v and "\n" not in v, (k, v)  # no header injection, ever
            if k == "set-cookie" and cookies:
                name, _, rest = v.partition("=")
                self.cookies[name] = rest.split(";", 1)[0]
        return answer

    def register(self, uris: list[str], **extra: Any) -> dict[str, Any]:
        body = {
            "redirect_uris": uris,
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
            **extra,
        }
        answer = self.request(
            "POST", "/register", headers=(JSON_CT,), body=json.dumps(body).encode()
        )
        assert answer.status == 201, answer
        return json.loads(answer.body)  # type: ignore[no-any-return]

    def authorize_params(
        self, client: dict[str, Any], redirect_uri: str, **over: str
    ) -> dict[str, str]:
        params = {
            "response_type": "code",
            "client_id": client["client_id"],
            "redirect_uri": redirect_uri,
            "state": "st",
            "code_challenge": CHALLENGE,
            "code_challenge_method": "S256",
        }
        params.update(over)
        return params

    def run_flow(self, client: dict[str, Any], redirect_uri: str, state: str) -> str:
        """authorize -> consent -> upstream -> callback; returns the final Location."""
        self.cookies.clear()
        params = self.authorize_params(client, redirect_uri, state=state)
        answer = self.request("GET", "/authorize", q(params), cookies=True)
        assert answer.status == 302, answer
        consent = urlsplit(answer.header("location") or "")
        assert f"{consent.scheme}://{consent.netloc}{consent.path}" == BASE + "/consent"
        page = self.request("GET", "/consent", consent.query, cookies=True)
        assert page.status == 200, page
        html = page.body.decode()
        fields = {}
        for name in ("txn", "csrf"):
            marker = f'name="{name}" value="'
            start = html.index(marker) + len(marker)
            fields[name] = html[start : html.index('"', start)]
        approved = self.request(
            "POST",
            "/consent",
            headers=(FORM, *CONSENT_FORM_HEADERS),
            body=q({**fields, "decision": "approve"}).encode(),
            cookies=True,
        )
        assert approved.status == 303, approved
        callback = self.upstream.login(
            approved.header("location") or "", UpstreamUser(7, "mallory")
        )
        parts = urlsplit(callback)
        final = self.request("GET", parts.path, parts.query, cookies=True)
        assert final.status == 302, final
        return final.header("location") or ""


@pytest.fixture(scope="module", params=["asgi", "wsgi"])
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    t = Target(request.param)
    yield t
    t.close()


def is_page(answer: Answer, status: int = 400) -> bool:
    return (
        answer.status == status
        and (answer.header("content-type") or "").startswith("text/html")
        and answer.header("location") is None
    )


def json_error(answer: Answer) -> str:
    assert (answer.header("content-type") or "").startswith("application/json"), answer
    assert answer.header("cache-control") == "no-store", answer
    body = json.loads(answer.body)
    assert isinstance(body["error"], str)
    return str(body["error"])


# -- redirect URIs ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(corpus.BAD_REDIRECT_URIS_AT_REGISTRATION))
@pytest.mark.parametrize("application_type", ["web", "native"])
def test_registration_refuses_the_redirect_uri(
    target: Target, name: str, application_type: str
) -> None:
    uri = corpus.BAD_REDIRECT_URIS_AT_REGISTRATION[name]
    body = {"redirect_uris": [uri], "application_type": application_type}
    answer = target.request("POST", "/register", headers=(JSON_CT,), body=json.dumps(body).encode())
    assert answer.status == 400, answer
    assert json_error(answer) == "invalid_redirect_uri"


@pytest.mark.parametrize("name", sorted(corpus.BAD_REDIRECT_URIS_AT_AUTHORIZE))
@pytest.mark.parametrize(
    "also_invalid", [False, True], ids=["valid-otherwise", "bad-response-type"]
)
def test_authorize_renders_a_page_and_never_redirects(
    target: Target, name: str, also_invalid: bool
) -> None:
    uri = corpus.BAD_REDIRECT_URIS_AT_AUTHORIZE[name]
    over = {"response_type": "token"} if also_invalid else {}
    params = target.authorize_params(target.web, uri, **over)
    answer = target.request("GET", "/authorize", q(params))
    assert is_page(answer), answer
    assert b"invalid_request" in answer.body


@pytest.mark.parametrize(
    ("client", "uri"),
    [
        ("web", "http://127.0.0.1:1/callback"),
        ("web", "http://127.0.0.1:65535/callback"),
        ("web", "http://127.0.0.1/callback"),
        ("local", "http://localhost:50123/callback"),
    ],
)
def test_loopback_port_variants_are_allowed_and_answered_there(
    target: Target, client: str, uri: str
) -> None:
    # RFC 8252 §7.3: any port for a loopback redirect URI; the answer goes to the port requested.
    location = target.run_flow(getattr(target, client), uri, "s1")
    assert location.startswith(uri + "?"), location
    params = parse_qs(urlsplit(location).query)
    assert params["state"] == ["s1"] and params["iss"] == [BASE] and len(params["code"]) == 1


# -- state: header injection and parameter smuggling ---------------------------------------------


@pytest.mark.parametrize("name", sorted(corpus.HOSTILE_STATES))
def test_hostile_state_comes_back_byte_for_byte_in_one_parameter(target: Target, name: str) -> None:
    state = corpus.HOSTILE_STATES[name]
    for location in (
        target.run_flow(target.web, corpus.REGISTERED_LOOPBACK, state),
        # The error path: reported to the validated redirect URI with the same state.
        target.request(
            "GET",
            "/authorize",
            q(
                target.authorize_params(
                    target.web, corpus.REGISTERED_HTTPS, state=state, response_type="x"
                )
            ),
        ).header("location")
        or "",
    ):
        assert not any(c in location for c in "\r\n\x00#"), location
        parts = urlsplit(location)
        assert f"{parts.scheme}://{parts.netloc}{parts.path}" in (
            corpus.REGISTERED_LOOPBACK,
            corpus.REGISTERED_HTTPS,
        )
        params = parse_qs(parts.query, keep_blank_values=True)
        assert params["state"] == [state]
        assert params["iss"] == [BASE]
        assert len(params.get("code", [])) + len(params.get("error", [])) == 1


# -- encodings, NUL, numbers -------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(corpus.MALFORMED_ENCODINGS))
def test_malformed_encodings_are_refused_everywhere(target: Target, name: str) -> None:
    bad = corpus.MALFORMED_ENCODINGS[name]
    good = target.authorize_params(target.web, corpus.REGISTERED_HTTPS)
    for param in ("client_id", "redirect_uri", "state", "code_challenge", "scope"):
        fields = {**good, param: ""}
        query = "&".join(f"{k}={bad if k == param else quote(v)}" for k, v in fields.items())
        answer = target.request("GET", "/authorize", query)
        # In client_id or redirect_uri nothing is validated yet: a page. Elsewhere too: parsing
        # fails before anything else, so not even the registered URI receives it.
        assert is_page(answer), (param, answer)
    token = target.request(
        "POST",
        "/token",
        headers=(FORM,),
        body=f"grant_type=authorization_code&code={bad}&client_id={target.web['client_id']}".encode(),
    )
    assert token.status == 400 and json_error(token) == "invalid_request"
    revoke = target.request("POST", "/revoke", headers=(FORM,), body=f"token={bad}".encode())
    assert revoke.status == 400 and json_error(revoke) == "invalid_request"
    assert is_page(target.request("GET", "/auth/callback", f"state={bad}&code=x"))
    assert is_page(target.request("GET", "/consent", f"txn={bad}"))


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("authorization", "Bearer a\x00b"),
        ("authorization", "Bearer \r\nX-Injected: 1"),
        ("authorization", "Basic " + base64.b64encode(b"\x00:\x00").decode()),
        ("authorization", "Basic " + base64.b64encode(b"\xc0\xae:\xed\xa0\x80").decode()),
        ("authorization", "Bearer " + "A" * 60_000),
        ("cookie", "oauthproxy_browser=\x00; oauthproxy_csrf=\xff"),
        ("content-type", "application/x-www-form-urlencoded; charset=\x00"),
    ],
)
def test_hostile_header_values(target: Target, header: str, value: str) -> None:
    for method, path in (
        ("POST", "/token"),
        ("POST", "/revoke"),
        ("GET", "/mcp"),
        ("GET", "/register/x"),
    ):
        body = b"grant_type=refresh_token&refresh_token=x" if method == "POST" else b""
        headers = ((header, value),) if header == "content-type" else (FORM, (header, value))
        answer = target.request(method, path, headers=headers, body=body)
        assert 400 <= answer.status < 500, (path, answer)
        if path == "/mcp":
            assert (answer.header("www-authenticate") or "").startswith("Bearer resource_metadata=")


@pytest.mark.parametrize("number", corpus.HUGE_NUMBERS)
def test_huge_numbers_where_small_ones_belong(target: Target, number: str) -> None:
    reg = target.request(
        "POST",
        "/register",
        headers=(JSON_CT,),
        body=(
            b'{"redirect_uris":["http://127.0.0.1:' + number.encode() + b'/cb"],'
            b'"default_max_age":' + number.encode() + b"}"
        ),
    )
    assert reg.status == 400 and json_error(reg) in (
        "invalid_redirect_uri",
        "invalid_request",
        "invalid_client_metadata",
    )
    refresh = target.request(
        "POST",
        "/token",
        headers=(FORM,),
        body=q(
            {
                "grant_type": "refresh_token",
                "refresh_token": f"{number}.{number}",
                "client_id": target.web["client_id"],
            }
        ).encode(),
    )
    assert refresh.status == 400 and json_error(refresh) == "invalid_grant"
    page = target.request(
        "GET",
        "/authorize",
        q(target.authorize_params(target.web, f"http://127.0.0.1:{number}/callback")),
    )
    assert is_page(page)


# -- JSON parser attacks and bodies --------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(corpus.JSON_BOMBS))
def test_json_bombs_at_registration(target: Target, name: str) -> None:
    body = corpus.JSON_BOMBS[name]
    answer = target.request("POST", "/register", headers=(JSON_CT,), body=body)
    if name == "duplicate keys":
        # Python's parser keeps the last value. What was registered is what is echoed, and only
        # that URI is honoured at authorize: no parser differential inside the proxy.
        assert answer.status == 201, answer
        client = json.loads(answer.body)
        assert client["redirect_uris"] == ["https://evil.example/cb"]
        first = target.authorize_params(client, corpus.REGISTERED_HTTPS)
        assert is_page(target.request("GET", "/authorize", q(first)))
        return
    if len(body) > 64 * 1024:
        assert answer.status == 413, answer
        assert json_error(answer) == "invalid_request"
    else:
        assert answer.status == 400, answer
        # Malformed JSON is invalid_request; values that are not JSON values (NaN, an exponent
        # past float range) invalid_client_metadata. A UTF-16 body decodes (Python's json.loads
        # detects the encoding) to {} and lacks redirect_uris.
        errors = ("invalid_request", "invalid_client_metadata", "invalid_redirect_uri")
        assert json_error(answer) in errors


@pytest.mark.parametrize("size", [64 * 1024 + 1, 2 * 1024 * 1024])
@pytest.mark.parametrize(
    ("method", "path", "ctype"),
    [
        ("POST", "/register", "application/json"),
        ("POST", "/token", FORM[1]),
        ("POST", "/revoke", FORM[1]),
        ("POST", "/authorize", FORM[1]),
        ("POST", "/consent", FORM[1]),
        ("PUT", "/register/x", "application/json"),
        ("GET", "/authorize", FORM[1]),
    ],
)
def test_huge_bodies_are_413(target: Target, size: int, method: str, path: str, ctype: str) -> None:
    body = b"a=" + b"b" * (size - 2)
    answer = target.request(method, path, headers=(("content-type", ctype),), body=body)
    assert answer.status == 413, answer
    assert answer.header("location") is None


def test_a_body_split_across_many_messages_is_still_bounded() -> None:
    app, _ = async_target()
    body = b"grant_type=" + b"x" * (70 * 1024)
    answer = asyncio.run(
        asgi_raw(
            app, "POST", b"/token", b"", [(b"content-type", FORM[1].encode())], body, chunks=300
        )
    )
    TALLY.record("attack corpus (asgi)", answer.status)
    assert answer.status == 413


# -- consent posts from elsewhere (spec/security.md 31) ----------------------------------------------


@pytest.mark.parametrize("name", list(corpus.FOREIGN_CONSENT_ORIGINS))
def test_consent_post_not_from_the_proxy_page_is_refused(target: Target, name: str) -> None:
    """The browser's own cookie and form, posted with what a foreign page's request says about its
    origin: a 403 page through both adapters, and the same form from the proxy's page still works."""
    target.cookies.clear()
    params = target.authorize_params(target.web, corpus.REGISTERED_LOOPBACK)
    answer = target.request("GET", "/authorize", q(params), cookies=True)
    assert answer.status == 302, answer
    page = target.request(
        "GET", "/consent", urlsplit(answer.header("location") or "").query, cookies=True
    )
    assert page.status == 200, page
    fields = dict(re.findall(r'name="(txn|csrf)" value="([^"]*)"', page.body.decode()))
    body = q({**fields, "decision": "approve"}).encode()
    hostile = tuple(
        (k, v.replace("{issuer}", BASE)) for k, v in corpus.FOREIGN_CONSENT_ORIGINS[name]
    )
    refused = target.request("POST", "/consent", headers=(FORM, *hostile), body=body, cookies=True)
    assert is_page(refused, 403), (name, refused)
    approved = target.request(
        "POST", "/consent", headers=(FORM, *CONSENT_FORM_HEADERS), body=body, cookies=True
    )
    assert approved.status == 303, approved


# -- duplicated parameters and parameter pollution -----------------------------------------------


def test_duplicated_parameters_at_authorize_never_redirect(target: Target) -> None:
    base = target.authorize_params(target.web, corpus.REGISTERED_HTTPS)
    for name, second in (
        ("client_id", target.local["client_id"]),
        ("redirect_uri", "https://evil.example/cb"),
        ("redirect_uri", corpus.REGISTERED_HTTPS),
        ("state", "other"),
        ("code_challenge", CHALLENGE),
        ("response_type", "code"),
    ):
        items = [*base.items(), (name, second)]
        for order in (items, items[::-1]):
            answer = target.request("GET", "/authorize", q(order))
            assert is_page(answer), (name, answer)


def test_duplicated_parameters_at_the_token_endpoint(target: Target) -> None:
    for body in (
        "grant_type=refresh_token&grant_type=authorization_code",
        f"grant_type=refresh_token&refresh_token=a&refresh_token=b&client_id={target.web['client_id']}",
        f"grant_type=refresh_token&client_id={target.web['client_id']}&client_id={target.local['client_id']}",
    ):
        answer = target.request("POST", "/token", headers=(FORM,), body=body.encode())
        assert answer.status == 400 and json_error(answer) == "invalid_request", body
    answer = target.request("POST", "/revoke", headers=(FORM,), body=b"token=a&token=b")
    assert answer.status == 400 and json_error(answer) == "invalid_request"


def test_parameter_pollution(target: Target) -> None:
    cid = target.web["client_id"]
    # Query parameters on a POST are not form parameters (RFC 6749 §3.2: the body carries them).
    answer = target.request(
        "POST",
        "/token",
        query="grant_type=refresh_token",
        headers=(FORM,),
        body=f"client_id={cid}".encode(),
    )
    assert answer.status == 400 and json_error(answer) == "invalid_request"
    # ";" is not a separator: one parameter named grant_type with a strange value.
    answer = target.request(
        "POST",
        "/token",
        headers=(FORM,),
        body=f"grant_type=refresh_token;grant_type=x&client_id={cid}".encode(),
    )
    assert answer.status == 400 and json_error(answer) == "unsupported_grant_type"
    # Too many parameters, a parameter too long, an over-long name.
    many = "&".join(f"p{i}=1" for i in range(200))
    long_value = "grant_type=refresh_token&refresh_token=" + "r" * 5000
    long_name = "n" * 500 + "=1"
    for body in (many, long_value, long_name):
        answer = target.request("POST", "/token", headers=(FORM,), body=body.encode())
        assert answer.status == 400 and json_error(answer) == "invalid_request"
        page = target.request("GET", "/authorize", body)
        assert is_page(page)
    # Credentials twice: in the Authorization header and in the body, disagreeing.
    basic = "Basic " + base64.b64encode(f"{target.local['client_id']}:x".encode()).decode()
    answer = target.request(
        "POST",
        "/token",
        headers=(FORM, ("authorization", basic)),
        body=f"grant_type=refresh_token&refresh_token=a.b&client_id={cid}".encode(),
    )
    assert answer.status in (400, 401) and json_error(answer) in (
        "invalid_request",
        "invalid_client",
    )
    # A JSON body where a form is expected, and a form where JSON is expected.
    answer = target.request(
        "POST", "/token", headers=(JSON_CT,), body=b'{"grant_type":"refresh_token"}'
    )
    assert answer.status == 400 and json_error(answer) == "invalid_request"
    answer = target.request(
        "POST", "/register", headers=(FORM,), body=b"redirect_uris=https://app.example/cb"
    )
    assert answer.status == 400 and json_error(answer) == "invalid_request"


@pytest.mark.parametrize(
    "uri",
    [
        "https://app.example/cb/%c0%ae%c0%ae/evil",
        "https://app.example/%C0%AE/cb",
        "https://app.example/cb%ff",
        "https://app.example/cb/%ed%a0%80",
        "com.example.app:/cb/%c0%ae%c0%ae/x",
    ],
)
def test_regression_invalid_utf8_percent_encoding_in_a_redirect_path(uri: str) -> None:
    """Found by this suite: ``%c0%ae`` (an overlong ".", a dot to lenient decoders: the IIS
    traversal) passed the dot-segment check, which decoded with replacement characters."""
    with pytest.raises(InvalidRedirectUriError, match="malformed percent-encoding"):
        validate_redirect_uri(uri, application_type="native")
    assert not is_acceptable_redirect_uri(uri)
    # Valid UTF-8 percent-encoding in a path is still fine.
    assert (
        validate_redirect_uri("https://app.example/caf%C3%A9/cb")
        == "https://app.example/caf%C3%A9/cb"
    )
