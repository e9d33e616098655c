"""The front door (``oauthproxy_core.front_door``): one decision table for every HTTP adapter.

Expected doors are written out per request, for an issuer without and with a path, so that a change
of the rule shows here before it shows as a difference between adapters
(tests/adapters/test_adapter_matrix.py runs the same kind of table through the three real servers).
"""

from __future__ import annotations

import pytest

from oauthproxy_core.front_door import Door, FrontDoor, protected_prefixes
from oauthproxy_core.routes import RouteTable
from tests.harness import make_config

AS = Door.AUTHORIZATION_SERVER
PREFLIGHT = Door.PREFLIGHT
VERIFY = Door.VERIFY
VERIFY_WS = Door.VERIFY_WEBSOCKET
APP = Door.APP

#: (method, path, websocket) -> door, for issuer https://proxy.example and mcp_path /mcp.
ROOT_ISSUER = [
    ("GET", "/.well-known/oauth-authorization-server", False, AS),
    ("GET", "/.well-known/openid-configuration", False, AS),
    ("GET", "/.well-known/oauth-protected-resource/mcp", False, AS),
    ("GET", "/.well-known/oauth-protected-resource", False, AS),
    ("OPTIONS", "/token", False, AS),  # the server's own CORS preflight
    ("GET", "/token", False, AS),  # the server's 405
    ("PATCH", "/authorize", False, AS),
    ("GET", "/register/abc", False, AS),
    ("DELETE", "/register/abc/def", False, AS),
    ("GET", "/register/", False, APP),  # the RFC 7592 prefix needs a client id after it
    ("GET", "/auth/callback", False, AS),
    ("OPTIONS", "/mcp", False, PREFLIGHT),
    ("OPTIONS", "/mcp/x/y", False, PREFLIGHT),
    ("GET", "/mcp", False, VERIFY),
    ("POST", "/mcp/", False, VERIFY),
    ("DELETE", "/mcp/session", False, VERIFY),
    ("BREW", "/mcp", False, VERIFY),  # any method but OPTIONS needs the token
    ("GET", "/mcpx", False, APP),  # not below /mcp
    ("GET", "/MCP", False, APP),
    ("OPTIONS", "/elsewhere", False, APP),
    ("GET", "/", False, APP),
    ("GET", "/mcp", True, VERIFY_WS),
    ("GET", "/mcp/stream", True, VERIFY_WS),
    ("GET", "/elsewhere", True, APP),
    ("GET", "/token", True, AS),  # handed on unauthenticated: the server answers no WebSocket
]

#: The same for issuer https://proxy.example/p (routes move below /p; the protected path does not).
PATH_ISSUER = [
    ("GET", "/.well-known/oauth-authorization-server/p", False, AS),
    ("GET", "/p/.well-known/openid-configuration", False, AS),
    ("GET", "/.well-known/oauth-protected-resource/p/mcp", False, AS),
    ("POST", "/p/token", False, AS),
    ("GET", "/p/register/abc", False, AS),
    ("GET", "/p/auth/callback", False, AS),
    ("POST", "/token", False, APP),
    ("GET", "/.well-known/oauth-authorization-server", False, APP),
    ("OPTIONS", "/mcp", False, PREFLIGHT),
    ("GET", "/mcp", False, VERIFY),
    ("GET", "/p/mcp", False, APP),
]


def door_for(issuer: str, protect: tuple[str, ...] | None = None) -> FrontDoor:
    config = make_config(issuer=issuer)
    return FrontDoor(RouteTable(config), protected_prefixes(config, protect))


@pytest.mark.parametrize(("method", "path", "websocket", "door"), ROOT_ISSUER)
def test_front_door_decides_for_an_issuer_without_a_path(
    method: str, path: str, websocket: bool, door: Door
) -> None:
    decision = door_for("https://proxy.example").decide(method, path, websocket=websocket)
    assert decision.door is door
    assert (decision.route is not None) == (door is AS)


@pytest.mark.parametrize(("method", "path", "websocket", "door"), PATH_ISSUER)
def test_front_door_decides_for_an_issuer_with_a_path(
    method: str, path: str, websocket: bool, door: Door
) -> None:
    assert (
        door_for("https://proxy.example/p").decide(method, path, websocket=websocket).door is door
    )


def test_the_route_a_decision_carries_is_the_servers_route() -> None:
    door = door_for("https://proxy.example")
    names = {
        "/.well-known/openid-configuration": "authorization_server_metadata",
        "/register/abc": "client_configuration",
        "/auth/callback": "callback",
        "/token": "token",
    }
    for path, name in names.items():
        route = door.decide("POST", path).route
        assert route is not None and route.name == name
        assert route is door.routes.match(path)


def test_authorization_server_paths_win_over_protection() -> None:
    """``protect=("/",)`` guards everything, but the authorization server's own paths stay
    reachable without a token (a client must be able to get one); WebSockets are guarded first."""
    door = door_for("https://proxy.example", protect=("/",))
    assert door.decide("POST", "/token").door is AS
    assert door.decide("OPTIONS", "/register").door is AS
    assert door.decide("GET", "/anything").door is VERIFY
    assert door.decide("OPTIONS", "/anything").door is PREFLIGHT
    assert door.decide("GET", "/token", websocket=True).door is VERIFY_WS


def test_no_protected_prefix_protects_nothing() -> None:
    """``protect=()`` (``with_authorization_server``: the app checks tokens itself)."""
    door = door_for("https://proxy.example", protect=())
    assert door.decide("GET", "/mcp").door is APP
    assert door.decide("OPTIONS", "/mcp").door is APP
    assert door.decide("GET", "/mcp", websocket=True).door is APP
    assert door.decide("POST", "/token").door is AS
