"""Scopes: RFC 6749 §3.3 syntax, defaults and the no-widening check used by refresh."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oauthproxy_core.errors import InvalidScopeError
from oauthproxy_core.scopes import format_scope, is_subset, parse_scope, resolve_scopes

_token_chars = "".join(chr(c) for c in range(0x21, 0x7F) if c not in (0x22, 0x5C))
tokens = st.text(alphabet=_token_chars, min_size=1, max_size=20)


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        (None, ()),
        ("", ()),
        ("   ", ()),
        ("read", ("read",)),
        ("read write", ("read", "write")),
        ("read  write ", ("read", "write")),
        ("write read write", ("write", "read")),
        ("mcp:tools offline_access https://x.example/s!#$%&'()*+,-./", None),
    ],
)
def test_rfc6749_3_3_parse(value: str | None, parsed: tuple[str, ...] | None) -> None:
    result = parse_scope(value)
    assert result == (parsed if parsed is not None else tuple(value.split()))  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "value",
    [
        "read\twrite",
        "read\nwrite",
        "read\r\n",
        'read "write"',
        "read\\write",
        "r\u00e9ad",
        "read\x00",
        "read\x7f",
        "read\u00a0write",
        "a" * 129,
        " ".join(f"s{i}" for i in range(65)),
    ],
)
def test_rfc6749_3_3_invalid_scope_rejected(value: str) -> None:
    with pytest.raises(InvalidScopeError):
        parse_scope(value)


def test_bounds_are_inclusive() -> None:
    assert parse_scope("a" * 128) == ("a" * 128,)
    assert len(parse_scope(" ".join(f"s{i}" for i in range(64)))) == 64


@given(st.lists(tokens, max_size=64))
def test_format_then_parse_round_trips_distinct_tokens(scopes: list[str]) -> None:
    distinct = tuple(dict.fromkeys(scopes))
    assert parse_scope(format_scope(distinct)) == distinct
    assert parse_scope(format_scope(scopes)) == distinct


@given(st.text(max_size=50))
def test_parse_scope_total(value: str) -> None:
    try:
        parsed = parse_scope(value)
    except InvalidScopeError:
        assert any(c != " " and c not in _token_chars for c in value)
    else:
        assert all(t and all(c in _token_chars for c in t) for t in parsed)
        assert len(set(parsed)) == len(parsed)


SUPPORTED = ("mcp:read", "mcp:write", "offline_access")


def test_resolve_defaults_when_nothing_requested() -> None:
    assert resolve_scopes((), supported=SUPPORTED, default=("mcp:read",), client_allowed=None) == (
        "mcp:read",
    )
    assert resolve_scopes(
        (), supported=SUPPORTED, default=("mcp:read", "mcp:write"), client_allowed=("mcp:write",)
    ) == ("mcp:write",)
    assert resolve_scopes((), supported=SUPPORTED, default=("mcp:read",), client_allowed=()) == ()


def test_resolve_accepts_supported_and_allowed() -> None:
    requested = ("mcp:write", "mcp:read")
    assert (
        resolve_scopes(requested, supported=SUPPORTED, default=(), client_allowed=None) == requested
    )
    assert (
        resolve_scopes(requested, supported=SUPPORTED, default=(), client_allowed=SUPPORTED)
        == requested
    )


@pytest.mark.parametrize(
    ("requested", "client_allowed"),
    [
        (("admin",), None),
        (("mcp:read", "admin"), None),
        (("mcp:write",), ("mcp:read",)),
        (("mcp:read",), ()),
    ],
)
def test_resolve_rejects_unsupported_or_disallowed(
    requested: tuple[str, ...], client_allowed: tuple[str, ...] | None
) -> None:
    with pytest.raises(InvalidScopeError):
        resolve_scopes(requested, supported=SUPPORTED, default=(), client_allowed=client_allowed)


@given(
    st.lists(st.sampled_from([*SUPPORTED, "admin", "x"]), max_size=5, unique=True),
    st.none() | st.lists(st.sampled_from(SUPPORTED), max_size=3),
)
def test_resolved_scopes_never_exceed_supported_or_allowed(
    requested: list[str], client_allowed: list[str] | None
) -> None:
    try:
        result = resolve_scopes(
            tuple(requested),
            supported=SUPPORTED,
            default=("mcp:read", "offline_access"),
            client_allowed=client_allowed,
        )
    except InvalidScopeError:
        bad = set(requested) - set(SUPPORTED)
        if client_allowed is not None:
            bad |= set(requested) - set(client_allowed)
        assert requested and bad
    else:
        assert is_subset(result, SUPPORTED)
        if client_allowed is not None:
            assert is_subset(result, client_allowed)
        if requested:
            assert result == tuple(requested)


@given(st.lists(tokens, max_size=6), st.lists(tokens, max_size=6))
def test_is_subset(a: list[str], b: list[str]) -> None:
    assert is_subset(a, b) == all(x in b for x in a)
    assert is_subset(a, a + b)
