"""RFC 6750 §2.1: the one parser of the ``Authorization`` field (``oauthproxy_core.bearer_header``).

``credentials = "Bearer" 1*SP b64token``; the scheme name is case-insensitive (RFC 9110 §11.1); one
field carries one set of credentials (RFC 9110 §11.6.2). The properties compare the parser with the
grammar written out as a regular expression (an oracle independent of the parser's own steps), over
values built to sit near the grammar's edges.
"""

from __future__ import annotations

import re

from hypothesis import example, given
from hypothesis import strategies as st

from oauthproxy_core.bearer_header import (
    ABSENT,
    MALFORMED,
    bearer_credentials,
    is_token68,
    parse_bearer,
    parse_bearer_value,
)

B64TOKEN_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/"
#: RFC 6750 §2.1 as a regular expression, with the surrounding optional whitespace that is not part
#: of a field value (RFC 9110 §5.5).
GRAMMAR = re.compile(r"[ \t]*[Bb][Ee][Aa][Rr][Ee][Rr] +([A-Za-z0-9\-._~+/]+=*)[ \t]*")

b64tokens = st.builds(
    lambda body, pad: body + "=" * pad,
    st.text(alphabet=B64TOKEN_CHARS, min_size=1, max_size=60),
    st.integers(min_value=0, max_value=3),
)
schemes = st.sampled_from(["Bearer", "bearer", "BEARER", "bEaReR"])
spaces = st.integers(min_value=1, max_value=3).map(lambda n: " " * n)
ows = st.sampled_from(["", " ", "\t", " \t "])
#: Characters that matter to the grammar: the token alphabet, padding, separators of all kinds,
#: characters that fold to ASCII in other casings, and the letters of the scheme.
near_alphabet = st.sampled_from(
    [*"Bearer bEARER", *"aZ09-._~+/=", "\t", ",", ";", '"', "\\", "\x00", "\u212a", "\u0130", "é"]
)
near_values = st.one_of(
    st.text(alphabet=near_alphabet, max_size=30),
    st.builds(lambda s, sp, rest: s + sp + rest, schemes, spaces, st.text(near_alphabet)),
)


@given(scheme=schemes, sep=spaces, token=b64tokens, before=ows, after=ows)
def test_rfc6750_2_1_a_well_formed_bearer_field_gives_its_token(
    scheme: str, sep: str, token: str, before: str, after: str
) -> None:
    credentials = parse_bearer([before + scheme + sep + token + after])
    assert credentials.presented
    assert credentials.token == token
    assert is_token68(token)


@given(value=near_values)
@example(value="Bearer")
@example(value="Bearer ")
@example(value="Bearer\tabc")
@example(value="Bearer abc def")
@example(value="Bearer abc, Bearer def")
@example(value="Bearer ==")
@example(value="Bearer a=b")
@example(value="Basic dXNlcjpwYXNz")
@example(value="Bearertoken")
@example(value="B\u0130arer abc")
def test_rfc6750_2_1_the_parser_agrees_with_the_grammar(value: str) -> None:
    credentials = parse_bearer([value])
    match = GRAMMAR.fullmatch(value)
    if match is not None:
        assert credentials.token == match.group(1)
    elif value.strip(" \t") == "":
        assert credentials == ABSENT and credentials.token is None
    else:
        assert credentials == MALFORMED and credentials.token is None


@given(values=st.lists(st.builds(lambda t: "Bearer " + t, b64tokens), min_size=2, max_size=4))
def test_rfc6750_2_1_more_than_one_authorization_field_is_malformed(values: list[str]) -> None:
    """Even when every field is a valid Bearer credential (or the same one twice): which one would
    count is not for a framework's header map to decide."""
    credentials = parse_bearer(values)
    assert credentials == MALFORMED and credentials.token is None
    headers = [("accept", "*/*"), *(("authorization", v) for v in values)]
    assert bearer_credentials(headers) == MALFORMED


def test_rfc6750_3_1_no_field_or_an_empty_one_is_no_credentials() -> None:
    for credentials in (parse_bearer([]), parse_bearer([""]), parse_bearer_value(None)):
        assert credentials == ABSENT and not credentials.presented and credentials.token is None
    assert bearer_credentials([("accept", "*/*")]) == ABSENT


@given(token=st.text(alphabet=B64TOKEN_CHARS, min_size=16, max_size=60))
def test_the_token_never_appears_in_a_repr(token: str) -> None:
    credentials = parse_bearer_value("Bearer " + token)
    assert credentials.token == token
    assert token not in repr(credentials)
    assert credentials == parse_bearer_value("Bearer x")  # compared without the secret
