"""Which clients may come in: the ``[clients]`` admission policy (admission.py), key by key.

- ``dcr = false``: RFC 7591 §3 registration and RFC 7592 management answer 404 saying so and store
  nothing; RFC 8414 §2 metadata names no ``registration_endpoint``; a client registered while
  registration was on is refused at its next authorization (a page, never a redirect) and refresh
  (``invalid_client`` naming why).
- ``cimd_allowed_hosts`` / ``cimd_denied_hosts``: a document host outside the allowed list, or on the
  denied one, is refused with ``invalid_client`` (a page at /authorize) before anything is fetched;
  ``*.`` admits hosts below, never the name itself nor a name that merely ends alike. With ``cimd``
  off, a URL ``client_id`` is refused with its own reason and the metadata flag is absent.
- ``redirect_hosts``: registrations and RFC 7592 updates naming another host get
  ``invalid_client_metadata`` with nothing stored; a metadata document naming one is refused; a static
  client naming one is a configuration error; a registration made before the list existed is refused
  when looked up.

Every refusal is emitted as ``ClientRefused`` (the audit log's ``client_refused`` line).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from oauthproxy_adapters import audit
from oauthproxy_adapters.config_file import ConfigError, parse_settings
from oauthproxy_adapters.driver import run
from oauthproxy_core.admission import (
    CAUSES,
    CIMD_DISABLED,
    CIMD_HOST_DENIED,
    CIMD_HOST_NOT_ALLOWED,
    REDIRECT_HOST_NOT_ALLOWED,
    REGISTRATION_CLOSED,
    REGISTRATION_OFF,
    ClientAdmission,
)
from oauthproxy_core.domain_events import ClientRefused, DomainEvent
from oauthproxy_core.effects import Emit
from oauthproxy_core.http import Response
from oauthproxy_core.records import Client
from tests.clients.support import CIMD_URL, REDIRECT, DocumentHost, cimd_harness, document
from tests.harness import VERIFIER, Browser, Harness, make_config, redirect_params

JSON = (("content-type", "application/json"),)
AS_METADATA = "/.well-known/oauth-authorization-server"


def _observed(h: Harness) -> list[DomainEvent]:
    """Record every domain event ``h`` emits from now on (the driver's observer sees each Emit)."""
    events: list[DomainEvent] = []

    def request(method: str, target: str, **kw: Any) -> Response:
        browser = kw.get("browser")
        req = h.make_request(method, target, **kw)
        resp = run(
            h.server.handle(req, now=h.clock.now, random=h.random),
            h.store,
            h.upstream,
            observe=lambda effect, _r, _s: (
                events.append(effect.event) if isinstance(effect, Emit) else None
            ),
            fetch=h.fetch,
        )
        if browser is not None:
            browser.absorb(resp)
        return resp

    h.request = request  # type: ignore[method-assign]
    return events


def _refusals(events: list[DomainEvent]) -> list[tuple[str | None, str, str]]:
    return [(e.client_id, e.cause, e.at) for e in events if isinstance(e, ClientRefused)]


def _admission(**policy: Any) -> dict[str, Any]:
    return {"admission": ClientAdmission(**policy)}


def _register(h: Harness, **meta: Any) -> Response:
    body = {"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none", **meta}
    return h.request("POST", "/register", headers=JSON, body=json.dumps(body).encode())


def _error(resp: Response) -> tuple[int, str, str]:
    body = json.loads(resp.body)
    return resp.status, body["error"], body.get("error_description", "")


def _authorize(h: Harness, client_id: str, redirect: str = REDIRECT) -> Response:
    client = {"client_id": client_id, "redirect_uris": [redirect]}
    return h.request("GET", h.authorize_url(client, VERIFIER))


def _page_refusal(resp: Response, cause: str) -> None:
    """An authorization refused by the policy: a 400 page naming why, no redirect anywhere."""
    assert resp.status == 400, resp.body
    assert resp.header("location") is None
    assert (resp.header("content-type") or "").startswith("text/html")
    page = resp.body.decode()
    assert "invalid_client" in page
    assert CAUSES[cause] in page.replace("\n", " ")


def _token_by_id(h: Harness, client_id: str) -> Response:
    """A token request that names the client and nothing valid: client authentication runs first."""
    return h.token({"grant_type": "refresh_token", "refresh_token": "x.y", "client_id": client_id})


# --------------------------------------------------------------------------------------------------
# dcr = false


def test_rfc7591_3_registration_off_answers_404_saying_so_and_stores_nothing() -> None:
    h = Harness(make_config(**_admission(dcr=False)))
    events = _observed(h)
    before = h.store.dump()
    resp = _register(h)
    assert _error(resp) == (404, "not_found", REGISTRATION_OFF)
    assert resp.header("cache-control") == "no-store"
    assert resp.header("access-control-allow-origin") == "*"  # a browser client can read why
    assert h.store.dump() == before == []
    # Not even malformed input is looked at: the endpoint is not offered.
    assert _error(h.request("POST", "/register", headers=JSON, body=b"{"))[0] == 404
    assert events == []


def test_rfc8414_2_no_registration_endpoint_when_registration_is_off() -> None:
    on = json.loads(Harness().request("GET", AS_METADATA).body)
    assert on["registration_endpoint"] == on["issuer"] + "/register"
    off = json.loads(Harness(make_config(**_admission(dcr=False))).request("GET", AS_METADATA).body)
    assert "registration_endpoint" not in off
    # The CIMD flag stays: it is how a client learns where to go instead (MCP 2025-11-25).
    assert off["client_id_metadata_document_supported"] is True
    assert {k: v for k, v in on.items() if k != "registration_endpoint"} == off


def test_rfc7592_2_management_refused_whatever_the_token_while_registration_is_off() -> None:
    on = Harness()
    reg = on.register()
    off = Harness(make_config(**_admission(dcr=False)), store=on.store, clock=on.clock)
    path = reg["registration_client_uri"].removeprefix(on.config.issuer)
    auth = (("authorization", f"Bearer {reg['registration_access_token']}"),)
    before = off.store.dump()
    for method, token in [("GET", auth), ("PUT", auth), ("DELETE", auth), ("GET", ())]:
        body = json.dumps({**reg, "client_name": "changed"}).encode() if method == "PUT" else b""
        resp = off.request(method, path, headers=JSON + token, body=body)
        # One answer for a valid token, a missing one and an unknown client (RFC 7592 §2).
        assert _error(resp) == (404, "not_found", REGISTRATION_OFF), method
    unknown = off.request("GET", "/register/no-such-client", headers=auth)
    assert _error(unknown) == (404, "not_found", REGISTRATION_OFF)
    assert off.store.dump() == before


def test_registration_off_refuses_clients_registered_before_at_authorize_and_token() -> None:
    """The policy in force decides at every lookup: turning registration off stops the clients it
    admitted before, at their next authorization (a page) and refresh (invalid_client, why)."""
    on = Harness()
    reg = on.register()
    code = on.full_code(reg, VERIFIER)
    tokens = json.loads(
        on.token(
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": REDIRECT,
                "code_verifier": VERIFIER,
                "client_id": reg["client_id"],
                "resource": on.config.resource,
            }
        ).body
    )
    off = Harness(make_config(**_admission(dcr=False)), store=on.store, clock=on.clock)
    events = _observed(off)
    _page_refusal(_authorize(off, reg["client_id"]), REGISTRATION_CLOSED)
    refresh = off.token(
        {
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": reg["client_id"],
        }
    )
    status, error, why = _error(refresh)
    assert (status, error) == (401, "invalid_client")
    assert why == f"client not admitted: {CAUSES[REGISTRATION_CLOSED]}"
    assert (refresh.header("www-authenticate") or "").startswith("Basic")
    assert _refusals(events) == [(reg["client_id"], REGISTRATION_CLOSED, "lookup")] * 2
    # A made-up id is unknown, not refused: nothing to audit.
    assert _error(_token_by_id(off, "made-up-id"))[2] == "unknown client"
    assert len(_refusals(events)) == 2
    # With registration on again, the same client works again (nothing was deleted).
    assert json.loads(
        on.token(
            {
                "grant_type": "refresh_token",
                "refresh_token": tokens["refresh_token"],
                "client_id": reg["client_id"],
            }
        ).body
    )["access_token"]


