"""spec/security.md 38, the pure parts: the tool rules' decision, the JSON-RPC inspection of request
bodies, the filtering of ``tools/list`` answers and the Server-Sent Events splitter.

- A filtered listing never holds a tool the caller may not call, and keeps every one they may.
- No body that passes the inspection calls a forbidden tool, read by Python's parser (last
  duplicate wins) or by one that keeps the first duplicate: a parser differential is refused, not
  guessed; any other input is refused with a 4xx, never another exception.
- The SSE splitter, fed a stream cut anywhere, returns the bytes it was given and the events a
  whole-stream reading of the standard finds; a filtered stream read by that reference parser holds
  no forbidden tool.
- Globs agree with ``fnmatch.fnmatchcase`` (on globs without brackets, which we refuse).

The same properties through the real gateway (ASGI, with the request body and the answer cut into
random chunks) are ``tests/property/test_invariant_38_gateway_stream.py``.
"""

from __future__ import annotations

import fnmatch
import json
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oauthproxy_core.errors import OAuthError
from oauthproxy_core.jsonrpc_inspection import (
    MAX_BATCH,
    filter_message,
    filter_response_body,
    inspect_request,
    refusal,
)
from oauthproxy_core.sse import EventSplitter, EventTooLargeError
from oauthproxy_core.tool_policy import ToolPolicy, ToolRule, challenge_scopes
from oauthproxy_core.untrusted_json import UntrustedJsonError

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SCOPES = ("mcp", "mcp:admin", "mcp:write", "mcp:secret")
GROUPS = ("platform", "security", "ops")
NAME_CHARS = "ab_x."
names = st.text(alphabet=NAME_CHARS, min_size=1, max_size=6)
globs = st.text(alphabet=NAME_CHARS + "*?", min_size=1, max_size=6)


@st.composite
def rules(draw: st.DrawFn) -> ToolRule:
    scopes = draw(st.lists(st.sampled_from(SCOPES), max_size=2))
    groups = draw(st.lists(st.sampled_from(GROUPS), max_size=2))
    if not scopes and not groups:
        scopes = [draw(st.sampled_from(SCOPES))]
    return ToolRule(name=draw(globs), scopes=scopes, groups=groups)


policies = st.lists(rules(), max_size=5).map(lambda r: ToolPolicy(rules=tuple(r)))
callers = st.tuples(
    st.lists(st.sampled_from(SCOPES), unique=True).map(tuple),
    st.lists(st.sampled_from(GROUPS), unique=True).map(tuple),
)


def oracle(policy: ToolPolicy, tool: str, scopes: tuple[str, ...], groups: tuple[str, ...]) -> bool:
    """The rules as the documentation states them, written independently."""
    for rule in policy.rules:
        if not fnmatch.fnmatchcase(tool, rule.name):
            continue
        if not set(rule.scopes) <= set(scopes):
            return False
        if rule.groups and not set(rule.groups) & set(groups):
            return False
    return True


# -- the decision -------------------------------------------------------------------------------------


@SETTINGS
@given(policies, names, callers)
def test_invariant_38_decision_matches_the_documented_rules(
    policy: ToolPolicy, tool: str, caller: tuple[tuple[str, ...], tuple[str, ...]]
) -> None:
    scopes, groups = caller
    decision = policy.decide(tool, scopes, groups)
    assert decision.allowed == oracle(policy, tool, scopes, groups)
    if not decision.allowed and not decision.group_refused:
        # Asking for the scopes the challenge names is enough.
        wider = tuple({*scopes, *challenge_scopes((), [decision])})
        assert policy.may_call(tool, wider, groups)


@SETTINGS
@given(globs, names)
def test_globs_agree_with_fnmatchcase(glob: str, tool: str) -> None:
    rule = ToolRule(name=glob, scopes=("mcp",))
    assert rule.matches(tool) == fnmatch.fnmatchcase(tool, glob)


def test_glob_is_case_sensitive_and_refuses_brackets() -> None:
    rule = ToolRule(name="admin_*", scopes=("mcp:admin",))
    assert rule.matches("admin_reset") and not rule.matches("Admin_reset")
    assert not rule.matches("xadmin_reset")
    for bad in ("admin_[ab]", "a b", "a\\b", "", "x" * 257, "tool\n"):
        with pytest.raises(ValueError):
            ToolRule(name=bad, scopes=("mcp",))
    with pytest.raises(ValueError, match="scopes, groups or both"):
        ToolRule(name="x")
    with pytest.raises(ValueError, match="offline_access"):
        ToolRule(name="x", scopes=("offline_access",))


