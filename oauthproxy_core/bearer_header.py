"""Reading a bearer token from a request's ``Authorization`` field (RFC 6750 §2.1).

The one parser for every place that reads a bearer token: the protected resource, the RFC 7592
registration management endpoint, the metrics endpoint, and the framework integrations. RFC 6750 §2.1:

    credentials = "Bearer" 1*SP b64token
    b64token    = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="

- The scheme name is case-insensitive (RFC 9110 §11.1), compared as ASCII only.
- Exactly one token68, after one or more spaces; nothing after it (a second word, a comma-separated
  list of credentials as a WSGI server joins repeated fields, a tab) makes the field malformed.
- Exactly one ``Authorization`` field: it carries one set of credentials (RFC 9110 §11.6.2), so a
  request with two is malformed rather than answered with whichever a framework happens to keep.
- Leading and trailing whitespace is not part of a field value (RFC 9110 §5.5); a field that is empty
  once it is stripped counts as no credentials at all, as a missing one does (RFC 6750 §3.1: no error
  code in the challenge then).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import attrs

__all__ = [
    "ABSENT",
    "MALFORMED",
    "BearerCredentials",
    "bearer_credentials",
    "is_token68",
    "parse_bearer",
    "parse_bearer_value",
]

#: The characters of a b64token before its padding; ``bytes.translate`` deleting them leaves nothing
#: of a valid token (twice as fast as a regular expression on a JWT, and this runs per request).
_B64TOKEN = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/"
_OWS = " \t"


@attrs.frozen(kw_only=True)
class BearerCredentials:
    """What a request's ``Authorization`` fields say about a bearer token.

    ``presented``: the request carried credentials of some kind; ``token``: the bearer token, when
    they were exactly one well-formed Bearer credential (``None`` otherwise).
    """

    presented: bool
    token: str | None = attrs.field(default=None, repr=False, eq=False)


#: No ``Authorization`` field (or an empty one).
ABSENT = BearerCredentials(presented=False)
#: Credentials that are not exactly one well-formed Bearer credential.
MALFORMED = BearerCredentials(presented=True)


def is_token68(value: str) -> bool:
    """Whether ``value`` can be sent as a bearer token (RFC 6750 §2.1 ``b64token``)."""
    body = value.rstrip("=")
    return bool(body) and body.isascii() and not body.encode("ascii").translate(None, _B64TOKEN)


def parse_bearer(values: Sequence[str]) -> BearerCredentials:
    """The bearer credentials of a request whose ``Authorization`` field values are ``values``."""
    if not values:
        return ABSENT
    if len(values) > 1:
        return MALFORMED
    value = values[0].strip(_OWS)
    if not value:
        return ABSENT
    scheme, space, rest = value.partition(" ")
    if not space or not scheme.isascii() or scheme.lower() != "bearer":
        return MALFORMED
    token = rest.lstrip(" ")  # 1*SP
    if not is_token68(token):
        return MALFORMED
    return BearerCredentials(presented=True, token=token)


def parse_bearer_value(authorization: str | None) -> BearerCredentials:
    """``parse_bearer`` for a request with at most one ``Authorization`` field value."""
    return parse_bearer(() if authorization is None else (authorization,))


def bearer_credentials(headers: Iterable[tuple[str, str]]) -> BearerCredentials:
    """``parse_bearer`` over header fields with lower-cased names (``Request.headers``)."""
    return parse_bearer([value for name, value in headers if name == "authorization"])