def test_registration_off_keeps_cimd_and_static_clients_working() -> None:
    static = Client(
        client_id="desktop-app",
        token_endpoint_auth_method="none",
        redirect_uris=(REDIRECT,),
        grant_types=("authorization_code", "refresh_token"),
        source="static",
        issued_at=0,
    )
    h, host = cimd_harness(static_clients=(static,), **_admission(dcr=False))
    host.serve(CIMD_URL, document())
    assert _authorize(h, CIMD_URL).status == 302
    assert _authorize(h, "desktop-app").status == 302


# --------------------------------------------------------------------------------------------------
# cimd_allowed_hosts, cimd_denied_hosts, cimd


def _url(host: str) -> str:
    return f"https://{host}/oauth/client.json"


def _serving(host: DocumentHost, *hosts: str) -> None:
    for name in hosts:
        host.serve(_url(name), document(url=_url(name)))


def test_cimd_allowed_hosts_admit_listed_hosts_and_hosts_below_a_wildcard_only() -> None:
    h, docs = cimd_harness(**_admission(cimd_allowed_hosts=["claude.ai", "*.vscode.dev"]))
    admitted = ["claude.ai", "insiders.vscode.dev", "a.b.vscode.dev", "CLAUDE.AI"]
    refused = ["vscode.dev", "evilvscode.dev", "claude.ai.evil.example", "sub.claude.ai"]
    _serving(docs, *admitted, *refused)
    events = _observed(h)
    for name in admitted:
        assert _authorize(h, _url(name)).status == 302, name
    fetched = len(docs.fetches)
    for name in refused:
        _page_refusal(_authorize(h, _url(name)), CIMD_HOST_NOT_ALLOWED)
    # Refused from the URL alone: never contacted, no fetch budget spent.
    assert len(docs.fetches) == fetched
    assert _refusals(events) == [(_url(n), CIMD_HOST_NOT_ALLOWED, "lookup") for n in refused]


