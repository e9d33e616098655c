"""A headless MCP OAuth client for end-to-end tests.

It drives the MCP Python SDK's own `OAuthClientProvider` (mcp 2.x, which speaks `httpx2`)
against a protected MCP server, with the interactive parts replaced:

* the *redirect handler* does not open a browser; a `HeadlessBrowser` follows the
  authorization URL over HTTP with an `httpx.AsyncClient` that keeps cookies, submits the
  consent form (hidden `txn` and `csrf`, button `decision=approve`) and any other single form
  it lands on, and follows redirects through the upstream provider until the next hop is the
  client's own `redirect_uri`; that URL is captured, never requested;
* the *callback handler* returns the `code`, `state` and `iss` parsed from the captured URL, or
  raises `BrowserFlowError` with the authorization response's `error`. With
  `follow_refusal_links`, an error page (4xx HTML) holding exactly one link is followed as a user
  would click "Return to the application" (the proxy's page for a user no access rule admits).

Then a streamable-HTTP session is opened, initialized, the tools listed and one called.
`refresh_and_call` marks the stored access token expired and calls again, asserting the SDK
refreshed it (a `grant_type=refresh_token` request) without a new browser authorization.

Every HTTP exchange (the SDK's discovery/registration/token/MCP requests and the browser's
hops) is recorded as a step with secrets redacted from query strings.

This is not the testing kit's flow driver (``oauthproxy_adapters.testing.flow``) on purpose: the
kit's steps are our own idea of a client, while these tests prove that the real SDK client, which
finds every endpoint by discovery and makes its own choices, gets through the proxy.
"""

from __future__ import annotations

import email.message
import http.cookiejar
import ipaddress
import socket
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import anyio
import httpx
import httpx2
from mcp.client.auth import OAuthClientProvider
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import (
    AuthorizationCodeResult,
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthToken,
)
from mcp_types import CallToolResult, TextContent

__all__ = [
    "BrowserFlowError",
    "Exchange",
    "HeadlessBrowser",
    "InMemoryTokenStorage",
    "ToolCallOutcome",
    "free_loopback_port",
    "redact_url",
    "refresh_and_call",
    "run_mcp_session",
]

# Query/form parameters whose values never appear in recorded steps.
_SECRET_PARAMS = frozenset(
    {
        "code",
        "code_verifier",
        "access_token",
        "refresh_token",
        "id_token",
        "token",
        "client_secret",
        "csrf",
        "password",
        "assertion",
        "session",
    }
)
REDACTED = "[redacted]"


class BrowserFlowError(AssertionError):
    """The headless browser could not get from the authorization URL to the redirect URI, or the
    authorization response it captured is an error (``error``, ``error_description``); ``page`` is
    then the HTML of the refusal page whose link led there, if the browser followed one."""

    def __init__(
        self,
        message: str,
        *,
        error: str | None = None,
        error_description: str | None = None,
        page: str | None = None,
    ) -> None:
        super().__init__(message)
        self.error = error
        self.error_description = error_description
        self.page = page


