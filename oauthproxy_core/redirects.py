"""Authorization responses sent to the client's redirect URI (RFC 6749 §4.1.2, RFC 9207 §2).

Only called with a redirect URI that matched the client's registration; the predicate of spec/security.md 3
is applied once more here, immediately before the redirect leaves (defence in depth against a record
damaged at rest). Every response carries exactly one ``iss`` (spec/security.md 4) and the client's ``state``
byte for byte.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from .errors import OAuthError, PageError
from .http import Response
from .pages import error_response
from .redirect_uris import is_acceptable_redirect_uri

_UNRESERVED = re.compile(r"[A-Za-z0-9._~-]*")


def _q(value: str) -> str:
    # Codes, ids and most states are already unreserved characters (RFC 3986 §2.3).
    return value if _UNRESERVED.fullmatch(value) else quote(value, safe="-._~")


def authorization_redirect(
    redirect_uri: str,
    params: list[tuple[str, str]],
    *,
    client_state: str | None,
    issuer: str,
    status: int = 302,
    extra_headers: tuple[tuple[str, str], ...] = (),
) -> Response:
    if not is_acceptable_redirect_uri(redirect_uri):
        # A builder answers whatever it is given: the refusal is the page of its error class.
        return error_response(PageError("The redirect URI is not acceptable."))
    items = list(params)
    if client_state is not None:
        items.append(("state", client_state))
    items.append(("iss", issuer))
    query = "&".join(f"{_q(k)}={_q(v)}" for k, v in items)
    sep = "&" if "?" in redirect_uri else "?"
    headers = (
        ("Location", redirect_uri + sep + query),
        ("Cache-Control", "no-store"),
        ("Referrer-Policy", "no-referrer"),
    )
    return Response(status=status, headers=headers + extra_headers)


def error_redirect(
    redirect_uri: str,
    error: OAuthError,
    *,
    client_state: str | None,
    issuer: str,
    status: int = 302,
    extra_headers: tuple[tuple[str, str], ...] = (),
) -> Response:
    if not error.redirectable:
        # An error the class says may not reach the client's redirect URI is shown to the user.
        return error_response(error)
    params = [("error", error.error)]
    if error.description:
        params.append(("error_description", error.description))
    return authorization_redirect(
        redirect_uri,
        params,
        client_state=client_state,
        issuer=issuer,
        status=status,
        extra_headers=extra_headers + error.headers,
    )
