"""spec/security.md 36 as a property: no sequence of requests yields a token wider than the
client's configuration.

Hypothesis writes sequences of token requests for the client credentials grant (RFC 6749 §4.4)
from every kind of client the configuration can hold (secret by Basic, secret in the body,
``private_key_jwt``, a client of the code grant only, a public client, an unknown one), each with
right or wrong credentials, the right method or another one, fresh, replayed or misaddressed
assertions, any scope (allowed, outside the client's, unsupported, malformed, none) and any
resource, with revocations and the clock moving in between. An oracle says which requests
deserve a token. Every answer must agree with it; and every token issued carries exactly the
authenticated client's configured subject, only scopes among the client's configured ones, the
protected resource as its audience and no refresh token.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oauthproxy_core.handlers.bearer import Principal
from tests.clients.machine_support import (
    APP_SECRET,
    CI_SECRET,
    KEY,
    OTHER_KEY,
    POSTER_SECRET,
    SCOPES,
    basic,
    claims_of,
    harness,
    signed,
)
from tests.harness import ISSUER

#: The configuration the oracle knows (tests/clients/machine_support.ENTRIES): the method, and for a
#: client allowed the grant, its subject and the scopes it may ask for.
CLIENTS: dict[str, dict[str, Any]] = {
    "ci-bot": {
        "method": "client_secret_basic",
        "secret": CI_SECRET,
        "subject": "service:ci-bot",
        "scopes": {"mcp:read", "mcp:write"},
    },
    "poster": {
        "method": "client_secret_post",
        "secret": POSTER_SECRET,
        "subject": "service:poster",
        "scopes": set(SCOPES),
    },
    "signer": {"method": "private_key_jwt", "subject": "service:signer", "scopes": {"mcp"}},
    "app": {"method": "client_secret_basic", "secret": APP_SECRET},
    "pub": {"method": "none"},
    "nobody": {"method": "client_secret_basic", "secret": "nobody-secret-0123456789"},
}
CREDENTIALS = ("right", "wrong", "other_method", "misaddressed", "replayed")
SCOPE_VALUES = (
    None,
    "",
    "mcp",
    "mcp:read",
    "mcp:read mcp:write",
    "mcp:write mcp",
    "offline_access",
    "admin",
    "mcp:read admin",
    'mcp "x',
)
RESOURCES = (None, ISSUER + "/mcp", ISSUER + "/mcp/", "https://other.example/mcp", ISSUER, "mcp")
SCOPE_OK = {None: True, "": True, "admin": False, "mcp:read admin": False, 'mcp "x': False}

request = st.tuples(
    st.just("token"),
    st.sampled_from(sorted(CLIENTS)),
    st.sampled_from(CREDENTIALS),
    st.sampled_from(SCOPE_VALUES),
    st.sampled_from(RESOURCES),
)
other = st.one_of(
    st.tuples(st.just("revoke_last"), st.none(), st.none(), st.none(), st.none()),
    st.tuples(st.just("wait"), st.integers(1, 400), st.none(), st.none(), st.none()),
)


class World:
    def __init__(self) -> None:
        self.h, _ = harness()
        #: Assertions that authenticated once: spent, whatever the request's outcome.
        self.spent: list[str] = []
        self.issued: list[tuple[str, str]] = []  # (client id, access token)

    def credentials(self, client_id: str, kind: str) -> tuple[dict[str, str], Any, bool]:
        """The form fields and headers for ``kind``, and whether they authenticate ``client_id``."""
        conf = CLIENTS[client_id]
        method, now = conf["method"], self.h.clock.now
        if method == "private_key_jwt":
            if kind == "right" or (kind == "replayed" and not self.spent):
                return self._assertion(signed(now=now, client_id=client_id)), (), True
            if kind == "replayed":
                return self._assertion(self.spent[-1]), (), False
            if kind == "wrong":
                return self._assertion(signed(OTHER_KEY, now=now, client_id=client_id)), (), False
            if kind == "misaddressed":
                aud = ISSUER + "/token"
                return (
                    self._assertion(signed(KEY, now=now, client_id=client_id, aud=aud)),
                    (),
                    False,
                )
            return {"client_id": client_id, "client_secret": "x" * 20}, (), False
        if method == "none":
            # A public client authenticates by its id alone; nothing else it sends is a credential.
            if kind == "right":
                return {"client_id": client_id}, (), True
            return {"client_id": client_id, "client_secret": "x" * 20}, (), False
        secret = conf["secret"] if kind != "wrong" else conf["secret"] + "x"
        by_basic = (method == "client_secret_basic") != (kind == "other_method")
        known = client_id != "nobody"
        right = kind in ("right", "misaddressed", "replayed") and known
        if by_basic:
            return {}, basic(client_id, secret), right
        return {"client_id": client_id, "client_secret": secret}, (), right

    @staticmethod
    def _assertion(value: str) -> dict[str, str]:
        return {
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": value,
        }

    def deserves(
        self, client_id: str, authenticated: bool, scope: str | None, resource: Any
    ) -> int:
        """The status the oracle expects."""
        if not authenticated:
            return 401
        conf = CLIENTS[client_id]
        if "subject" not in conf:
            return 400  # unauthorized_client
        allowed = conf["scopes"]
        scope_ok = SCOPE_OK[scope] if scope in SCOPE_OK else set(str(scope).split()) <= allowed
        if not scope_ok:
            return 400
        if resource not in (None, ISSUER + "/mcp", ISSUER + "/mcp/"):
            return 400
        return 200

    def token(self, client_id: str, kind: str, scope: str | None, resource: str | None) -> None:
        form, headers, authenticated = self.credentials(client_id, kind)
        form = {"grant_type": "client_credentials", **form}
        if scope is not None:
            form["scope"] = scope
        if resource is not None:
            form["resource"] = resource
        resp = self.h.token(form, headers=headers)
        if authenticated and "client_assertion" in form:
            self.spent.append(form["client_assertion"])
        expected = self.deserves(client_id, authenticated, scope, resource)
        assert resp.status == expected, (client_id, kind, scope, resource, resp.body)
        body = json.loads(resp.body)
        if resp.status != 200:
            assert set(body) <= {"error", "error_description"}
            return
        conf = CLIENTS[client_id]
        assert "refresh_token" not in body
        claims = claims_of(body["access_token"])
        assert claims["sub"] == conf["subject"] and claims["client_id"] == client_id
        assert claims["aud"] == self.h.config.resource
        granted = set(claims["scope"].split())
        assert granted and granted <= conf["scopes"]
        assert set(body["scope"].split()) == granted
        if scope:
            assert granted == set(scope.split())
        self.issued.append((client_id, body["access_token"]))

    def check_live_tokens(self) -> None:
        """Whatever still verifies at the resource is exactly what was configured."""
        for client_id, token in self.issued:
            principal = self.h.bearer(token)
            if isinstance(principal, Principal):
                conf = CLIENTS[client_id]
                assert principal.subject == conf["subject"] and principal.client_id == client_id
                assert set(principal.scopes) <= conf["scopes"]
                assert principal.resource == self.h.config.resource


def _revoke_last(world: World) -> None:
    if not world.issued:
        return
    client_id, token = world.issued[-1]
    form, headers, _ = world.credentials(client_id, "right")
    resp = world.h.form("/revoke", {"token": token, **form}, headers=headers)
    assert resp.status == 200
    if "client_assertion" in form:
        world.spent.append(form["client_assertion"])


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(steps=st.lists(st.one_of(request, request, request, other), min_size=1, max_size=14))
def test_invariant_36_no_request_sequence_widens_a_machine_token(
    steps: list[tuple[Any, ...]],
) -> None:
    world = World()
    for step in steps:
        if step[0] == "token":
            world.token(*step[1:])
        elif step[0] == "revoke_last":
            _revoke_last(world)
        else:
            world.h.clock.advance(step[1])
    world.check_live_tokens()
    # Every grant record in the store is a family of a client allowed the grant, as configured.
    for kind, _key, value in world.h.store.dump():
        if kind == "grant":
            grant = json.loads(value)[2]
            conf = CLIENTS[grant["client_id"]]
            assert grant["subject"] == conf["subject"]
            assert set(grant["scopes"]) == conf["scopes"]
