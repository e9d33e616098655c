"""Memberships the ``[access]`` rules ask a provider's API for: pure request builders and parsers.

- GitHub (REST, "List organizations for the authenticated user" ``GET /user/orgs`` and "List teams
  for the authenticated user" ``GET /user/teams``; both need the ``read:org`` scope for private
  memberships, which the proxy requests only when ``github_orgs`` rules exist). Pages of 100 follow
  the ``Link: <...>; rel="next"`` header (RFC 8288 §3), at most ``MAX_PAGES`` of them, and only to the
  same origin as the first page: the user's token is never sent anywhere else.
- Microsoft Entra: when a user is in more groups than fit in a token, the ID token carries no
  ``groups`` claim but ``_claim_names.groups`` (or ``hasgroups``), the "group overage" indicator of
  the "ID token claims reference". The groups are then read from Microsoft Graph,
  ``POST /v1.0/me/getMemberObjects`` with ``{"securityEnabledOnly": false}``, using the upstream
  access token (which must be a Graph token, e.g. with ``User.Read``; a token for a custom API is
  refused by Graph and the user then has no groups).

A membership list is access data, so an answer the proxy cannot read is never taken as "member":
401 means the upstream token is no longer valid (``UpstreamDeniedError``); 403 and 404 (a missing
scope or permission, an organization's OAuth App restrictions) mean no memberships could be read;
a rate limit, a 5xx or a timeout is transient (``UpstreamUnavailableError``): the sign-in or the
re-validation is retried later, nobody is admitted or revoked on it.
"""

from __future__ import annotations

import json
import re
from urllib.parse import urlsplit

from .access import MAX_GROUPS_READ, groups_from
from .effects import HttpFailure, HttpRequest, HttpResponse
from .untrusted_json import UntrustedJsonError, parse_json
from .upstream import (
    MAX_RESPONSE_BYTES,
    MAX_TOKEN_LENGTH,
    UpstreamDeniedError,
    UpstreamProfile,
    UpstreamProtocolError,
    UpstreamUnavailableError,
)

__all__ = [
    "MAX_PAGES",
    "build_github_page_request",
    "build_group_overage_request",
    "first_github_page",
    "has_group_overage",
    "parse_github_orgs",
    "parse_github_teams",
    "parse_group_overage",
]

#: Pages of 100 read per membership list (1000 organizations or teams).
MAX_PAGES = 10
_PER_PAGE = 100
_NEXT_RE = re.compile(r'<([^<>\s]+)>\s*;\s*(?:[^,]*;\s*)?rel="?next"?', re.IGNORECASE)
_VSCHAR_RE = re.compile(r"[\x20-\x7e]+")


def first_github_page(url: str) -> str:
    return f"{url}?per_page={_PER_PAGE}"


def _bearer(
    profile: UpstreamProfile, method: str, url: str, token: str, body: bytes = b""
) -> HttpRequest:
    if not _VSCHAR_RE.fullmatch(token) or len(token) > MAX_TOKEN_LENGTH:
        raise UpstreamProtocolError("the upstream access token is not a bearer token")
    headers: tuple[tuple[str, str], ...] = (
        ("Authorization", f"Bearer {token}"),
        ("Accept", "application/json"),
    )
    if body:
        headers = (*headers, ("Content-Type", "application/json"))
    return HttpRequest(
        method=method,
        url=url,
        headers=headers,
        body=body,
        timeout=profile.timeout,
        max_response_bytes=MAX_RESPONSE_BYTES,
    )


def build_github_page_request(
    profile: UpstreamProfile, url: str, *, access_token: str
) -> HttpRequest:
    """``GET`` one page of ``/user/orgs`` or ``/user/teams`` with the user's token."""
    return _bearer(profile, "GET", url, access_token)