def test_every_matching_rule_applies_whatever_the_order() -> None:
    narrow = ToolRule(name="admin_*", scopes=("mcp:admin",))
    broad = ToolRule(name="*", scopes=("mcp",))
    for policy in (ToolPolicy(rules=(narrow, broad)), ToolPolicy(rules=(broad, narrow))):
        assert not policy.may_call("admin_x", ("mcp",), ())
        assert not policy.may_call("admin_x", ("mcp:admin",), ())
        assert policy.may_call("admin_x", ("mcp", "mcp:admin"), ())
        assert policy.may_call("search", ("mcp",), ())
        assert not policy.may_call("search", (), ())


def test_challenge_scopes_never_offline_access() -> None:
    decision = ToolPolicy(rules=(ToolRule(name="a", scopes=("mcp:admin",)),)).decide("a", (), ())
    assert challenge_scopes(("mcp", "offline_access"), [decision]) == ("mcp", "mcp:admin")


# -- filtering listings -------------------------------------------------------------------------------

tool_entries = st.one_of(
    names.map(lambda n: {"name": n, "inputSchema": {"type": "object"}}),
    st.just({"description": "no name"}),
    st.integers().map(lambda i: {"name": i}),
    st.just("not an object"),
)


@SETTINGS
@given(policies, callers, st.lists(tool_entries, max_size=8), st.booleans())
def test_invariant_38_a_filtered_listing_holds_only_callable_tools(
    policy: ToolPolicy,
    caller: tuple[tuple[str, ...], tuple[str, ...]],
    tools: list[Any],
    batch: bool,
) -> None:
    scopes, groups = caller

    def may_call(tool: str) -> bool:
        return policy.may_call(tool, scopes, groups)

    message = {"jsonrpc": "2.0", "id": 1, "result": {"tools": tools, "nextCursor": "c"}}
    value: Any = [message, {"jsonrpc": "2.0", "id": 2, "result": {}}] if batch else message
    encoded = json.dumps(value).encode()
    out = filter_response_body(encoded, may_call)
    for read in (json.loads(out), json.loads(out, object_pairs_hook=first_wins)):
        kept = (read[0] if batch else read)["result"]["tools"]
        assert all(isinstance(t, dict) and may_call(t["name"]) for t in kept)
        assert [t["name"] for t in kept] == [
            t["name"]
            for t in tools
            if isinstance(t, dict) and isinstance(t.get("name"), str) and may_call(t["name"])
        ]
        assert (read[0] if batch else read)["result"]["nextCursor"] == "c"
    assert re.fullmatch(rb"[\x20-\x7e]*", out), "the re-encoded answer fits one SSE data line"


def test_listing_that_is_not_a_list_becomes_empty() -> None:
    value: Any = {"jsonrpc": "2.0", "id": 1, "result": {"tools": {"name": "admin"}}}
    assert filter_message(value, lambda _name: False)
    assert value["result"]["tools"] == []


def test_a_listing_spelled_with_escapes_is_still_filtered() -> None:
    data = b'{"jsonrpc":"2.0","id":1,"result":{"\\u0074ools":[{"name":"admin"}]}}'
    assert b"admin" not in filter_response_body(data, lambda name: name != "admin")
    with pytest.raises(UntrustedJsonError):  # a second "tools" a client might read instead
        filter_response_body(
            b'{"id":1,"result":{"tools":[],"tools":[{"name":"admin"}]}}', lambda _n: False
        )


# -- inspecting requests ------------------------------------------------------------------------------


