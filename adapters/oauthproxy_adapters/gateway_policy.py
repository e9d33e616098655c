"""The gateway as a policy point: per-tool rules and the user's upstream token (spec/security.md 38;
MCP 2025-11-25, "Scope Challenge Handling"; RFC 6750 §3.1).

``Gateway(upstream_url, policy=GatewayPolicy(...))`` (``gateway.py``) calls into this module at two
points of a request it forwards; without a policy, or with a policy that has no tool rules and does
not forward the upstream token, nothing here runs and the gateway streams as it always did.

Before forwarding (``prepare``)
    With ``[[gateway.tools]]`` rules, the request body is read whole, at most ``max_message_bytes``
    (``Content-Length`` larger: 413 before reading; more bytes than that: 413), and inspected
    (``jsonrpc_inspection.inspect_request``): not one JSON-RPC message or a batch of them, or
    compressed (``Content-Encoding``): 400 or 415. A ``tools/call`` of a tool the token may not use
    refuses the whole body, which never reaches the MCP server: 403 with ``WWW-Authenticate: Bearer
    resource_metadata="...", scope="...", error="insufficient_scope"`` when more scopes would allow
    it (the client can step up: sign in again asking for them), 403 ``access_denied`` without a
    challenge when a group rule excludes the user. The body read is forwarded as it came.

    With ``forward_upstream_token``, the user's provider token is fetched through the proxy's
    upstream-token API (``AsyncProxy.upstream_token``: refreshed near expiry by compare-and-set, so
    one instance refreshes and the others use its result; an upstream ``invalid_grant`` revokes the
    grant) and sent as ``X-OAuthProxy-Upstream-Token``. A principal that never had a provider token
    (another issuer's token, an enterprise ID-JAG: ``holds_upstream_grant``; a machine client's
    grant: ``NoUpstreamTokenError``) is forwarded without one. When a user's token cannot be had,
    the request is not forwarded without it: the grant is gone (revoked, refused by the provider,
    or its tokens unreadable): 401 ``invalid_token`` with the resource's challenge, so the client
    signs in again; the store or the provider is unreachable: 503 ``temporarily_unavailable`` with
    ``Retry-After``.

After the response has started (``ListingFilter``)
    When the request lists tools (``tools/list``), or carries no body at all (a ``GET`` stream, on
    which a resumed stream may replay an answer to ``tools/list``, or the legacy HTTP+SSE
    transport's channel of responses), the answer is filtered: every tool the caller may not call is
    removed from ``result.tools``. The gateway asks the MCP server for an uncompressed answer
    (``Accept-Encoding: identity``) and refuses a compressed one.

    - ``text/event-stream``: the stream is split into events as it arrives (``sse.EventSplitter``),
      holding at most one unfinished event of at most ``max_message_bytes``; an event that cannot
      hold a listing passes byte for byte, one that does is written again with the forbidden tools
      removed. An event that might hold a listing but is not JSON we can read, or one too large,
      ends the response there (the client sees a stream cut short, never the tools).
    - anything else: the body is read whole (at most ``max_message_bytes``) and filtered; one that
      cannot be read that way is answered 502 ``bad_gateway`` in its place.

The header ``X-OAuthProxy-Upstream-Token`` starts with ``x-oauthproxy``, one of the gateway's
``PROTECTED_HEADER_PREFIXES``: a client can never send it, under any spelling (spec/security.md 30).
The token is never logged and never counted: nothing here writes a log line with a header, and the
metrics see the upstream-token API's store reads and provider calls by kind only.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol

import attrs

from oauthproxy_core import Response
from oauthproxy_core.errors import InvalidGrantError, InvalidTokenError, OAuthError
from oauthproxy_core.front_door import MCP_CORS, refusal
from oauthproxy_core.handlers.bearer import Principal, challenge_for, step_up
from oauthproxy_core.handlers.upstream_token import NoUpstreamTokenError, UpstreamAccess
from oauthproxy_core.http import json_response
from oauthproxy_core.jsonrpc_inspection import (
    DEFAULT_MAX_MESSAGE_BYTES,
    filter_response_body,
    inspect_request,
    might_list_tools,
)
from oauthproxy_core.jsonrpc_inspection import refusal as tool_refusal
from oauthproxy_core.scopes import without_offline_access
from oauthproxy_core.sse import EventSplitter, EventTooLargeError
from oauthproxy_core.tokens import Origin
from oauthproxy_core.tool_policy import ToolPolicy
from oauthproxy_core.untrusted_json import UntrustedJsonError

from .asgi import Receive, Scope, read_body

__all__ = [
    "UPSTREAM_TOKEN_HEADER",
    "GatewayPolicy",
    "ListingFilter",
    "Prepared",
    "holds_upstream_grant",
    "prepare",
]

UPSTREAM_TOKEN_HEADER = "x-oauthproxy-upstream-token"

#: ``AsyncProxy.upstream_token``: the user's provider token for a verified principal.
UpstreamTokenSource = Callable[[Principal], Awaitable[UpstreamAccess]]

# RFC 9110 §5.5 visible characters: a token outside them would not survive as a header value, and
# altering it (as the identity headers are percent-encoded) would make it useless.
_TOKEN_VALUE = re.compile(r"[\x21-\x7e]+")


def _str_tuple(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values)


@attrs.frozen(kw_only=True)
class GatewayPolicy:
    """What the gateway enforces besides the bearer check (see the module docstring)."""

    #: The ``[[gateway.tools]]`` rules; without any, no message is read.
    tools: ToolPolicy = attrs.field(factory=ToolPolicy)
    #: The largest request body, response body or SSE event the gateway reads (with rules only).
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    #: The resource's baseline scopes, asked for in every challenge besides what a tool needs.
    baseline_scopes: tuple[str, ...] = attrs.field(converter=_str_tuple, default=())
    #: Set (``AsyncProxy.upstream_token``) to forward the user's provider token.
    upstream_token: UpstreamTokenSource | None = attrs.field(default=None, eq=False)

    def __attrs_post_init__(self) -> None:
        if self.max_message_bytes < 1024:
            raise ValueError("max_message_bytes must be at least 1024")

    @property
    def active(self) -> bool:
        """Whether the gateway has anything to do besides forwarding."""
        return self.tools.active or self.upstream_token is not None


def holds_upstream_grant(principal: Principal) -> bool:
    """Whether ``principal`` may hold a provider token: it comes from a grant of ours
    (``Origin.GRANT``), not from another issuer's token or an enterprise ID-JAG (spec/security.md
    37). A machine client's grant is such a grant but holds no provider token either: the
    upstream-token API says so with ``NoUpstreamTokenError``, and the request goes on without one.
    """
    return principal.origin is Origin.GRANT and bool(principal.grant_id)


@attrs.frozen(kw_only=True)
class Prepared:
    """How to forward a request the policy let through."""

    #: The body as read (forwarded as it came), or ``None`` when it was not read (streamed as before).
    body: bytes | None = None
    #: Filter the answer's tool listings.
    filter_listing: bool = False
    #: Headers to add (the upstream token), as ASGI pairs.
    add: tuple[tuple[bytes, bytes], ...] = attrs.field(default=(), repr=False)

    def headers(self, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """The forwarded request headers adjusted for this request."""
        drop = set()
        if self.body is not None:
            drop.add(b"content-length")  # set again by the HTTP client from the body
        if self.filter_listing:
            drop.add(b"accept-encoding")
        out = [(k, v) for k, v in headers if k not in drop]
        if self.filter_listing:
            out.append((b"accept-encoding", b"identity"))
        out.extend(self.add)
        return out


def _answer(status: int, error: str, description: str, *extra: tuple[str, str]) -> Response:
    body = {"error": error, "error_description": description}
    return json_response(status, body, extra_headers=(*extra, *MCP_CORS))


_TOO_LARGE = _answer(413, "invalid_request", "the JSON-RPC message is too large")
_COMPRESSED = _answer(415, "invalid_request", "a compressed body cannot be inspected")


def _error(err: OAuthError) -> Response:
    extra = (("Retry-After", str(err.retry_after)),) if err.retry_after else ()
    return _answer(err.status, err.error, err.description or err.error, *extra)


def _declared_length(scope: Scope) -> int | None:
    for k, v in scope.get("headers", ()):
        if k.lower() == b"content-length":
            try:
                return int(v)
            except ValueError:
                return None  # the server in front refuses such a request before it gets here
    return None


def _compressed(scope: Scope) -> bool:
    for k, v in scope.get("headers", ()):
        if k.lower() == b"content-encoding" and v.strip().lower() not in (b"", b"identity"):
            return True
    return False


def _has_body(scope: Scope) -> bool:
    return any(
        (k == b"content-length" and v.strip() not in (b"", b"0")) or k == b"transfer-encoding"
        for k, v in scope.get("headers", ())
    )


async def prepare(
    policy: GatewayPolicy, scope: Scope, receive: Receive, principal: Principal
) -> Prepared | Response:
    """Apply ``policy`` to a request before it is forwarded: how to forward it, or the answer to
    send instead. Raises ``asgi.ClientDisconnected`` when the client leaves mid-body."""
    body: bytes | None = None
    filter_listing = False
    if policy.tools.active:
        if _has_body(scope):
            limit = policy.max_message_bytes
            declared = _declared_length(scope)
            if declared is not None and declared > limit:
                return _TOO_LARGE
            if _compressed(scope):
                return _COMPRESSED
            body = await read_body(receive, limit)
            if body is None:
                return _TOO_LARGE
            try:
                summary = inspect_request(body, max_bytes=limit)
            except OAuthError as err:
                return _error(err)
            refused = tool_refusal(
                summary,
                policy.tools,
                scopes=principal.scopes,
                groups=principal.groups,
                baseline=policy.baseline_scopes,
            )
            if refused is not None:
                if refused.step_up:
                    return refusal(step_up(principal.resource, refused.scopes))
                return _error(refused.error)
            filter_listing = summary.lists_tools
        else:
            filter_listing = True  # a GET stream may carry (or replay) a tools/list answer
    add: tuple[tuple[bytes, bytes], ...] = ()
    if policy.upstream_token is not None and holds_upstream_grant(principal):
        token = await _upstream_token(policy, policy.upstream_token, principal)
        if isinstance(token, Response):
            return token
        if token is not None:
            add = ((UPSTREAM_TOKEN_HEADER.encode("ascii"), token.encode("ascii")),)
    return Prepared(body=body, filter_listing=filter_listing, add=add)


async def _upstream_token(
    policy: GatewayPolicy, source: UpstreamTokenSource, principal: Principal
) -> str | Response | None:
    try:
        access = await source(principal)
    except NoUpstreamTokenError:
        return None  # a machine client's grant: nobody signed in at the provider
    except (InvalidTokenError, InvalidGrantError):
        # The grant cannot give a provider token any more; a new sign-in makes a new one.
        scope = " ".join(without_offline_access(policy.baseline_scopes))
        return refusal(
            challenge_for(principal.resource, status=401, error="invalid_token", scope=scope)
        )
    except OAuthError as err:
        retry = err.retry_after or 5
        return _answer(
            503,
            "temporarily_unavailable",
            "the user's provider token is unavailable; retry",
            ("Retry-After", str(retry)),
        )
    if not _TOKEN_VALUE.fullmatch(access.access_token):
        return _answer(503, "temporarily_unavailable", "the provider's token is unusable")
    return access.access_token


class ListingFilter(Protocol):
    """Filters an answer's tool listings as its bytes arrive (see the module docstring)."""

    #: True when the whole body is held until ``finish`` (the response starts then).
    buffers: bool

    def feed(self, chunk: bytes) -> bytes:
        """The bytes to send on now. Raises ``ListingError``."""
        ...

    def finish(self) -> bytes:
        """The bytes to send at the end. Raises ``ListingError``."""
        ...