def test_cimd_host_not_allowed_is_invalid_client_at_the_token_endpoint() -> None:
    h, docs = cimd_harness(**_admission(cimd_allowed_hosts=["claude.ai"]))
    _serving(docs, "client.example")
    status, error, why = _error(_token_by_id(h, CIMD_URL))
    assert (status, error) == (401, "invalid_client")
    assert why == f"client not admitted: {CAUSES[CIMD_HOST_NOT_ALLOWED]}"
    assert docs.fetches == []


def test_cimd_denied_hosts_win_over_allowed_ones_and_are_never_fetched() -> None:
    policy = _admission(cimd_allowed_hosts=["*.example.com"], cimd_denied_hosts=["bad.example.com"])
    h, docs = cimd_harness(**policy)
    _serving(docs, "good.example.com", "bad.example.com", "x.bad.example.com")
    events = _observed(h)
    assert _authorize(h, _url("good.example.com")).status == 302
    _page_refusal(_authorize(h, _url("bad.example.com")), CIMD_HOST_DENIED)
    _page_refusal(_authorize(h, _url("BAD.example.com")), CIMD_HOST_DENIED)
    # A denied name denies only itself; its subdomains are the allowed list's business.
    assert _authorize(h, _url("x.bad.example.com")).status == 302
    assert [f.url for f in docs.fetches] == [_url("good.example.com"), _url("x.bad.example.com")]
    assert [c for _, c, _ in _refusals(events)] == [CIMD_HOST_DENIED] * 2


def test_cimd_denied_hosts_alone_leave_every_other_host_admitted() -> None:
    h, docs = cimd_harness(**_admission(cimd_denied_hosts=["*.evil.example"]))
    _serving(docs, "client.example", "a.evil.example")
    assert _authorize(h, _url("client.example")).status == 302
    _page_refusal(_authorize(h, _url("a.evil.example")), CIMD_HOST_DENIED)


def test_cimd_off_refuses_a_url_client_id_with_its_reason_and_hides_the_flag() -> None:
    h, docs = cimd_harness(cimd_enabled=False)
    docs.serve(CIMD_URL, document())
    events = _observed(h)
    _page_refusal(_authorize(h, CIMD_URL), CIMD_DISABLED)
    assert _error(_token_by_id(h, CIMD_URL))[2] == f"client not admitted: {CAUSES[CIMD_DISABLED]}"
    assert docs.fetches == []
    assert [c for _, c, _ in _refusals(events)] == [CIMD_DISABLED] * 2
    meta = json.loads(h.request("GET", AS_METADATA).body)
    assert "client_id_metadata_document_supported" not in meta
    assert "registration_endpoint" in meta