def redact_url(url: str) -> str:
    """`url` with the values of secret-bearing query parameters replaced by `[redacted]`."""
    parts = urlsplit(url)
    if not parts.query:
        return url
    pairs = [
        (k, REDACTED if k.lower() in _SECRET_PARAMS else v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    ]
    query = urlencode(pairs, safe="[]:/")
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def free_loopback_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# --------------------------------------------------------------------------------------
# Token storage
# --------------------------------------------------------------------------------------


class InMemoryTokenStorage:
    """The SDK's `TokenStorage` protocol (mcp.client.auth.oauth2.TokenStorage), in memory.

    Besides the four protocol methods it remembers when the stored access token expires
    (`expires_at`, from `expires_in` at the time it was stored) so that a provider built later
    can be told the token is stale: the SDK itself does not persist expiry, and a provider
    that loads tokens from storage treats them as valid until the server answers 401.
    """

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None
        self.expires_at: float | None = None
        self.token_history: list[OAuthToken] = []

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens
        self.token_history.append(tokens)
        self.expires_at = time.time() + tokens.expires_in if tokens.expires_in is not None else None

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info

    def expire_access_token(self) -> None:
        """Mark the stored access token as already expired."""
        if self.tokens is None:
            raise AssertionError("no tokens stored; run a session first")
        self.expires_at = time.time() - 1


class _StorageExpiryAwareProvider(OAuthClientProvider):
    """`OAuthClientProvider` that also loads the token expiry `InMemoryTokenStorage` kept.

    The SDK's `_initialize` (mcp/client/auth/oauth2.py) loads tokens and client info but leaves
    `context.token_expiry_time` unset, so a stored token is never refreshed proactively. This is
    the one private hook the helper overrides.
    """

    async def _initialize(self) -> None:
        await super()._initialize()
        expires_at = getattr(self.context.storage, "expires_at", None)
        if expires_at is not None:
            self.context.token_expiry_time = expires_at


# --------------------------------------------------------------------------------------
# Step recording
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Exchange:
    """One HTTP request and the status it got, as recorded (URL redacted)."""

    actor: str  # "mcp" (the SDK's httpx2 client) or "browser"
    method: str
    url: str
    status: int | None
    grant_type: str | None = None  # for token-endpoint requests

    def __str__(self) -> str:
        grant = f" [grant_type={self.grant_type}]" if self.grant_type else ""
        status = "" if self.status is None else f" -> {self.status}"
        return f"{self.actor}: {self.method} {self.url}{grant}{status}"


class _Recorder:
    def __init__(self, on_step: Callable[[str], None] | None) -> None:
        self.on_step = on_step
        self.steps: list[str] = []
        self.exchanges: list[Exchange] = []

    def note(self, step: str) -> None:
        self.steps.append(step)
        if self.on_step is not None:
            self.on_step(step)

    def record(self, exchange: Exchange) -> None:
        self.exchanges.append(exchange)
        self.note(str(exchange))

    # httpx2 event hooks (they fire for every request, including those an Auth flow makes)
    async def on_mcp_response(self, response: httpx2.Response) -> None:
        request = response.request
        self.record(
            Exchange(
                actor="mcp",
                method=request.method,
                url=redact_url(str(request.url)),
                status=response.status_code,
                grant_type=_grant_type_of(request),
            )
        )


def _grant_type_of(request: httpx2.Request) -> str | None:
    if request.method != "POST":
        return None
    if "application/x-www-form-urlencoded" not in request.headers.get("content-type", ""):
        return None
    try:
        body = request.content
    except Exception:  # a streaming body: not a token request
        return None
    values = parse_qs(body.decode("utf-8", "replace")).get("grant_type")
    return values[0] if values else None


# --------------------------------------------------------------------------------------
# The headless browser
# --------------------------------------------------------------------------------------


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, parts.hostname or "", parts.port


def _form_submission_headers(page: httpx.Response, method: str, target: str) -> dict[str, str]:
    """Fetch Metadata and `Origin` of a form submitted from `page` to `target`, as browsers send
    them (`Origin` only on a POST)."""
    source, dest = _origin(str(page.url)), _origin(target)
    site = (
        "same-origin" if source == dest else "same-site" if source[:2] == dest[:2] else "cross-site"
    )
    scheme, host, port = source
    origin = f"{scheme}://{host}" + (f":{port}" if port else "")
    if page.headers.get("referrer-policy", "").strip().lower() == "no-referrer":
        origin = "null"  # Fetch standard, "serializing a request origin"
    if method == "GET":
        return {"sec-fetch-site": site}
    return {"sec-fetch-site": site, "origin": origin}


class _LoopbackSecureCookiePolicy(http.cookiejar.DefaultCookiePolicy):
    """Return `Secure` cookies over plain http to loopback hosts, as browsers do for localhost.

    The standard library would otherwise withhold them on http://127.0.0.1, which would break
    a server that (rightly) marks its session/CSRF cookies `Secure`.
    """

    def return_ok_secure(
        self, cookie: http.cookiejar.Cookie, request: urllib.request.Request
    ) -> bool:
        if cookie.secure and _is_loopback(urlsplit(request.get_full_url()).hostname):
            return True
        return bool(super().return_ok_secure(cookie, request))


class _CookieResponse:
    """The `info()` view of an httpx response that `CookieJar.extract_cookies` reads."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response

    def info(self) -> email.message.Message:
        message = email.message.Message()
        for key, value in self._response.headers.multi_items():
            message[key] = value
        return message


@dataclass
class _Form:
    action: str | None
    method: str
    fields: list[tuple[str, str]] = field(default_factory=list)
    submits: list[tuple[str, str]] = field(default_factory=list)  # (name, value)

    def field_names(self) -> set[str]:
        return {name for name, _ in self.fields}


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[_Form] = []
        self._current: _Form | None = None
        self._button: dict[str, str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k.lower(): (v or "") for k, v in attrs}
        if tag == "form":
            self._current = _Form(
                action=a.get("action") or None, method=(a.get("method") or "GET").upper()
            )
            self.forms.append(self._current)
            return
        form = self._current
        if form is None:
            return
        if tag == "input":
            kind = a.get("type", "text").lower()
            name = a.get("name")
            if not name:
                return
            if kind in ("submit", "image"):
                form.submits.append((name, a.get("value", "")))
            elif kind in ("checkbox", "radio"):
                if "checked" in a:
                    form.fields.append((name, a.get("value", "on")))
            elif kind not in ("button", "reset", "file"):
                form.fields.append((name, a.get("value", "")))
        elif tag == "button":
            self._button = a
        elif tag == "textarea" and a.get("name"):
            form.fields.append((a["name"], ""))

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._current = None
        elif tag == "button" and self._button is not None:
            button, self._button = self._button, None
            if self._current is not None and button.get("type", "submit").lower() == "submit":
                name = button.get("name")
                if name:
                    self._current.submits.append((name, button.get("value", "")))


class _LinkParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.hrefs.extend(value for name, value in attrs if name == "href" and value)


class HeadlessBrowser:
    """Follows an authorization URL the way a user agent would, without a user.

    Redirects are followed by hand (so every hop is recorded and the final hop to the
    redirect URI is captured instead of sent); cookies persist for the browser's lifetime.
    On an HTML page with a form: the consent form (hidden `txn` and `csrf`) is submitted with
    its `decision=approve` button; any other page must hold exactly one form, which is
    submitted as-is (e.g. an auto-login page of a fake upstream).
    """

    def __init__(
        self,
        redirect_uri: str,
        recorder: _Recorder,
        *,
        max_hops: int = 30,
        timeout: float = 10.0,
        expected_issuer: str | None = None,
        follow_refusal_links: bool = False,
    ) -> None:
        self.redirect_uri = redirect_uri
        self.follow_refusal_links = follow_refusal_links
        self.refusal_page: str | None = None  # the error page whose one link was followed
        self.recorder = recorder
        self.max_hops = max_hops
        self.timeout = timeout
        self.expected_issuer = expected_issuer
        self.cookies = http.cookiejar.CookieJar(policy=_LoopbackSecureCookiePolicy())
        self.authorizations = 0  # how many times the SDK sent us to the authorization URL
        self.consent_pages = 0  # how many consent forms were approved
        self.callback_url: str | None = None
        self.callback_iss: str | None = None
        self._submitted_from: httpx.Response | None = None  # the page whose form is submitted

    def _is_redirect_target(self, url: str) -> bool:
        got, want = urlsplit(url), urlsplit(self.redirect_uri)
        return (got.scheme, got.hostname, got.port, got.path) == (
            want.scheme,
            want.hostname,
            want.port,
            want.path,
        )

    async def redirect_handler(self, authorization_url: str) -> None:
        """`OAuthClientProvider(redirect_handler=...)`: navigate instead of opening a browser."""
        self.authorizations += 1
        self.callback_url = None
        self.refusal_page = None
        url, method = authorization_url, "GET"
        data: list[tuple[str, str]] | None = None
        async with httpx.AsyncClient(
            follow_redirects=False,
            timeout=self.timeout,
            headers={"user-agent": "oauthproxy-e2e-headless/1", "accept": "text/html,*/*"},
        ) as client:
            for _ in range(self.max_hops):
                if self._is_redirect_target(url):
                    self.callback_url = url
                    self.recorder.note(f"callback: {redact_url(url)} (captured, not requested)")
                    return
                response = await self._send(client, method, url, data)
                self._submitted_from = None
                self.recorder.record(
                    Exchange(
                        actor="browser",
                        method=method,
                        url=redact_url(url),
                        status=response.status_code,
                    )
                )
                if response.is_redirect:
                    location = response.headers.get("location")
                    if not location:
                        raise BrowserFlowError(f"redirect without Location from {redact_url(url)}")
                    next_url = urljoin(str(response.url), location)
                    if response.status_code not in (307, 308):
                        method, data = "GET", None
                    url = next_url
                    continue
                if response.status_code == 200 and "html" in response.headers.get(
                    "content-type", ""
                ):
                    form = self._pick_form(response.text, url)
                    url = (
                        urljoin(str(response.url), form.action)
                        if form.action
                        else str(response.url)
                    )
                    method = form.method
                    data = form.fields
                    self._submitted_from = response  # the next hop submits its form
                    if method == "GET":
                        url = f"{url.split('?', 1)[0]}?{urlencode(data)}"
                        data = None
                    continue
                link = self._refusal_link(response)
                if link is not None:
                    self.refusal_page = response.text
                    self.recorder.note(
                        f"refusal page: following its one link from {redact_url(url)}"
                    )
                    url, method, data = urljoin(str(response.url), link), "GET", None
                    continue
                raise BrowserFlowError(
                    f"stuck at {redact_url(url)}: HTTP {response.status_code} "
                    f"{response.headers.get('content-type', '')}: {response.text[:500]!r}"
                )
        raise BrowserFlowError(f"no redirect to {self.redirect_uri} within {self.max_hops} hops")

    async def _send(
        self, client: httpx.AsyncClient, method: str, url: str, data: list[tuple[str, str]] | None
    ) -> httpx.Response:
        """One hop, with cookies from (and back into) the browser's own jar.

        httpx copies a client's jar into a fresh default-policy jar per request, which would
        drop `_LoopbackSecureCookiePolicy`; so the jar is applied here and httpx's is emptied.
        A form submission carries what a browser adds: `Sec-Fetch-Site` from the page's origin
        and the target's, and `Origin` (`null` under the page's `Referrer-Policy: no-referrer`).
        """
        headers: dict[str, str] = {}
        if self._submitted_from is not None:
            headers.update(_form_submission_headers(self._submitted_from, method, url))
        cookie_request = urllib.request.Request(url, method=method)
        self.cookies.add_cookie_header(cookie_request)
        cookie_header = cookie_request.get_header("Cookie")
        if cookie_header:
            headers["cookie"] = cookie_header
        content = None
        if data is not None:
            content = urlencode(data).encode()
            headers["content-type"] = "application/x-www-form-urlencoded"
        client.cookies.clear()
        response = await client.request(method, url, content=content, headers=headers)
        client.cookies.clear()
        self.cookies.extract_cookies(_CookieResponse(response), cookie_request)  # type: ignore[arg-type]
        return response

    def _refusal_link(self, response: httpx.Response) -> str | None:
        """The one link of a 4xx HTML page, when following such links was asked for."""
        if not (
            self.follow_refusal_links
            and 400 <= response.status_code < 500
            and "html" in response.headers.get("content-type", "")
        ):
            return None
        parser = _LinkParser()
        parser.feed(response.text)
        return parser.hrefs[0] if len(parser.hrefs) == 1 else None

    async def submit_page_form(self, url: str) -> httpx.Response:
        """The user opening ``url`` and pressing the one button of its one form (a sign-out
        page): the form is sent as a browser sends it, with this browser's cookies."""
        async with httpx.AsyncClient(follow_redirects=False, timeout=self.timeout) as client:
            page = await self._send(client, "GET", url, None)
            if page.status_code != 200:
                raise BrowserFlowError(f"{redact_url(url)}: HTTP {page.status_code}")
            form = self._pick_form(page.text, url)
            target = urljoin(str(page.url), form.action) if form.action else str(page.url)
            self._submitted_from = page
            try:
                return await self._send(client, form.method, target, form.fields)
            finally:
                self._submitted_from = None

    def _pick_form(self, html: str, url: str) -> _Form:
        parser = _FormParser()
        parser.feed(html)
        consent = [f for f in parser.forms if {"txn", "csrf"} <= f.field_names()]
        if consent:
            form = consent[0]
            approve = [s for s in form.submits if s == ("decision", "approve")]
            if not approve:
                raise BrowserFlowError(
                    f"consent form at {redact_url(url)} has no decision=approve button: {form.submits}"
                )
            self.consent_pages += 1
            self.recorder.note(f"consent: approving form at {redact_url(url)}")
            form.fields.append(approve[0])
            return form
        if len(parser.forms) == 1:
            form = parser.forms[0]
            if form.submits:
                form.fields.append(form.submits[0])
            self.recorder.note(f"form: submitting the only form at {redact_url(url)}")
            return form
        raise BrowserFlowError(
            f"page at {redact_url(url)} has {len(parser.forms)} forms and no consent form: {html[:500]!r}"
        )

    async def callback_handler(self) -> AuthorizationCodeResult:
        """`OAuthClientProvider(callback_handler=...)`: the code/state/iss of the captured URL."""
        if self.callback_url is None:
            raise BrowserFlowError("callback requested before the browser reached the redirect URI")
        params = dict(parse_qsl(urlsplit(self.callback_url).query, keep_blank_values=True))
        if "error" in params:
            raise BrowserFlowError(
                f"authorization failed: error={params['error']!r} "
                f"description={params.get('error_description')!r}",
                error=params["error"],
                error_description=params.get("error_description"),
                page=self.refusal_page,
            )
        if not params.get("code"):
            raise BrowserFlowError(f"callback without code: {redact_url(self.callback_url)}")
        iss = params.get("iss")
        self.callback_iss = iss
        if iss is not None:
            parsed = urlsplit(iss)
            if (
                parsed.scheme not in ("http", "https")
                or not parsed.netloc
                or parsed.query
                or parsed.fragment
            ):
                raise BrowserFlowError(f"callback iss is not an issuer identifier: {iss!r}")
            if self.expected_issuer is not None and iss != self.expected_issuer:
                raise BrowserFlowError(f"callback iss {iss!r} != expected {self.expected_issuer!r}")
        return AuthorizationCodeResult(code=params["code"], state=params.get("state"), iss=iss)