def _checked(result: HttpResponse | HttpFailure, what: str) -> HttpResponse | None:
    """The response, ``None`` for "could not read any" (403, 404), or a raised upstream error."""
    if isinstance(result, HttpFailure):
        raise UpstreamUnavailableError(f"upstream {what} unreachable")
    if result.status == 429 or result.status >= 500:
        raise UpstreamUnavailableError(f"upstream {what} temporarily unavailable")
    if result.status == 401:
        raise UpstreamDeniedError(f"upstream rejected the access token at its {what}")
    if result.status == 403:
        remaining = (result.header("x-ratelimit-remaining") or "").strip()
        if remaining == "0" or result.header("retry-after") is not None:
            raise UpstreamUnavailableError(f"upstream {what} is rate limited")
        return None
    if result.status == 404:
        return None
    if not 200 <= result.status < 300 or len(result.body) > MAX_RESPONSE_BYTES:
        raise UpstreamProtocolError(f"upstream {what} answered unexpectedly")
    return result


def _array(response: HttpResponse, what: str) -> list[object]:
    try:
        value = parse_json(response.body, max_bytes=MAX_RESPONSE_BYTES)
    except UntrustedJsonError:
        raise UpstreamProtocolError(f"upstream {what} answer is not JSON") from None
    if not isinstance(value, list):
        raise UpstreamProtocolError(f"upstream {what} answer is not a list")
    return value


def _next_page(response: HttpResponse, current: str) -> str | None:
    link = response.header("link")
    if not link:
        return None
    match = _NEXT_RE.search(link)
    if match is None:
        return None
    url = match.group(1)
    here, there = urlsplit(current), urlsplit(url)
    if (there.scheme, there.netloc) != (here.scheme, here.netloc):
        return None  # never send the user's token to another origin
    return url


def parse_github_orgs(
    result: HttpResponse | HttpFailure, url: str
) -> tuple[tuple[str, ...], str | None]:
    """Organization logins on this page, and the next page's URL."""
    response = _checked(result, "organization list")
    if response is None:
        return (), None
    logins = tuple(
        entry["login"]
        for entry in _array(response, "organization list")[:MAX_GROUPS_READ]
        if isinstance(entry, dict) and isinstance(entry.get("login"), str)
    )
    return logins, _next_page(response, url)


def parse_github_teams(
    result: HttpResponse | HttpFailure, url: str
) -> tuple[tuple[str, ...], str | None]:
    """Teams on this page as ``org/team-slug``, and the next page's URL."""
    response = _checked(result, "team list")
    if response is None:
        return (), None
    teams: list[str] = []
    for entry in _array(response, "team list")[:MAX_GROUPS_READ]:
        if not isinstance(entry, dict):
            continue
        slug, org = entry.get("slug"), entry.get("organization")
        login = org.get("login") if isinstance(org, dict) else None
        if isinstance(slug, str) and isinstance(login, str):
            teams.append(f"{login}/{slug}")
    return tuple(teams), _next_page(response, url)


def has_group_overage(id_claims: dict[str, object]) -> bool:
    """Whether an Entra ID token says the groups did not fit (``_claim_names.groups``)."""
    names = id_claims.get("_claim_names")
    return (isinstance(names, dict) and "groups" in names) or id_claims.get("hasgroups") is True


def build_group_overage_request(profile: UpstreamProfile, *, access_token: str) -> HttpRequest:
    if profile.group_overage_url is None:
        raise UpstreamProtocolError("no group overage endpoint is configured")
    body = json.dumps({"securityEnabledOnly": False}).encode()
    return _bearer(profile, "POST", profile.group_overage_url, access_token, body)


def parse_group_overage(result: HttpResponse | HttpFailure) -> tuple[str, ...]:
    """Group object ids from ``getMemberObjects`` (``{"value": [...]}``); none if unreadable."""
    response = _checked(result, "group membership endpoint")
    if response is None:
        return ()
    try:
        value = parse_json(response.body, max_bytes=MAX_RESPONSE_BYTES)
    except UntrustedJsonError:
        raise UpstreamProtocolError("upstream group membership answer is not JSON") from None
    if not isinstance(value, dict):
        raise UpstreamProtocolError("upstream group membership answer is not an object")
    return groups_from(value.get("value"))