class ListingError(Exception):
    """An answer that must be filtered cannot be: too large, or not readable as the client would."""


class SseListing:
    """``text/event-stream``: one event at a time."""

    buffers = False

    def __init__(self, may_call: Callable[[str], bool], max_bytes: int) -> None:
        self.may_call = may_call
        self.max_bytes = max_bytes
        self.splitter = EventSplitter(max_bytes)

    def feed(self, chunk: bytes) -> bytes:
        try:
            events = self.splitter.feed(chunk)
        except EventTooLargeError:
            raise ListingError("an event is too large to filter") from None
        out = []
        for event in events:
            data = event.data
            if data is None or not might_list_tools(data):
                out.append(event.raw)
                continue
            try:
                filtered = filter_response_body(data, self.may_call, max_bytes=self.max_bytes)
            except UntrustedJsonError:
                raise ListingError("an event that may list tools is not readable JSON") from None
            out.append(event.raw if filtered is data else event.with_data(filtered))
        return b"".join(out)

    def finish(self) -> bytes:
        return b""  # an unfinished event is never dispatched by a client: dropped


class JsonListing:
    """Any other body: read whole, filtered at the end."""

    buffers = True

    def __init__(self, may_call: Callable[[str], bool], max_bytes: int) -> None:
        self.may_call = may_call
        self.max_bytes = max_bytes
        self.body = bytearray()

    def feed(self, chunk: bytes) -> bytes:
        self.body += chunk
        if len(self.body) > self.max_bytes:
            raise ListingError("the answer is too large to filter")
        return b""

    def finish(self) -> bytes:
        data = bytes(self.body)
        try:
            return filter_response_body(data, self.may_call, max_bytes=self.max_bytes)
        except UntrustedJsonError:
            raise ListingError("an answer that may list tools is not readable JSON") from None


def listing_filter(
    policy: GatewayPolicy, principal: Principal, content_type: str | None
) -> ListingFilter:
    """The filter for an answer of ``content_type`` to ``principal``."""
    scopes, groups, tools = principal.scopes, principal.groups, policy.tools

    def may_call(tool: str) -> bool:
        return tools.may_call(tool, scopes, groups)

    media = (content_type or "").partition(";")[0].strip().lower()
    if media == "text/event-stream":
        return SseListing(may_call, policy.max_message_bytes)
    return JsonListing(may_call, policy.max_message_bytes)
