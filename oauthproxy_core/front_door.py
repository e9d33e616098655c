"""The front door: which part of the stack answers a request, decided once for every HTTP adapter.

The ASGI app, the WSGI middleware, the h11 server and FastMCP's guard all ask ``FrontDoor.decide``
and then do what the decision says; none re-encodes the rule. In order:

1. A path of the route table (routes.py) belongs to the authorization server (``AUTHORIZATION_SERVER``,
   with its ``Route``), whatever the method: the server answers 405 or a preflight itself.
2. A protected path (the MCP path and everything below it, by default): ``OPTIONS`` is the CORS
   preflight (``PREFLIGHT``; browsers send it without credentials, so it is never verified); any other
   method needs a bearer token (``VERIFY``): the verified principal goes on to the embedding app, a
   failed check is answered with the challenge (RFC 6750 §3, RFC 9728 §5.1) and the CORS headers a
   browser's MCP client needs to read it (``refusal``).
3. A WebSocket is checked for protection first: to a protected path it needs the same token
   (``VERIFY_WEBSOCKET``); a failed check, or no app to hand it to, closes the socket with 1008,
   policy violation (RFC 6455 §7.4.1). One to a path of the route table is still marked
   ``AUTHORIZATION_SERVER``, though the server answers none: adapters hand it on unauthenticated.
4. Anything else goes to the embedding app (or the gateway) untouched (``APP``; 404 without one).

The token itself is read from the ``Authorization`` fields by ``bearer_header.parse_bearer``, the one
parser, by each adapter from its own request object.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

import attrs

from .config import ProxyConfig
from .handlers.bearer import Challenge
from .http import Response
from .routes import Route, RouteTable

__all__ = [
    "MCP_CORS",
    "MCP_PREFLIGHT",
    "PREFLIGHT",
    "WEBSOCKET_REFUSED",
    "Decision",
    "Door",
    "FrontDoor",
    "is_protected",
    "protected_prefixes",
    "refusal",
]

#: CORS for the protected MCP endpoint (spec/interop.md: browsers' MCP clients need these).
MCP_CORS: tuple[tuple[str, str], ...] = (
    ("Access-Control-Allow-Origin", "*"),
    ("Access-Control-Expose-Headers", "WWW-Authenticate, Mcp-Session-Id"),
)
MCP_PREFLIGHT: tuple[tuple[str, str], ...] = (
    *MCP_CORS,
    ("Access-Control-Allow-Methods", "GET, POST, DELETE, OPTIONS"),
    (
        "Access-Control-Allow-Headers",
        "Authorization, Content-Type, MCP-Protocol-Version, Mcp-Session-Id, Last-Event-ID",
    ),
    ("Access-Control-Max-Age", "86400"),
)
#: The answer to ``PREFLIGHT``.
PREFLIGHT = Response(status=204, headers=MCP_PREFLIGHT)
#: The WebSocket close code refusing ``VERIFY_WEBSOCKET`` (RFC 6455 §7.4.1, policy violation).
WEBSOCKET_REFUSED = 1008


class Door(enum.Enum):
    AUTHORIZATION_SERVER = "authorization_server"
    PREFLIGHT = "preflight"
    VERIFY = "verify"
    VERIFY_WEBSOCKET = "verify_websocket"
    APP = "app"


@attrs.frozen
class Decision:
    """Where a request goes; ``route`` is set for ``AUTHORIZATION_SERVER``."""

    door: Door
    route: Route | None = None


_PREFLIGHT = Decision(Door.PREFLIGHT)
_VERIFY = Decision(Door.VERIFY)
_VERIFY_WEBSOCKET = Decision(Door.VERIFY_WEBSOCKET)
_APP = Decision(Door.APP)


def protected_prefixes(config: ProxyConfig, protect: Sequence[str] | None) -> tuple[str, ...]:
    """The path prefixes a web adapter guards with bearer tokens (default: the path of every
    protected resource, ``mcp_path`` in the single-resource form)."""
    return tuple(protect if protect is not None else config.resource_paths)


def is_protected(path: str, prefixes: Sequence[str]) -> bool:
    """``path`` equals a prefix or lies below it (``/mcp`` guards ``/mcp`` and ``/mcp/x``)."""
    return path in prefixes or path.startswith(_below(prefixes))


def _below(prefixes: Sequence[str]) -> tuple[str, ...]:
    """What a path below each prefix starts with (``/`` itself for the prefix ``/``)."""
    return tuple(p.rstrip("/") + "/" for p in prefixes)


def refusal(verdict: Challenge) -> Response:
    """The HTTP answer to a failed bearer check on a protected path: the challenge, with CORS."""
    resp = verdict.response()
    return Response(status=resp.status, headers=resp.headers + MCP_CORS, body=resp.body)


class FrontDoor:
    """The decision for one route table and one set of protected prefixes (see the module doc)."""

    __slots__ = ("_below", "_decisions", "_exact", "protect", "routes")

    def __init__(self, routes: RouteTable, protect: Sequence[str]) -> None:
        self.routes = routes
        self.protect = tuple(protect)
        # is_protected(), computed once: it runs on every request.
        self._exact = frozenset(self.protect)
        self._below = _below(self.protect)
        # One decision per route, made once (by identity: a table holds each row once).
        self._decisions = {
            id(route): Decision(Door.AUTHORIZATION_SERVER, route) for _, route in routes.items()
        }

    def is_protected(self, path: str) -> bool:
        return path in self._exact or path.startswith(self._below)

    def decide(self, method: str, path: str, *, websocket: bool = False) -> Decision:
        """Where the request ``method path`` (a WebSocket handshake when ``websocket``) goes."""
        if websocket and self.is_protected(path):
            return _VERIFY_WEBSOCKET
        route = self.routes.match(path)
        if route is not None:
            return self._decisions[id(route)]
        if websocket:
            return _APP
        if self.is_protected(path):
            return _PREFLIGHT if method == "OPTIONS" else _VERIFY
        return _APP