def first_wins(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        out.setdefault(key, value)
    return out


def calls_seen(body: bytes, hook: Any) -> list[str]:
    """The tools a server reading ``body`` with ``hook`` would call (none if it cannot read it)."""
    try:
        value = json.loads(body, object_pairs_hook=hook)
    except ValueError:
        return []
    messages = value if isinstance(value, list) else [value]
    return [
        m["params"]["name"]
        for m in messages
        if isinstance(m, dict)
        and m.get("method") == "tools/call"
        and isinstance(m.get("params"), dict)
        and isinstance(m["params"].get("name"), str)
    ]


CALL = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":TOOL}}'
DUP_NAME = '{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":TOOL,"name":OTHER}}'
DUP_METHOD = '{"jsonrpc":"2.0","id":6,"method":"ping","method":"tools/call","params":{"name":TOOL}}'
PLAIN = {
    "list": '{"jsonrpc":"2.0","id":2,"method":"tools/list"}',
    "ping": '{"jsonrpc":"2.0","id":3,"method":"ping"}',
    "response": '{"jsonrpc":"2.0","id":4,"result":{}}',
}


@st.composite
def message_texts(draw: st.DrawFn, tools: st.SearchStrategy[str] = names) -> str:
    """One JSON-RPC message as text, sometimes with a smuggled duplicate member."""
    kind = draw(st.sampled_from(["call", "call", "list", "ping", "response", "dup-name", "dup-m"]))
    tool = json.dumps(draw(tools))
    other = json.dumps(draw(tools))
    if kind in PLAIN:
        return PLAIN[kind]
    template = {"call": CALL, "dup-name": DUP_NAME, "dup-m": DUP_METHOD}[kind]
    return template.replace("TOOL", tool).replace("OTHER", other)


@st.composite
def bodies(draw: st.DrawFn, tools: st.SearchStrategy[str] = names) -> bytes:
    """A JSON-RPC body (one message or a batch) calling ``tools``."""
    messages = draw(st.lists(message_texts(tools), min_size=1, max_size=6))
    if len(messages) == 1 and draw(st.booleans()):
        return messages[0].encode()
    space = draw(st.sampled_from(["", " ", "\n", "\t "]))
    return ("[" + ("," + space).join(messages) + "]").encode()


@SETTINGS
@given(policies, callers, bodies())
def test_invariant_38_no_forbidden_call_passes_the_inspection(
    policy: ToolPolicy, caller: tuple[tuple[str, ...], tuple[str, ...]], body: bytes
) -> None:
    scopes, groups = caller
    try:
        summary = inspect_request(body)
    except OAuthError as err:
        assert 400 <= err.status < 500
        return
    if refusal(summary, policy, scopes=scopes, groups=groups) is not None:
        return
    # Accepted: whichever duplicate a server keeps, every tool it would call is allowed.
    for hook in (None, first_wins):
        for tool in calls_seen(body, hook):
            assert policy.may_call(tool, scopes, groups), (tool, body)


@SETTINGS
@given(
    st.binary(max_size=300)
    | st.text(alphabet='[]{}",:\\tools/call name', max_size=200).map(str.encode)
)
def test_invariant_38_any_body_gets_a_summary_or_a_4xx(body: bytes) -> None:
    try:
        inspect_request(body, max_bytes=256)
    except OAuthError as err:
        assert 400 <= err.status < 500


def test_bounds_of_the_inspection() -> None:
    ping = b'{"method":"ping"}'
    assert inspect_request(b"[" + b",".join([ping] * MAX_BATCH) + b"]").tool_calls == ()
    for body, status in (
        (b"[" + b",".join([ping] * (MAX_BATCH + 1)) + b"]", 400),
        (b"[" * 65 + b"]" * 65, 400),
        (b'{"method":"ping","x":"' + b"a" * 5000 + b'"}', 413),
    ):
        with pytest.raises(OAuthError) as caught:
            inspect_request(body, max_bytes=4096)
        assert caught.value.status == status


# -- Server-Sent Events -------------------------------------------------------------------------------

LINE_ENDS = st.sampled_from([b"\n", b"\r", b"\r\n"])
field_lines = st.one_of(
    st.tuples(
        st.just(b"data"), st.binary(max_size=12).filter(lambda b: b"\r" not in b and b"\n" not in b)
    ),
    st.tuples(st.sampled_from([b"id", b"event", b"retry", b"Data", b"data "]), st.just(b"x")),
    st.tuples(st.just(b""), st.just(b"comment")),
)


@st.composite
def streams(draw: st.DrawFn) -> bytes:
    out = [b"\xef\xbb\xbf"] if draw(st.booleans()) else []
    for _ in range(draw(st.integers(0, 4))):
        for name, value in draw(st.lists(field_lines, max_size=4)):
            sep = draw(st.sampled_from([b":", b": ", b""])) if name != b"" else b":"
            out.append(name + sep + value + draw(LINE_ENDS))
        out.append(draw(LINE_ENDS))
    if draw(st.booleans()):
        out.append(b"data: unfinished")
    return b"".join(out)


def reference_events(stream: bytes) -> list[bytes]:
    """The data of every event the standard dispatches, read from the whole stream at once."""
    if stream.startswith(b"\xef\xbb\xbf"):
        stream = stream[3:]
    lines = re.split(rb"\r\n|\r|\n", stream)
    lines = lines[:-1]  # the text after the last line ending is not a complete line
    out: list[bytes] = []
    data: list[bytes] = []
    for line in lines:
        if not line:
            if data:
                out.append(b"\n".join(data))
            data = []
        elif line.startswith(b":"):
            continue
        else:
            name, colon, value = line.partition(b":")
            if colon and value.startswith(b" "):
                value = value[1:]
            if name == b"data":
                data.append(value)
    return out


def split(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(stream)) for c in cuts})
    pieces, last = [], 0
    for p in points:
        pieces.append(stream[last:p])
        last = p
    pieces.append(stream[last:])
    return pieces


