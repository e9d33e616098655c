"""spec/security.md 4 (exactly one ``iss``, the client's ``state`` byte for byte) against redirect URIs whose
query already names a parameter of the authorization response (RFC 6749 §4.1.2, §4.1.2.1; RFC 9207
§2). Issue 13, item 7: ``https://app.example/cb?iss=https://evil.example`` was accepted at
registration, and every authorization response to it carried two ``iss`` values; a client that reads
the first one checks the attacker's issuer (the mix-up defence of RFC 9207 undone).

Refused wherever a redirect URI enters: dynamic registration and its RFC 7592 update, a Client ID
Metadata Document, a pre-registered client in the configuration; and, for a record that predates the
rule or was damaged at rest, by the same predicate at authorize and before every redirect
(spec/security.md 3). Through the real ASGI and WSGI applications.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oauthproxy_adapters.config_file import ConfigError, parse_settings
from oauthproxy_adapters.testing.flow import Call, Reply
from oauthproxy_core import FetchDocument, HttpFailure, HttpResponse
from oauthproxy_core.errors import AccessDeniedError, InvalidRedirectUriError
from oauthproxy_core.redirect_uris import is_acceptable_redirect_uri, validate_redirect_uri
from oauthproxy_core.redirects import authorization_redirect, error_redirect
from tests.hostile.support import asgi_sender, async_target, wsgi_sender, wsgi_target

BASE = "http://127.0.0.1:8000"  # hostile_config's issuer
RESPONSE_PARAMETERS = ("code", "state", "iss", "error", "error_description", "error_uri")
JSON_CT = (("Content-Type", "application/json"),)


class App:
    def __init__(self, kind: str) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        if kind == "asgi":
            self.loop = asyncio.new_event_loop()
            self.app, self.upstream = async_target()
            self.send = asgi_sender(self.app, self.loop)
        else:
            self.app, self.upstream = wsgi_target()
            self.send = wsgi_sender(self.app)

    def close(self) -> None:
        if self.loop is not None:
            self.loop.close()

    def register(self, uris: list[str], **extra: Any) -> Reply:
        body = {"redirect_uris": uris, "token_endpoint_auth_method": "none", **extra}
        reply: Reply = self.send(
            Call("POST", BASE + "/register", JSON_CT, json.dumps(body).encode())
        )
        return reply


@pytest.fixture(params=["asgi", "wsgi"])
def app(request: pytest.FixtureRequest) -> Iterator[App]:
    a = App(request.param)
    yield a
    a.close()


@pytest.mark.parametrize("name", RESPONSE_PARAMETERS)
def test_invariant_4_regression_registration_refuses_a_query_naming_a_response_parameter(
    app: App, name: str
) -> None:
    reply = app.register([f"http://127.0.0.1:33418/callback?{name}=https://evil.example"])
    assert reply.status == 400, reply
    assert reply.json()["error"] == "invalid_redirect_uri"
    # A query that names none of them is still fine (RFC 6749 §3.1.2) and is kept.
    ok = app.register(["http://127.0.0.1:33418/callback?tenant=a"])
    assert ok.status == 201 and ok.json()["redirect_uris"] == [
        "http://127.0.0.1:33418/callback?tenant=a"
    ]


def test_invariant_4_rfc7592_update_refuses_it_too(app: App) -> None:
    client = app.register(["http://127.0.0.1:33418/callback"]).json()
    update = {
        "client_id": client["client_id"],
        "redirect_uris": ["http://127.0.0.1:33418/callback?iss=https://evil.example"],
        "token_endpoint_auth_method": "none",
    }
    auth = (("Authorization", f"Bearer {client['registration_access_token']}"),)
    reply = app.send(
        Call("PUT", client["registration_client_uri"], JSON_CT + auth, json.dumps(update).encode())
    )
    assert reply.status == 400 and reply.json()["error"] == "invalid_redirect_uri", reply


def test_invariant_4_a_cimd_document_naming_such_a_uri_is_not_a_client(app: App) -> None:
    doc_url = "https://client.example/iss.json"
    uri = "http://127.0.0.1:33418/callback?iss=https://evil.example"
    document = {"client_id": doc_url, "client_name": "x", "redirect_uris": [uri]}

    def documents(doc: FetchDocument) -> HttpResponse | HttpFailure:
        if doc.url == doc_url:
            return HttpResponse(
                status=200,
                headers=(("Content-Type", "application/json"),),
                body=json.dumps(document).encode(),
            )
        return HttpResponse(status=404)

    if app.loop is not None:

        async def fetch(doc: FetchDocument) -> HttpResponse | HttpFailure:
            return documents(doc)

        app.app.proxy.fetch = fetch
    else:
        app.app.proxy.fetch = documents
    query = "&".join(
        f"{k}={quote(v, safe='')}"
        for k, v in {
            "response_type": "code",
            "client_id": doc_url,
            "redirect_uri": uri,
            "state": "s",
            "code_challenge": "x" * 43,
            "code_challenge_method": "S256",
        }.items()
    )
    reply = app.send(Call("GET", f"{BASE}/authorize?{query}"))
    # Order of spec/security.md 2: the client is not valid, so a page and no redirect anywhere.
    assert reply.status == 400 and reply.header("location") is None, reply


def test_invariant_4_a_static_client_naming_such_a_uri_is_a_config_error() -> None:
    document = {
        "server": {"base_url": "https://proxy.example"},
        "upstream": {"provider": "github", "client_id": "gh", "client_secret": "gh-secret"},
        "clients": {
            "static": [
                {
                    "client_id": "tool",
                    "redirect_uris": ["https://tool.example/cb?iss=https://evil.example"],
                }
            ]
        },
    }
    with pytest.raises(ConfigError) as err:
        parse_settings(document)
    assert "redirect_uris" in str(err.value)


# -- the predicate and the response builder ----------------------------------------------------------

_other_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,11}", fullmatch=True).filter(
    lambda n: n.lower() not in RESPONSE_PARAMETERS
)
_values = st.from_regex(r"[A-Za-z0-9._~-]{0,8}", fullmatch=True)


def _spellings(name: str) -> st.SearchStrategy[str]:
    """How a parameter name can be written so that some query parser reads it as ``name``."""
    encoded = "".join(f"%{ord(c):02X}" if i % 2 else c for i, c in enumerate(name))
    variants = [name, name.upper(), name.title(), encoded, name + "[]"]
    if "_" in name:
        variants += [name.replace("_", "."), name.replace("_", "+")]
    return st.sampled_from(variants)


@given(
    base=st.sampled_from(
        ["https://app.example/cb", "http://127.0.0.1:33418/callback", "com.example.app:/cb"]
    ),
    before=st.lists(st.tuples(_other_names, _values), max_size=3),
    reserved=st.sampled_from(RESPONSE_PARAMETERS).flatmap(_spellings),
    value=_values,
    separator=st.sampled_from(["&", ";"]),
)
def test_invariant_4_property_any_spelling_of_a_response_parameter_is_refused(
    base: str, before: list[tuple[str, str]], reserved: str, value: str, separator: str
) -> None:
    pairs = [f"{k}={v}" for k, v in before]
    query = "&".join(pairs) + (separator if pairs else "") + f"{reserved}={value}"
    uri = f"{base}?{query}"
    assert not is_acceptable_redirect_uri(uri)
    with pytest.raises(InvalidRedirectUriError):
        validate_redirect_uri(uri, application_type="native")


@given(
    base=st.sampled_from(["https://app.example/cb", "http://127.0.0.1:33418/callback"]),
    extra=st.lists(st.tuples(_other_names, _values), max_size=4),
    state=st.none() | st.text(max_size=20),
    error=st.booleans(),
)
def test_invariant_4_property_an_accepted_uri_gets_exactly_one_iss_and_state(
    base: str, extra: list[tuple[str, str]], state: str | None, error: bool
) -> None:
    """Whatever registered query passes the predicate, the response parsed as a browser-side client
    would parse it (also case-insensitively) has exactly one ``iss`` and at most one of each other
    response parameter, the client's ``state`` byte for byte."""
    uri = base + ("?" + "&".join(f"{k}={v}" for k, v in extra) if extra else "")
    assert is_acceptable_redirect_uri(uri)
    issuer = "https://proxy.example"
    resp = (
        error_redirect(uri, AccessDeniedError("no"), client_state=state, issuer=issuer)
        if error
        else authorization_redirect(uri, [("code", "c0de")], client_state=state, issuer=issuer)
    )
    location = resp.header("location") or ""
    assert location.startswith(uri)
    pairs = parse_qsl(urlsplit(location).query, keep_blank_values=True)
    names = [k.lower() for k, _ in pairs]
    assert names.count("iss") == 1 and dict(pairs)["iss"] == issuer
    for name in RESPONSE_PARAMETERS:
        assert names.count(name) <= 1, (name, location)
    if state is None:
        assert "state" not in names
    else:
        assert dict(pairs)["state"] == state