# --------------------------------------------------------------------------------------
# Sessions
# --------------------------------------------------------------------------------------


@dataclass
class ToolCallOutcome:
    """What one `run_mcp_session` / `refresh_and_call` did and got."""

    server_url: str
    tool: str
    text: str  # the concatenated text content of the tool result
    is_error: bool
    result: CallToolResult
    tool_names: list[str]
    steps: list[str]
    exchanges: list[Exchange]
    tokens: OAuthToken | None
    client_info: OAuthClientInformationFull | None
    storage: InMemoryTokenStorage
    provider: OAuthClientProvider
    browser: HeadlessBrowser
    redirect_uri: str
    authorizations: int  # browser authorizations performed during this call

    def token_requests(self, grant_type: str | None = None) -> list[Exchange]:
        """The SDK's token-endpoint requests, optionally only those of one grant type."""
        return [
            e
            for e in self.exchanges
            if e.actor == "mcp"
            and e.grant_type is not None
            and (grant_type is None or e.grant_type == grant_type)
        ]

    def requests_to(self, path_fragment: str, actor: str | None = None) -> list[Exchange]:
        return [
            e
            for e in self.exchanges
            if path_fragment in e.url and (actor is None or e.actor == actor)
        ]


async def _session_call(
    provider: OAuthClientProvider,
    server_url: str,
    tool: str,
    arguments: dict[str, Any] | None,
    recorder: _Recorder,
    timeout: float,
) -> tuple[CallToolResult, list[str]]:
    with anyio.fail_after(timeout):
        async with (
            httpx2.AsyncClient(
                auth=provider,
                timeout=httpx2.Timeout(timeout),
                event_hooks={"response": [recorder.on_mcp_response]},
            ) as http_client,
            streamable_http_client(server_url, http_client=http_client) as (read, write),
            ClientSession(read, write) as session,
        ):
            init = await session.initialize()
            recorder.note(f"mcp: initialized, protocol {init.protocol_version}")
            listed = await session.list_tools()
            names = [t.name for t in listed.tools]
            recorder.note(f"mcp: tools {names}")
            result = await session.call_tool(tool, arguments or {})
            recorder.note(f"mcp: called {tool}, is_error={result.is_error}")
            return result, names


