"""JSON from outside, through the real application: every hostile JWT of the attack corpus as a
``client_assertion`` at the token and revocation endpoints and as a bearer token at the protected
path, and hostile JSON from the upstream provider and from a client's metadata document. Always the
documented 4xx or error redirect, never a 5xx, never an exception logged (spec/security.md 29; issue 13,
item 5: a nested assertion header answered 500 with a traceback).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from oauthproxy_adapters.testing.flow import (
    Call,
    Reply,
    approve,
    drive,
    open_consent,
    register,
    request,
)
from oauthproxy_core import FetchDocument, HttpFailure, HttpRequest, HttpResponse
from oauthproxy_core.client_auth import ASSERTION_TYPE
from tests.harness import ScriptedUpstream, UpstreamUser
from tests.hostile import attack_corpus as corpus
from tests.hostile.support import (
    BASE,
    TALLY,
    Answer,
    CookieJar,
    asgi_raw,
    asgi_sender,
    async_target,
    wsgi_raw,
    wsgi_sender,
    wsgi_target,
)

#: No exception escaped a handler: nothing on an ``oauthproxy`` logger at ERROR (conftest.py).
pytestmark = pytest.mark.usefixtures("no_exception_logged")

FORM = ("content-type", "application/x-www-form-urlencoded")
DEEP = b"[" * 3000 + b"]" * 3000


class Target:
    """One adapter in front of a fresh proxy (hostile_config: CIMD on, generous bounds)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        if kind == "asgi":
            self.app, self.upstream = async_target()
            self.loop: asyncio.AbstractEventLoop | None = asyncio.new_event_loop()
        else:
            self.app, self.upstream = wsgi_target()
            self.loop = None

    def close(self) -> None:
        if self.loop is not None:
            self.loop.close()

    def request(
        self, method: str, path: str, headers: tuple[tuple[str, str], ...] = (), body: bytes = b""
    ) -> Answer:
        if self.loop is not None:
            answer = self.loop.run_until_complete(
                asgi_raw(
                    self.app,
                    method,
                    path.encode(),
                    b"",
                    [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers],
                    body,
                )
            )
        else:
            answer = wsgi_raw(self.app, method, path, "", dict(headers), body)
        TALLY.record(f"untrusted JSON ({self.kind})", answer.status)
        assert answer.status < 500, (method, path, answer)
        return answer

    def sender(self) -> Any:
        return asgi_sender(self.app, self.loop) if self.loop is not None else wsgi_sender(self.app)


@pytest.fixture(scope="module", params=["asgi", "wsgi"])
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    t = Target(request.param)
    yield t
    t.close()


def _error(answer: Answer) -> str:
    assert (answer.header("content-type") or "").startswith("application/json"), answer
    return str(json.loads(answer.body)["error"])


def _assertion_form(endpoint: str, assertion: str) -> bytes:
    form: dict[str, str] = {
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion,
    }
    if endpoint == "/token (authorization_code)":
        form.update(grant_type="authorization_code", code="c", code_verifier="v" * 43)
    elif endpoint == "/token (refresh_token)":
        form.update(grant_type="refresh_token", refresh_token="r")
    else:
        form.update(token="t")
    return urlencode(form).encode()


ENDPOINTS = ("/token (authorization_code)", "/token (refresh_token)", "/revoke")


def test_invariant_29_regression_nested_assertion_header_is_invalid_client_not_500(
    target: Target,
) -> None:
    """The reported defect: a ``client_assertion`` whose header is 2,900 nested arrays raised
    RecursionError inside client authentication, and /token and /revoke answered 500."""
    assertion = corpus.HOSTILE_JWTS["header nested 2900 arrays deep"]
    for endpoint in ENDPOINTS:
        path = endpoint.split(" ", 1)[0]
        answer = target.request("POST", path, (FORM,), _assertion_form(endpoint, assertion))
        assert answer.status == 401, (endpoint, answer)
        assert _error(answer) == "invalid_client"
        assert b"Traceback" not in answer.body and b"Recursion" not in answer.body


@pytest.mark.parametrize("name", sorted(corpus.HOSTILE_JWTS))
def test_invariant_29_hostile_jwts_as_client_assertions(target: Target, name: str) -> None:
    assertion = corpus.HOSTILE_JWTS[name]
    for endpoint in ENDPOINTS:
        path = endpoint.split(" ", 1)[0]
        answer = target.request("POST", path, (FORM,), _assertion_form(endpoint, assertion))
        # RFC 6749 §5.2: a client that fails to authenticate gets invalid_client (401).
        assert answer.status == 401, (endpoint, answer)
        assert _error(answer) == "invalid_client"