# --------------------------------------------------------------------------------------------------
# redirect_hosts

REDIRECT_HOSTS = ["127.0.0.1", "localhost", "app.example.com"]


@pytest.mark.parametrize(
    "uri",
    [
        "https://evil.example/cb",
        "https://app.example.com.evil.example/cb",
        "https://evilapp.example.com/cb",
        "http://[::1]:4000/cb",
        "com.example.app:/callback",
    ],
)
def test_rfc7591_3_2_2_redirect_host_not_listed_is_invalid_client_metadata_nothing_stored(
    uri: str,
) -> None:
    h = Harness(make_config(**_admission(redirect_hosts=REDIRECT_HOSTS)))
    events = _observed(h)
    before = h.store.dump()
    resp = _register(h, redirect_uris=[REDIRECT, uri], application_type="native")
    assert _error(resp) == (400, "invalid_client_metadata", CAUSES[REDIRECT_HOST_NOT_ALLOWED])
    assert resp.header("cache-control") == "no-store"
    # Nothing at all: no client, not even a registration counted.
    assert h.store.dump() == before == []
    assert _refusals(events) == [(None, REDIRECT_HOST_NOT_ALLOWED, "registration")]


@pytest.mark.parametrize(
    "uri",
    [
        "http://127.0.0.1:33418/callback",
        "http://localhost/callback",
        "https://app.example.com/oauth/cb",
        "https://APP.example.com:8443/cb",
        "https://app.example.com./cb",
    ],
)
def test_rfc7591_redirect_hosts_admit_listed_hosts_on_any_port(uri: str) -> None:
    h = Harness(make_config(**_admission(redirect_hosts=REDIRECT_HOSTS)))
    resp = _register(h, redirect_uris=[uri])
    assert resp.status == 201, resp.body


def test_rfc7592_2_2_update_to_a_redirect_host_not_listed_is_refused_and_changes_nothing() -> None:
    h = Harness(make_config(**_admission(redirect_hosts=REDIRECT_HOSTS)))
    reg = h.register()
    path = reg["registration_client_uri"].removeprefix(h.config.issuer)
    auth = (("authorization", f"Bearer {reg['registration_access_token']}"),)
    events = _observed(h)
    before = h.store.dump()
    current = json.loads(h.request("GET", path, headers=auth).body)
    body = json.dumps({**current, "redirect_uris": ["https://elsewhere.example/cb"]}).encode()
    resp = h.request("PUT", path, headers=JSON + auth, body=body)
    assert _error(resp) == (400, "invalid_client_metadata", CAUSES[REDIRECT_HOST_NOT_ALLOWED])
    assert h.store.dump() == before
    assert _refusals(events) == [(reg["client_id"], REDIRECT_HOST_NOT_ALLOWED, "update")]


def test_redirect_hosts_refuse_a_metadata_document_naming_another_host() -> None:
    h, docs = cimd_harness(**_admission(redirect_hosts=["127.0.0.1"]))
    docs.serve(CIMD_URL, document(redirect_uris=[REDIRECT, "https://app.example/cb"]))
    events = _observed(h)
    _page_refusal(_authorize(h, CIMD_URL), REDIRECT_HOST_NOT_ALLOWED)
    assert _refusals(events) == [(CIMD_URL, REDIRECT_HOST_NOT_ALLOWED, "lookup")]
    assert len(docs.fetches) == 1  # the hosts are in the document: it had to be read


def test_redirect_hosts_narrowed_later_refuse_a_registration_made_before() -> None:
    wide = Harness()
    reg = wide.register(redirect_uris=["https://app.example.com/cb"])
    narrow = Harness(
        make_config(**_admission(redirect_hosts=["127.0.0.1"])), store=wide.store, clock=wide.clock
    )
    _page_refusal(
        _authorize(narrow, reg["client_id"], "https://app.example.com/cb"),
        REDIRECT_HOST_NOT_ALLOWED,
    )
    assert _error(_token_by_id(narrow, reg["client_id"]))[:2] == (401, "invalid_client")


def _settings(clients: dict[str, Any]) -> Any:
    return parse_settings(
        {
            "server": {"base_url": "https://mcp.example.com"},
            "upstream": {"provider": "github", "client_id": "c", "client_secret": "s" * 20},
            "store": {"url": "memory://"},
            "clients": clients,
        },
        environ={},
    )


