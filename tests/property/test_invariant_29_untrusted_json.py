"""spec/security.md 29 for the one parser of JSON from outside (``oauthproxy_core.untrusted_json``): any
input gives a value or ``UntrustedJsonError``, never another exception; a value comes back exactly
when it nests no deeper than the bound, whatever its strings contain; and a compact JWS is bounded
before joserfc sees it. The end-to-end side (every endpoint, both adapters) is
tests/hostile/test_untrusted_json.py."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oauthproxy_core.untrusted_json import (
    MAX_DEPTH,
    UntrustedJsonError,
    check_compact_jws,
    parse_jose_segment,
    parse_json,
)

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LIMIT = 1 << 20

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    # Strings full of the characters the depth scan looks at: they must never count.
    | st.text(alphabet=st.sampled_from('[]{}"\\,:ab\u00e9\U0001f600'), max_size=40)
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(alphabet='[{"\\x', max_size=4), children, max_size=3)
    ),
    max_leaves=40,
)


def depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    return 0


def nest(value: Any, levels: int) -> Any:
    for i in range(levels):
        value = [value] if i % 2 else {"k": value}
    return value


@SETTINGS
@given(values, st.integers(min_value=0, max_value=2 * MAX_DEPTH))
def test_invariant_29_a_value_comes_back_exactly_when_it_is_within_the_depth_bound(
    value: Any, extra: int
) -> None:
    wrapped = nest(value, extra)
    text = json.dumps(wrapped, ensure_ascii=False)
    if depth(wrapped) <= MAX_DEPTH:
        assert parse_json(text.encode(), max_bytes=LIMIT) == wrapped
        assert parse_json(text, max_bytes=LIMIT) == wrapped
    else:
        with pytest.raises(UntrustedJsonError):
            parse_json(text.encode(), max_bytes=LIMIT)


@SETTINGS
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_invariant_29_any_bytes_give_a_value_or_the_one_error(data: bytes) -> None:
    try:
        value = parse_json(data, max_bytes=LIMIT)
    except UntrustedJsonError:
        return
    assert value == json.loads(data.decode("utf-8"))


@SETTINGS
@given(
    st.integers(min_value=MAX_DEPTH + 1, max_value=50_000),
    st.sampled_from(["[", "{", '{"a":', "[1,"]),
    st.binary(max_size=20),
    st.booleans(),
)
def test_invariant_29_a_depth_bomb_is_refused_before_the_decoder_recurses(
    levels: int, opener: str, junk: bytes, closed: bool
) -> None:
    closer = {"[": "]", "{": "}", '{"a":': "}", "[1,": "]"}[opener]
    body = opener * levels + ("0" + closer * levels if closed else "")
    with pytest.raises(UntrustedJsonError):
        parse_json(junk + body.encode(), max_bytes=LIMIT)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@SETTINGS
@given(st.integers(min_value=MAX_DEPTH + 1, max_value=3000), st.booleans())
def test_invariant_29_jws_segments_are_bounded_before_a_jose_library_decodes_them(
    levels: int, in_header: bool
) -> None:
    deep = _b64(b"[" * levels + b"]" * levels)
    plain = _b64(b'{"alg":"ES256"}')
    token = f"{deep}.{plain}.c2ln" if in_header else f"{plain}.{deep}.c2ln"
    with pytest.raises(UntrustedJsonError):
        check_compact_jws(token, max_header_bytes=LIMIT, max_payload_bytes=LIMIT)
    with pytest.raises(UntrustedJsonError):
        parse_jose_segment(deep, max_bytes=LIMIT)


@pytest.mark.parametrize(
    "data",
    [
        b'{"a":NaN}',
        b'{"a":-Infinity}',
        b"\xef\xbb\xbf{}",  # a UTF-8 byte order mark
        '{"a":1}'.encode("utf-16"),
        '{"a":1}'.encode("utf-32-le"),
        b'{"a":"\xff"}',
        b"[" * 17 + b"]" * 17,
        b'"unterminated' + b"[" * 40,
    ],
)
def test_invariant_29_only_rfc_8259_utf8_json_is_accepted(data: bytes) -> None:
    with pytest.raises(UntrustedJsonError):
        parse_json(data, max_bytes=LIMIT)


def test_size_bound_is_checked_before_anything_else() -> None:
    with pytest.raises(UntrustedJsonError, match="too large"):
        parse_json(b"[" + b"1," * 100 + b"1]", max_bytes=64)
    with pytest.raises(UntrustedJsonError, match="too large"):
        parse_jose_segment(_b64(b"{}" + b" " * 100), max_bytes=64)
    assert parse_json(b"[1]", max_bytes=3) == [1]