@pytest.mark.parametrize("name", sorted(corpus.HOSTILE_JWTS))
def test_invariant_29_hostile_jwts_as_bearer_tokens(target: Target, name: str) -> None:
    token = corpus.HOSTILE_JWTS[name]
    answer = target.request("GET", "/mcp", (("authorization", f"Bearer {token}"),))
    # RFC 6750 §3.1: invalid_token with the one challenge the MCP clients parse.
    assert answer.status == 401, answer
    challenge = answer.header("www-authenticate") or ""
    assert challenge.startswith("Bearer resource_metadata="), challenge
    assert 'error="invalid_token"' in challenge


# -- JSON from the upstream provider and from a client's metadata document ------------------------


class HostileUpstream(ScriptedUpstream):
    """The scripted provider, answering one of its endpoints with a given body."""

    def __init__(self, base: ScriptedUpstream, path: str, body: bytes) -> None:
        super().__init__(callback_url=base.callback_url)
        self.path, self.body = path, body

    def __call__(self, req: HttpRequest) -> HttpResponse | HttpFailure:
        if urlsplit(req.url).path == self.path:
            if self.path == "/token":
                super().__call__(req)  # consume the code as the real provider would
            return HttpResponse(
                status=200, headers=(("Content-Type", "application/json"),), body=self.body
            )
        return super().__call__(req)


HOSTILE_BODIES: dict[str, bytes] = {
    "3000 nested arrays": DEEP,
    "3000 nested arrays in a field": b'{"access_token":"a","token_type":"bearer","x":'
    + DEEP
    + b"}",
    "17 nested objects": b'{"id":1,"login":"x","x":' + b'{"a":' * 17 + b"1" + b"}" * 18,
    "UTF-16": json.dumps({"access_token": "a", "id": 1, "login": "x"}).encode("utf-16"),
    "NaN": b'{"access_token":"a","token_type":"bearer","id":NaN,"login":"x"}',
}


def _swap_upstream(target: Target, upstream: ScriptedUpstream) -> None:
    proxy = target.app.proxy
    if target.kind == "asgi":

        async def http(req: HttpRequest) -> HttpResponse | HttpFailure:
            return upstream(req)

        proxy.http = http
    else:
        proxy.http = upstream
    target.upstream = upstream


@pytest.mark.parametrize("path", ["/token", "/user"])
@pytest.mark.parametrize("name", sorted(HOSTILE_BODIES))
def test_invariant_29_hostile_json_from_the_upstream_is_a_clean_error_redirect(
    target: Target, path: str, name: str
) -> None:
    upstream = HostileUpstream(target.upstream, path, HOSTILE_BODIES[name])
    _swap_upstream(target, upstream)
    jar = CookieJar(target.sender())
    client = drive(register(BASE), jar)
    fields = drive(open_consent(BASE, client), jar)
    approved = drive(approve(BASE, fields), jar)
    assert approved.status == 303, approved
    callback = upstream.login(approved.header("location") or "", UpstreamUser(7, "mallory"))
    reply: Reply = drive(request("GET", callback), jar)
    TALLY.record(f"untrusted JSON ({target.kind})", reply.status)
    # The client learns only that sign-in failed (RFC 6749 §4.1.2.1), at its registered URI.
    assert reply.status == 302, reply
    location = reply.header("location") or ""
    assert location.startswith(client["redirect_uris"][0] + "?"), location
    params = parse_qs(urlsplit(location).query)
    assert params["error"] == ["access_denied"] and "code" not in params


def test_invariant_29_deep_client_metadata_document_is_refused(target: Target) -> None:
    """A Client ID Metadata Document nested past the bound is not a client: a 400 page."""
    doc_url = "https://client.example/deep.json"

    fetched: list[str] = []

    def documents(doc: FetchDocument) -> HttpResponse | HttpFailure:
        fetched.append(doc.url)
        if doc.url == doc_url:
            body = (
                b'{"client_id":"' + doc_url.encode() + b'","redirect_uris":'
                b'["http://127.0.0.1:1/cb"],"x":' + DEEP + b"}"
            )
            return HttpResponse(
                status=200, headers=(("Content-Type", "application/json"),), body=body
            )
        return HttpResponse(status=404)

    proxy = target.app.proxy
    if target.kind == "asgi":

        async def fetch(doc: FetchDocument) -> HttpResponse | HttpFailure:
            return documents(doc)

        proxy.fetch = fetch
    else:
        proxy.fetch = documents
    query = urlencode(
        {
            "response_type": "code",
            "client_id": doc_url,
            "redirect_uri": "http://127.0.0.1:1/cb",
            "code_challenge": "x" * 43,
            "code_challenge_method": "S256",
        }
    )
    send = target.sender()
    reply = send(Call("GET", f"{BASE}/authorize?{query}"))
    TALLY.record(f"untrusted JSON ({target.kind})", reply.status)
    assert reply.status == 400 and reply.header("location") is None, reply
    assert fetched == [doc_url]  # refused for its depth, not for want of a document