def test_redirect_hosts_make_a_static_client_on_another_host_a_configuration_error() -> None:
    static = {"client_id": "desktop", "redirect_uris": ["https://desktop.example/cb"]}
    with pytest.raises(ConfigError) as refused:
        _settings({"redirect_hosts": ["127.0.0.1"], "static": [static]})
    assert str(refused.value).startswith("[clients].redirect_hosts: the static client 'desktop'")
    settings = _settings({"redirect_hosts": ["desktop.example"], "static": [static]})
    assert settings.proxy.static_client("desktop") is not None


# --------------------------------------------------------------------------------------------------
# The keys in proxy.toml


def test_clients_keys_reach_the_core_policy() -> None:
    settings = _settings(
        {
            "dcr": False,
            "cimd_allowed_hosts": ["claude.ai", "*.VSCode.dev."],
            "cimd_denied_hosts": ["evil.example"],
            "redirect_hosts": ["127.0.0.1", "[::1]", "localhost"],
        }
    )
    policy = settings.proxy.admission
    assert policy.dcr is False
    assert [str(p) for p in policy.cimd_allowed_hosts or ()] == ["claude.ai", "*.vscode.dev"]
    assert [str(p) for p in policy.cimd_denied_hosts] == ["evil.example"]
    assert [str(p) for p in policy.redirect_hosts or ()] == ["127.0.0.1", "::1", "localhost"]
    default = _settings({}).proxy.admission
    assert default == ClientAdmission()
    assert default.dcr and default.cimd_allowed_hosts is None and default.redirect_hosts is None


@pytest.mark.parametrize(
    ("clients", "problem"),
    [
        ({"cimd_allowed_hosts": ["*.dev"]}, "[clients].cimd_allowed_hosts: '*.dev': a wildcard"),
        ({"cimd_allowed_hosts": ["https://claude.ai"]}, "[clients].cimd_allowed_hosts: 'https:"),
        ({"cimd_allowed_hosts": []}, "[clients].cimd_allowed_hosts: an empty list admits no"),
        ({"cimd_denied_hosts": ["bücher.example"]}, "[clients].cimd_denied_hosts: 'bücher"),
        ({"redirect_hosts": ["a*.example.com"]}, "[clients].redirect_hosts: 'a*.example.com'"),
        ({"redirect_hosts": ["127.1"]}, "[clients].redirect_hosts: '127.1' is not"),
        ({"redirect_hosts": []}, "[clients].redirect_hosts: an empty list admits no"),
        ({"dcr": "no"}, "[clients].dcr: must be true or false"),
    ],
)
def test_bad_clients_keys_are_reported_by_key(clients: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as refused:
        _settings(clients)
    assert str(refused.value).startswith(problem), str(refused.value)


# --------------------------------------------------------------------------------------------------
# Audit


def test_every_refusal_cause_has_an_audit_line_without_the_reason_words() -> None:
    for cause in CAUSES:
        for client_id, at in [(None, "registration"), (CIMD_URL, "lookup")]:
            line = audit.record(ClientRefused(client_id=client_id, cause=cause, at=at))
            assert line == {
                "event": "client_refused",
                "state": "refused",
                "cause": cause,
                "at": at,
                "client_id": client_id,
            }


def _first(events: list[DomainEvent], kind: Callable[[DomainEvent], bool]) -> DomainEvent:
    return next(e for e in events if kind(e))


def test_a_refused_authorization_creates_no_transaction() -> None:
    h, docs = cimd_harness(**_admission(cimd_allowed_hosts=["claude.ai"]))
    docs.serve(CIMD_URL, document())
    events = _observed(h)
    browser = Browser()
    resp = h.request(
        "GET",
        h.authorize_url({"client_id": CIMD_URL, "redirect_uris": [REDIRECT]}, VERIFIER),
        browser=browser,
    )
    _page_refusal(resp, CIMD_HOST_NOT_ALLOWED)
    assert not [kind for kind, _k, _v in h.store.dump() if kind == "tx"]
    assert isinstance(_first(events, lambda e: isinstance(e, ClientRefused)), ClientRefused)
    assert not browser.cookies
    with pytest.raises(AssertionError):
        redirect_params(resp)