@SETTINGS
@given(streams(), st.lists(st.integers(0, 200), max_size=8))
def test_sse_splitter_reads_a_cut_stream_like_the_whole_one(stream: bytes, cuts: list[int]) -> None:
    splitter = EventSplitter(10_000)
    events = [e for piece in split(stream, cuts) for e in splitter.feed(piece)]
    raw = b"".join(e.raw for e in events)
    assert stream.startswith(raw)
    assert splitter.buffered == len(stream) - len(raw)
    assert [e.data for e in events if e.data is not None] == reference_events(stream)


def test_sse_splitter_at_every_byte_boundary() -> None:
    stream = (
        b'\xef\xbb\xbfid: 1\r\ndata: {"a":1}\r\n\r\n: note\rdata: x\rdata: y\r\r\n'
        b"event: e\ndata:z\n\ndata\n\n\r\n\rretry: 5\r\ndata: last\r\n\r\n"
    )
    whole = reference_events(stream)
    for i in range(len(stream) + 1):
        for j in range(i, len(stream) + 1):
            splitter = EventSplitter(1000)
            events = [e for p in (stream[:i], stream[i:j], stream[j:]) for e in splitter.feed(p)]
            raw = b"".join(e.raw for e in events)
            # Cut between the last CR and LF, the LF is held (it may begin the next event's bytes).
            assert raw == stream or (raw + b"\n" == stream and splitter.buffered == 1)
            assert [e.data for e in events if e.data is not None] == whole


def test_sse_splitter_holds_one_bounded_event() -> None:
    splitter = EventSplitter(100)
    assert splitter.feed(b"data: " + b"a" * 50 + b"\n\n")
    splitter.feed(b"data: " + b"b" * 80)
    with pytest.raises(EventTooLargeError):
        splitter.feed(b"b" * 20)
    long_lines = EventSplitter(100)
    with pytest.raises(EventTooLargeError):
        for _ in range(20):
            long_lines.feed(b"data: xxxxxxxx\n")


@SETTINGS
@given(
    policies,
    callers,
    st.lists(names, max_size=6),
    st.lists(st.integers(0, 400), max_size=10),
    LINE_ENDS,
)
def test_invariant_38_a_filtered_stream_holds_no_forbidden_tool(
    policy: ToolPolicy,
    caller: tuple[tuple[str, ...], tuple[str, ...]],
    tools: list[str],
    cuts: list[int],
    end: bytes,
) -> None:
    scopes, groups = caller

    def may_call(tool: str) -> bool:
        return policy.may_call(tool, scopes, groups)

    listing = {"jsonrpc": "2.0", "id": 1, "result": {"tools": [{"name": t} for t in tools]}}
    text = json.dumps(listing, indent=1).encode().replace(b"\n", end + b"data: ")
    stream = b": hi" + end + end + b"id: 7" + end + b"data: " + text + end + end
    splitter = EventSplitter(10_000)
    out = b""
    for piece in split(stream, cuts):
        for event in splitter.feed(piece):
            data = event.data
            filtered = data if data is None else filter_response_body(data, may_call)
            out += event.raw if filtered is data else event.with_data(filtered)
    (data,) = reference_events(out)
    kept = [t["name"] for t in json.loads(data)["result"]["tools"]]
    assert kept == [t for t in tools if may_call(t)]
    assert b"id: 7" in out and out.startswith(b": hi")
