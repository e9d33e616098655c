"""Reading MCP's JSON-RPC messages at the gateway, for the ``[[gateway.tools]]`` rules
(spec/security.md 38; JSON-RPC 2.0 §4-§6; MCP 2025-11-25 "Tools", "Transports").

Two jobs, both pure:

- ``inspect_request`` reads a request body (one message or a batch, JSON-RPC 2.0 §6) and names the
  tools it calls (``tools/call``, ``params.name``) and whether it lists tools (``tools/list``);
  ``refusal`` then says whether the rules let the caller make those calls. A refused body never
  reaches the MCP server: the whole body is refused, not the one message, so that a batch cannot
  smuggle a call past the check and the server never answers half of it.
- ``filter_message`` removes from a JSON-RPC response every tool the caller may not call
  (``result.tools``, the answer to ``tools/list``), for plain JSON bodies and for each event of a
  Server-Sent Events stream alike (``sse.py`` splits the stream).

Failing closed against a parser differential. The MCP server parses the same bytes again, with its
own parser; whatever it could read differently from us must be refused, not guessed:

- the body is RFC 8259 JSON in UTF-8 and nothing more (``untrusted_json.py``: no NaN, no BOM, no
  trailing data), at most ``max_bytes`` long and ``MAX_DEPTH`` deep;
- an object naming a member twice is refused (``unique_keys``): one parser keeps the first
  ``"name"``, another the last, and the one we check must be the one that runs;
- a batch is a non-empty array of at most ``MAX_BATCH`` objects; anything else in it is refused;
- a message with a ``method`` that is not a string, or a ``tools/call`` whose ``params`` is not an
  object with a string ``name``, is refused instead of being left to the server's interpretation.

A response is judged the same way: a message whose ``result`` holds ``tools`` is always written out
again by us (compact, ASCII-only JSON) even when nothing was removed, so what the client reads is
exactly what was checked; ``result.tools`` that is not a list becomes an empty list, and an entry
without a string ``name`` is dropped. Every refusal is a typed error with a 4xx status; nothing here
raises anything else (spec/security.md 29).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Sequence
from typing import Any

import attrs

from .errors import (
    AccessDeniedError,
    InsufficientScopeError,
    InvalidRequestError,
    OAuthError,
    PayloadTooLargeError,
)
from .tool_policy import ToolDecision, ToolPolicy, challenge_scopes
from .untrusted_json import UntrustedJsonError, parse_json

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "MAX_BATCH",
    "MAX_DEPTH",
    "RequestSummary",
    "ToolRefusal",
    "filter_message",
    "filter_response_body",
    "inspect_request",
    "might_list_tools",
    "refusal",
]

#: The MCP SDKs' own bound on one message (the Python and TypeScript streamable-HTTP servers refuse
#: bodies past 4 MB): a body they would refuse anyway costs us nothing to refuse first.
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
#: Tool arguments are arbitrary JSON, so deeper than the proxy's own documents (16); 64 stays far
#: below the interpreter's recursion limit.
MAX_DEPTH = 64
#: JSON-RPC batches (MCP 2025-03-26; removed in 2025-06-18) carry a handful of messages in practice.
MAX_BATCH = 100

TOOLS_CALL = "tools/call"
TOOLS_LIST = "tools/list"


@attrs.frozen(kw_only=True)
class RequestSummary:
    """What a request body asks of the MCP server, as far as the tool rules care."""

    #: ``params.name`` of every ``tools/call``, in order.
    tool_calls: tuple[str, ...] = ()
    #: Whether any message is a ``tools/list``: its answer must be filtered.
    lists_tools: bool = False


def _refused(description: str) -> InvalidRequestError:
    return InvalidRequestError(description)


def inspect_request(body: bytes, *, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> RequestSummary:
    """The tool calls and listings of a request body. Raises ``PayloadTooLargeError`` past
    ``max_bytes`` and ``InvalidRequestError`` for anything that is not one JSON-RPC message or a
    batch of them, as strict as the module docstring says."""
    if len(body) > max_bytes:
        raise PayloadTooLargeError("the JSON-RPC message is too large")
    try:
        value = parse_json(body, max_bytes=max_bytes, max_depth=MAX_DEPTH, unique_keys=True)
    except UntrustedJsonError:
        raise _refused("the body is not one JSON-RPC message or batch of them") from None
    calls: list[str] = []
    lists = False
    for message in _messages(value):
        method = _method(message)
        if method == TOOLS_CALL:
            calls.append(_tool_name(message))
        elif method == TOOLS_LIST:
            lists = True
    return RequestSummary(tool_calls=tuple(calls), lists_tools=lists)


def _messages(value: Any) -> list[dict[str, Any]]:
    """JSON-RPC 2.0 §6: one message, or a non-empty array of them (bounded here)."""
    if not isinstance(value, list):
        value = [value]
    elif not value:
        raise _refused("an empty JSON-RPC batch")
    elif len(value) > MAX_BATCH:
        raise _refused("the JSON-RPC batch is too long")
    messages: list[dict[str, Any]] = []
    for message in value:
        if not isinstance(message, dict):
            raise _refused("a JSON-RPC message is not an object")
        messages.append(message)
    return messages


def _method(message: dict[str, Any]) -> str | None:
    """The message's method; ``None`` for a response of the client's (it calls nothing)."""
    if "method" not in message:
        return None
    method = message["method"]
    if not isinstance(method, str):
        raise _refused("a JSON-RPC method is not a string")
    return method


def _tool_name(message: dict[str, Any]) -> str:
    params = message.get("params")
    name = params.get("name") if isinstance(params, dict) else None
    if not isinstance(name, str):
        raise _refused("a tools/call without a tool name")
    return name


@attrs.frozen(kw_only=True)
class ToolRefusal:
    """Why a body is refused: the error to answer with (``InsufficientScopeError``, 403 with a
    step-up challenge for ``scopes``; or ``AccessDeniedError``, 403 without one)."""

    error: OAuthError
    #: The ``scope`` of the challenge (empty for a refusal by group).
    scopes: tuple[str, ...] = ()

    @property
    def step_up(self) -> bool:
        return isinstance(self.error, InsufficientScopeError)


def refusal(
    summary: RequestSummary,
    policy: ToolPolicy,
    *,
    scopes: Collection[str],
    groups: Collection[str],
    baseline: Sequence[str] = (),
) -> ToolRefusal | None:
    """``None`` when every call of ``summary`` is allowed; otherwise the refusal of the whole body.

    A call refused by group makes the refusal an ``access_denied`` (no scope can help, so no
    challenge invites the client to try); otherwise it is ``insufficient_scope`` for ``baseline``
    and every scope the refused calls need (``tool_policy.challenge_scopes``).
    """
    refused: list[ToolDecision] = []
    for tool in dict.fromkeys(summary.tool_calls):
        decision = policy.decide(tool, scopes, groups)
        if not decision.allowed:
            refused.append(decision)
    if not refused:
        return None
    if any(decision.group_refused for decision in refused):
        return ToolRefusal(error=AccessDeniedError("this account may not use a tool it called"))
    wanted = challenge_scopes(baseline, refused)
    return ToolRefusal(
        error=InsufficientScopeError("the access token lacks a scope a called tool needs"),
        scopes=wanted,
    )


def _filter_one(message: Any, may_call: Callable[[str], bool]) -> bool:
    if not isinstance(message, dict):
        return False
    result = message.get("result")
    if not isinstance(result, dict) or "tools" not in result:
        return False
    tools = result["tools"]
    if not isinstance(tools, list):
        result["tools"] = []
        return True
    result["tools"] = [
        tool
        for tool in tools
        if isinstance(tool, dict) and isinstance(tool.get("name"), str) and may_call(tool["name"])
    ]
    return True


def filter_message(value: Any, may_call: Callable[[str], bool]) -> bool:
    """Remove, in place, every tool ``may_call`` refuses from the tool listings in ``value`` (one
    JSON-RPC message or a batch). True when ``value`` held a listing (it must then be re-encoded)."""
    if isinstance(value, list):
        found = False
        for message in value:
            found = _filter_one(message, may_call) or found
        return found
    return _filter_one(value, may_call)


def might_list_tools(data: bytes) -> bool:
    """Whether ``data`` could hold a member named ``tools``: the name written out, or any ``\\u``
    escape (which could spell it). False lets a response pass without being parsed."""
    return b"tools" in data or b"\\u" in data


def encode(value: Any) -> bytes:
    """Compact ASCII JSON: no raw line break, so it fits one ``data:`` line of an SSE event."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def filter_response_body(
    data: bytes, may_call: Callable[[str], bool], *, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
) -> bytes:
    """``data`` (a JSON body or one SSE event's data) with the forbidden tools removed; unchanged
    when it cannot hold a listing. Raises ``UntrustedJsonError`` when it might and is not JSON we
    can read the way the client will (the caller fails closed)."""
    if not might_list_tools(data):
        return data
    value = parse_json(data, max_bytes=max_bytes, max_depth=MAX_DEPTH, unique_keys=True)
    if not filter_message(value, may_call):
        return data
    return encode(value)