def _text_of(result: CallToolResult) -> str:
    return "".join(c.text for c in result.content if isinstance(c, TextContent))


async def run_mcp_session(
    server_url: str,
    *,
    tool: str = "whoami",
    arguments: dict[str, Any] | None = None,
    client_metadata_url: str | None = None,
    storage: InMemoryTokenStorage | None = None,
    on_step: Callable[[str], None] | None = None,
    client_name: str = "oauthproxy-e2e",
    token_endpoint_auth_method: str | None = "none",
    scope: str | None = None,
    expected_issuer: str | None = None,
    follow_refusal_links: bool = False,
    timeout: float = 30.0,
) -> ToolCallOutcome:
    """Authorize (headlessly) against the MCP server at `server_url` and call `tool` once.

    `token_endpoint_auth_method` is what the client asks for at registration ("none" for a
    public client, or "client_secret_post"/"client_secret_basic"; None lets the server pick).
    `scope` left None lets the SDK choose (WWW-Authenticate scope, else PRM scopes_supported,
    else AS scopes_supported). `client_metadata_url` (an https URL with a path) makes the SDK
    use it as a CIMD client_id when the AS advertises client_id_metadata_document_supported.
    `follow_refusal_links`: the browser follows the one link of an error page (see the module
    docstring), so that a refused sign-in ends in the client's `BrowserFlowError` with `error`.
    """
    storage = storage if storage is not None else InMemoryTokenStorage()
    recorder = _Recorder(on_step)
    redirect_uri = f"http://127.0.0.1:{free_loopback_port()}/callback"
    browser = HeadlessBrowser(
        redirect_uri,
        recorder,
        expected_issuer=expected_issuer,
        follow_refusal_links=follow_refusal_links,
    )
    metadata = OAuthClientMetadata.model_validate(
        {
            "client_name": client_name,
            "redirect_uris": [redirect_uri],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": token_endpoint_auth_method,
            "scope": scope,
        }
    )
    provider = _StorageExpiryAwareProvider(
        server_url=server_url,
        client_metadata=metadata,
        storage=storage,
        redirect_handler=browser.redirect_handler,
        callback_handler=browser.callback_handler,
        client_metadata_url=client_metadata_url,
    )
    return await _run(
        provider, browser, recorder, storage, server_url, tool, arguments, redirect_uri, timeout
    )


