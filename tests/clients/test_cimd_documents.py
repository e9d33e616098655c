"""Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document, MCP 2025-11-25):
URL and document rules as properties (acceptance iff every rule holds), the flow without DCR, the
cache (max-age bounds, ETag revalidation, a changed document after expiry) and the consent page."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from oauthproxy_adapters.driver import execute_sync
from oauthproxy_adapters.stores.memory import MemoryStore
from oauthproxy_core.cimd import (
    CLIENT_METADATA,
    DEFAULT_TTL,
    FETCH_TIMEOUT,
    MAX_DOCUMENT_BYTES,
    MAX_TTL,
    MIN_TTL,
    CimdDocumentError,
    client_from_document,
    fetch_document,
    freshness,
)
from oauthproxy_core.effects import FetchDocument, HttpCall, HttpFailure, HttpResponse
from oauthproxy_core.url_policy import document_url_problem
from tests.clients.support import CIMD_URL, REDIRECT, DocumentHost, cimd_harness, document
from tests.harness import (
    VERIFIER,
    Browser,
    Harness,
    UpstreamUser,
    consent_fields,
    redirect_params,
)

NOW = 1_800_000_000

# --------------------------------------------------------------------------------------------------
# The URL: property


_HOSTS = {
    "client.example": True,
    "8.8.8.8": True,
    "[2606:4700:4700::1111]": True,
    "127.0.0.1": False,
    "localhost": False,
    "10.1.2.3": False,
    "169.254.169.254": False,
    "[::1]": False,
    "[fd00::1]": False,
    "[::ffff:127.0.0.1]": False,
    "100.64.0.1": False,
}
_PATHS = {
    "/client.json": True,
    "/a/b/metadata": True,
    "": False,
    "/": False,
    "/a/../client.json": False,
    "/./client.json": False,
    "/a/%2e%2e/client.json": False,
}


@settings(max_examples=300)
@given(
    scheme=st.sampled_from(["https", "http", "ftp", "HTTPS"]),
    userinfo=st.sampled_from(["", "user@", "user:pw@"]),
    host=st.sampled_from(sorted(_HOSTS)),
    port=st.sampled_from(["", ":443", ":8443"]),
    path=st.sampled_from(sorted(_PATHS)),
    query=st.sampled_from(["", "?v=1"]),
    fragment=st.sampled_from(["", "#frag"]),
)
def test_cimd_url_accepted_iff_every_rule_holds(
    scheme: str, userinfo: str, host: str, port: str, path: str, query: str, fragment: str
) -> None:
    url = f"{scheme}://{userinfo}{host}{port}{path}{query}{fragment}"
    expected = (
        scheme == "https"
        and not userinfo
        and _HOSTS[host]
        and _PATHS[path]
        and not query
        and not fragment
    )
    assert (document_url_problem(url) is None) is expected, url


def test_test_policy_admits_loopback_http_only() -> None:
    assert document_url_problem("http://127.0.0.1:8123/c.json", allow_loopback=True) is None
    assert document_url_problem("http://127.0.0.1:8123/c.json") is not None
    assert document_url_problem("http://10.0.0.1/c.json", allow_loopback=True) is not None
    assert document_url_problem("http://client.example/c.json", allow_loopback=True) is not None


# --------------------------------------------------------------------------------------------------
# The document: property

_PUBLIC_JWK = {
    "kty": "EC",
    "crv": "P-256",
    "kid": "k1",
    "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
    "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
}
_PRIVATE_MEMBERS = ["d", "p", "q", "dp", "dq", "qi", "k"]

# (value, ok) per field; None means "absent".
_CLIENT_IDS = [(CIMD_URL, True), (CIMD_URL + "x", False), (CIMD_URL.upper(), False), (None, False)]
_NAMES = [("Example", True), ("", False), (None, False), (42, False)]
_REDIRECTS = [
    ([REDIRECT], True),
    (["https://app.example/cb"], True),
    ([], False),
    (["javascript:alert(1)"], False),
    (["http://evil.example/cb"], False),
    (None, False),
]
_METHODS = [
    (None, True),
    ("none", True),
    ("private_key_jwt", True),
    ("client_secret_basic", False),
    ("client_secret_post", False),
    ("client_secret_jwt", False),
]


@st.composite
def documents(draw: Any) -> tuple[dict[str, Any], bool]:
    doc: dict[str, Any] = {}
    ok = True
    for name, options in (
        ("client_id", _CLIENT_IDS),
        ("client_name", _NAMES),
        ("redirect_uris", _REDIRECTS),
        ("token_endpoint_auth_method", _METHODS),
    ):
        value, good = draw(st.sampled_from(options))
        ok &= good
        if value is not None:
            doc[name] = value
    keys = draw(st.sampled_from(["none", "jwks", "jwks_private", "jwks_uri", "both"]))
    if keys in ("jwks", "both"):
        doc["jwks"] = {"keys": [_PUBLIC_JWK]}
    if keys == "jwks_private":
        member = draw(st.sampled_from(_PRIVATE_MEMBERS))
        doc["jwks"] = {"keys": [{**_PUBLIC_JWK, member: "AAAA"}]}
        ok = False
    if keys in ("jwks_uri", "both"):
        doc["jwks_uri"] = "https://client.example/jwks.json"
    if keys == "both":
        ok = False
    if doc.get("token_endpoint_auth_method") == "private_key_jwt" and keys == "none":
        ok = False
    if draw(st.booleans()):
        doc["client_secret"] = "s3cr3t-s3cr3t-s3cr3t"
        ok = False
    if draw(st.booleans()):
        doc["logo_uri"] = "https://client.example/logo.png"  # informational: kept
    return doc, ok


@settings(max_examples=400)
@given(documents())
def test_cimd_document_accepted_iff_every_rule_holds(case: tuple[dict[str, Any], bool]) -> None:
    doc, ok = case
    try:
        client = client_from_document(doc, CIMD_URL, now=NOW, supported_scopes=("mcp",))
    except CimdDocumentError:
        assert not ok, doc
        return
    assert ok, doc
    assert client.client_id == CIMD_URL and client.source == "cimd"
    assert client.token_endpoint_auth_method in ("none", "private_key_jwt")
    assert client.secret_hash is None
    meta = dict(client.metadata)
    assert "client_secret" not in meta
    for jwk in json.loads(meta.get("jwks", '{"keys": []}'))["keys"]:
        assert not set(jwk) & set(_PRIVATE_MEMBERS)


def test_freshness_is_bounded() -> None:
    assert freshness(None) == DEFAULT_TTL == 300
    assert freshness("public, max-age=1") == MIN_TTL == 60
    assert freshness("max-age=3600") == 3600
    assert freshness("max-age=999999999") == MAX_TTL == 86400
    assert freshness("no-store") == MIN_TTL
    assert freshness("max-age=abc") == DEFAULT_TTL


# --------------------------------------------------------------------------------------------------
# The flow, without registration


def _cimd_client(**extra: Any) -> dict[str, Any]:
    return {"client_id": CIMD_URL, "redirect_uris": [REDIRECT], **extra}


def test_metadata_advertises_cimd() -> None:
    h, _ = cimd_harness()
    meta = json.loads(h.request("GET", "/.well-known/oauth-authorization-server").body)
    assert meta["client_id_metadata_document_supported"] is True
    assert "private_key_jwt" in meta["token_endpoint_auth_methods_supported"]
    h2, _ = cimd_harness(cimd_enabled=False)
    meta2 = json.loads(h2.request("GET", "/.well-known/oauth-authorization-server").body)
    assert "client_id_metadata_document_supported" not in meta2


def test_cimd_client_completes_a_flow_without_registration() -> None:
    h, host = cimd_harness()
    host.serve(CIMD_URL, document())
    browser = Browser()
    resp = h.request("GET", h.authorize_url(_cimd_client(), VERIFIER), browser=browser)
    assert resp.status == 302, resp.body
    consent = h.request(
        "GET", resp.header("location").removeprefix(h.config.issuer), browser=browser
    )
    page = consent.body.decode()
    assert "Example CIMD Client" in page
    assert "Published by" in page and "<code>client.example</code>" in page
    assert "localhost" in page and 'class="warn"' in page  # only loopback redirect URIs
    fields = consent_fields(consent)
    resp = h.form("/consent", {**fields, "decision": "approve"}, browser=browser)
    callback = h.upstream.login(resp.header("location"), UpstreamUser(id=7, login="cimd"))
    resp = h.request("GET", callback.removeprefix(h.config.issuer), browser=browser)
    code = redirect_params(resp)["code"]
    token = h.token(
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "code_verifier": VERIFIER,
            "client_id": CIMD_URL,
            "resource": h.config.resource,
        }
    )
    assert token.status == 200, token.body
    body = json.loads(token.body)
    principal = h.bearer(body["access_token"])
    assert getattr(principal, "client_id", None) == CIMD_URL
    # One fetch served every step (authorize, consent, token): the cache record.
    assert len(host.fetches) == 1
    fetch = host.fetches[0]
    # A document fetch, not an HTTP call: the fetcher sends only GET with Accept: application/json.
    assert isinstance(fetch, FetchDocument)
    assert fetch.purpose == "client_metadata"
    assert fetch.url == CIMD_URL


def test_https_redirect_uri_shows_no_localhost_warning() -> None:
    h, host = cimd_harness()
    host.serve(CIMD_URL, document(redirect_uris=["https://app.example/cb"]))
    browser = Browser()
    client = {"client_id": CIMD_URL, "redirect_uris": ["https://app.example/cb"]}
    resp = h.request("GET", h.authorize_url(client, VERIFIER), browser=browser)
    assert resp.status == 302, resp.body
    page = h.request("GET", resp.header("location").removeprefix(h.config.issuer), browser=browser)
    assert 'class="warn"' not in page.body.decode()


def _authorize_status(h: Any, redirect: str = REDIRECT) -> int:
    return int(
        h.request("GET", h.authorize_url(_cimd_client(redirect_uris=[redirect]), VERIFIER)).status
    )


def test_invalid_documents_are_refused_with_a_page_never_a_redirect() -> None:
    cases = [
        ({"body": document(client_id=CIMD_URL + "?x")}, "client_id mismatch"),
        ({"body": document(client_name=None)}, "no client_name"),
        ({"body": document(token_endpoint_auth_method="client_secret_basic")}, "shared secret"),
        ({"body": document(), "content_type": "text/html"}, "not JSON"),
        ({"body": document(), "status": 404}, "404"),
        ({"body": b"[1, 2]"}, "not an object"),
        ({"body": b"{not json"}, "malformed"),
    ]
    for kwargs, why in cases:
        h, host = cimd_harness()
        host.serve(CIMD_URL, **kwargs)
        resp = h.request("GET", h.authorize_url(_cimd_client(), VERIFIER))
        assert resp.status == 400, why
        assert resp.header("location") is None, why


def test_redirect_uri_must_match_the_document() -> None:
    h, host = cimd_harness()
    host.serve(CIMD_URL, document())
    assert _authorize_status(h, "http://127.0.0.1:40000/callback") == 302  # loopback port tolerance
    resp = h.request(
        "GET",
        h.authorize_url(_cimd_client(redirect_uris=["http://127.0.0.1:33418/other"]), VERIFIER),
    )
    assert resp.status == 400 and resp.header("location") is None


def test_cimd_disabled_never_fetches() -> None:
    h, host = cimd_harness(cimd_enabled=False)
    host.serve(CIMD_URL, document())
    assert _authorize_status(h) == 400
    assert host.fetches == []


def test_private_address_client_id_is_refused_before_any_fetch() -> None:
    h, host = cimd_harness()
    for url in ("https://10.0.0.1/c.json", "https://127.0.0.1/c.json", "https://[::1]/c.json"):
        host.serve(url, document(url=url))
        resp = h.request(
            "GET", h.authorize_url({"client_id": url, "redirect_uris": [REDIRECT]}, VERIFIER)
        )
        assert resp.status == 400
    assert host.fetches == []


# --------------------------------------------------------------------------------------------------
# The cache


def test_cache_honours_max_age_with_its_bounds_and_revalidates_with_etag() -> None:
    h, host = cimd_harness()
    host.serve(CIMD_URL, document(), headers=(("Cache-Control", "max-age=120"), ("ETag", '"v1"')))
    assert _authorize_status(h) == 302
    h.clock.advance(100)
    assert _authorize_status(h) == 302
    assert len(host.fetches) == 1  # fresh
    h.clock.advance(30)
    assert _authorize_status(h) == 302
    assert len(host.fetches) == 2  # stale: revalidated
    assert host.fetches[1].etag == '"v1"'
    h.clock.advance(60)
    assert _authorize_status(h) == 302
    assert len(host.fetches) == 2  # the 304 freshened it (default 5 min without Cache-Control)


def test_tiny_and_huge_max_age_are_clamped() -> None:
    h, host = cimd_harness()
    host.serve(CIMD_URL, document(), headers=(("Cache-Control", "max-age=1"),))
    _authorize_status(h)
    h.clock.advance(30)
    _authorize_status(h)
    assert len(host.fetches) == 1  # at least 60 s
    h2, host2 = cimd_harness()
    host2.serve(CIMD_URL, document(), headers=(("Cache-Control", "max-age=99999999"),))
    _authorize_status(h2)
    h2.clock.advance(24 * 3600 + 1)
    _authorize_status(h2)
    assert len(host2.fetches) == 2  # at most 24 h


def test_a_changed_document_is_picked_up_after_expiry() -> None:
    h, host = cimd_harness()
    new_redirect = "https://app.example/new-callback"
    host.serve(CIMD_URL, document(), headers=(("Cache-Control", "max-age=300"),))
    assert _authorize_status(h) == 302
    host.serve(CIMD_URL, document(redirect_uris=[new_redirect]))
    assert _authorize_status(h, new_redirect) == 400  # still the cached document
    h.clock.advance(301)
    assert _authorize_status(h, new_redirect) == 302
    assert _authorize_status(h) == 400


def test_cache_is_shared_through_the_store() -> None:
    h, host = cimd_harness()
    host.serve(CIMD_URL, document())
    _authorize_status(h)
    other = Harness(h.config, store=h.store, clock=h.clock, seed=2)
    other_host = DocumentHost(callback_url=h.config.callback_url)
    other.upstream = other_host
    assert _authorize_status(other) == 302
    assert other_host.fetches == []  # the second instance used the first one's cache record


def test_invariant_23_fetch_document_yields_a_fetch_document_never_an_http_call() -> None:
    """The core asks for a document with its own effect (spec/security.md 23), so no driver can hand it
    to the plain HTTP client by mistake: every effect is a store effect or the ``FetchDocument``,
    which carries the URL as given (no marker), its purpose and the bounds the fetcher enforces."""
    store = MemoryStore()
    body = json.dumps(document()).encode()
    gen = fetch_document(CIMD_URL, now=1_000, purpose=CLIENT_METADATA)
    effects: list[Any] = []
    sent: Any = None
    while True:
        try:
            effect = gen.send(sent)
        except StopIteration as stop:
            result = stop.value
            break
        effects.append(effect)
        if isinstance(effect, FetchDocument):
            sent = HttpResponse(
                status=200, headers=(("Content-Type", "application/json"),), body=body
            )
        else:
            assert not isinstance(effect, HttpCall), effect
            sent = execute_sync(effect, store, http=lambda _req: HttpFailure(reason="connect"))
    assert result == document()
    (fetch,) = [e for e in effects if isinstance(e, FetchDocument)]
    assert fetch == FetchDocument(
        url=CIMD_URL,
        purpose="client_metadata",
        timeout=FETCH_TIMEOUT,
        max_bytes=MAX_DOCUMENT_BYTES,
        etag=None,
    )
