"""spec/security.md 7: the upstream leg uses the proxy's own fresh PKCE verifier per transaction. It is never
the client's, two transactions (even of one client in one browser, with one client verifier) never
share an upstream challenge or verifier, and the verifier leaves the core only in the upstream token
request."""

from __future__ import annotations

import base64
import hashlib
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oauthproxy_core import HttpRequest, Response
from tests.harness import Browser, Harness, UpstreamUser, consent_fields, redirect_params

UNRESERVED = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
client_verifiers = st.text(alphabet=UNRESERVED, min_size=43, max_size=128)


def s256(verifier: str) -> str:
    return (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    )


class Recorder:
    """Every response the proxy sends and every request it makes upstream, in order."""

    def __init__(self, h: Harness) -> None:
        self.responses: list[Response] = []
        self.upstream_calls: list[HttpRequest] = h.upstream.calls
        original = h.request

        def request(method: str, target: str, **kw: Any) -> Response:
            resp = original(method, target, **kw)
            self.responses.append(resp)
            return resp

        h.request = request  # type: ignore[method-assign,assignment]


def run_transaction(h: Harness, client: dict[str, Any], verifier: str, browser: Browser) -> str:
    """One transaction up to the upstream redirect and back; returns the upstream challenge."""
    resp = h.request("GET", h.authorize_url(client, verifier), browser=browser)
    page = h.request("GET", resp.header("location").removeprefix(h.config.issuer), browser=browser)
    resp = h.form("/consent", {**consent_fields(page), "decision": "approve"}, browser=browser)
    upstream_url = resp.header("location")
    assert upstream_url is not None and upstream_url.startswith(h.config.upstream.authorize_url)
    challenge = dict(parse_qsl(urlsplit(upstream_url).query))["code_challenge"]
    callback = h.upstream.login(upstream_url, UpstreamUser(id=7, login="someone"))
    done = h.request("GET", callback.removeprefix(h.config.issuer), browser=browser)
    assert "code" in redirect_params(done)
    return challenge


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    verifiers=st.lists(client_verifiers, min_size=2, max_size=5),
    same_verifier=st.booleans(),
    same_browser=st.booleans(),
)
def test_invariant_7_each_transaction_gets_a_fresh_upstream_verifier(
    seed: int, verifiers: list[str], same_verifier: bool, same_browser: bool
) -> None:
    h = Harness(seed=seed)
    recorder = Recorder(h)
    client = h.register()
    if same_verifier:
        verifiers = [verifiers[0]] * len(verifiers)
    shared_browser = Browser()
    challenges = [
        run_transaction(h, client, v, shared_browser if same_browser else Browser())
        for v in verifiers
    ]
    token_calls = [c for c in recorder.upstream_calls if urlsplit(c.url).path == "/token"]
    upstream_verifiers = [dict(parse_qsl(c.body.decode()))["code_verifier"] for c in token_calls]

    # One upstream challenge and one verifier per transaction, none shared.
    assert len(set(challenges)) == len(verifiers)
    assert len(upstream_verifiers) == len(verifiers)
    assert len(set(upstream_verifiers)) == len(verifiers)
    for challenge, upstream_verifier in zip(challenges, upstream_verifiers, strict=True):
        # The verifier sent upstream is the one behind that transaction's challenge (RFC 7636 4.6)...
        assert s256(upstream_verifier) == challenge
        # ...a valid verifier of 256 bits (43 unreserved characters at least, spec/security.md 25)...
        assert 43 <= len(upstream_verifier) <= 128
        assert set(upstream_verifier) <= set(UNRESERVED)
        # ...and never the client's, nor derived from the client's challenge.
        assert upstream_verifier not in verifiers
        assert challenge not in {s256(v) for v in verifiers}
    # It never leaves the core except in the upstream token request: not in any response to the
    # browser or the client, and not in any other upstream request.
    for upstream_verifier in upstream_verifiers:
        for resp in recorder.responses:
            assert upstream_verifier.encode() not in resp.body
            assert all(upstream_verifier not in v for _k, v in resp.headers)
        for call in recorder.upstream_calls:
            if urlsplit(call.url).path == "/token":
                continue
            assert upstream_verifier not in call.url
            assert upstream_verifier.encode() not in call.body
            assert all(upstream_verifier not in v for _k, v in call.headers)