async def _run(
    provider: OAuthClientProvider,
    browser: HeadlessBrowser,
    recorder: _Recorder,
    storage: InMemoryTokenStorage,
    server_url: str,
    tool: str,
    arguments: dict[str, Any] | None,
    redirect_uri: str,
    timeout: float,
) -> ToolCallOutcome:
    before = browser.authorizations
    browser.recorder = recorder
    try:
        result, names = await _session_call(
            provider, server_url, tool, arguments, recorder, timeout
        )
    except BaseException as exc:
        # Make the trail visible in the failure report.
        trail = "\n  ".join(recorder.steps)
        if isinstance(exc, Exception):
            exc.add_note(f"steps so far:\n  {trail}")
        raise
    return ToolCallOutcome(
        server_url=server_url,
        tool=tool,
        text=_text_of(result),
        is_error=result.is_error,
        result=result,
        tool_names=names,
        steps=recorder.steps,
        exchanges=recorder.exchanges,
        tokens=await storage.get_tokens(),
        client_info=await storage.get_client_info(),
        storage=storage,
        provider=provider,
        browser=browser,
        redirect_uri=redirect_uri,
        authorizations=browser.authorizations - before,
    )


async def refresh_and_call(
    previous: ToolCallOutcome,
    *,
    tool: str | None = None,
    arguments: dict[str, Any] | None = None,
    on_step: Callable[[str], None] | None = None,
    reuse_provider: bool = True,
    timeout: float = 30.0,
) -> ToolCallOutcome:
    """Expire the access token `previous` obtained, call a tool again, and assert a refresh.

    With `reuse_provider` (the default) the same `OAuthClientProvider` is used - the
    "long-running client" case: it still holds the discovered AS metadata, so the refresh goes
    to the advertised token endpoint. With `reuse_provider=False` a new provider is built over
    the same storage - the "restarted client" case: the SDK does not persist AS metadata, so it
    sends the refresh to `<origin of server_url>/token` (see MCP_SDK_NOTES.md).

    Asserts that exactly one `grant_type=refresh_token` request was made and answered 200,
    that no browser authorization happened, and that a new access token was stored.
    """
    storage = previous.storage
    old = await storage.get_tokens()
    if old is None or not old.refresh_token:
        raise AssertionError(f"no refresh token to refresh with: {old!r}")
    storage.expire_access_token()
    recorder = _Recorder(on_step)
    browser = previous.browser
    if reuse_provider:
        provider = previous.provider
        provider.context.token_expiry_time = storage.expires_at
    else:
        provider = _StorageExpiryAwareProvider(
            server_url=previous.server_url,
            client_metadata=previous.provider.context.client_metadata,
            storage=storage,
            redirect_handler=browser.redirect_handler,
            callback_handler=browser.callback_handler,
            client_metadata_url=previous.provider.context.client_metadata_url,
        )
    outcome = await _run(
        provider,
        browser,
        recorder,
        storage,
        previous.server_url,
        tool or previous.tool,
        arguments,
        previous.redirect_uri,
        timeout,
    )
    refreshes = outcome.token_requests("refresh_token")
    trail = "\n  ".join(outcome.steps)
    if len(refreshes) != 1 or refreshes[0].status != 200:
        raise AssertionError(
            f"expected one successful refresh request, got {refreshes}:\n  {trail}"
        )
    if outcome.authorizations:
        raise AssertionError(f"refresh fell back to a browser authorization:\n  {trail}")
    if outcome.tokens is None or outcome.tokens.access_token == old.access_token:
        raise AssertionError(f"no new access token after refresh:\n  {trail}")
    return outcome
