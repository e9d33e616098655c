"""Typed OAuth errors: one class per error code, each knowing its HTTP status.

Error codes come from RFC 6749 §4.1.2.1 and §5.2 (as carried into OAuth 2.1 §4.1.2.1 and §3.2.4),
RFC 7591 §3.2.2 (registration), RFC 8707 §2 (``invalid_target``), RFC 6750 §3.1 (bearer challenges)
and RFC 7009 §2.2.1 (``unsupported_token_type``).

Like wsproto's ``RemoteProtocolError.event_hint``, an error carries what the caller must send: its
code, its status, whether it may travel to the client's redirect URI and the ``WWW-Authenticate``
challenge it carries. Whether it *does* travel is decided by the handler, which only redirects once the
client and its redirect URI are validated (spec/security.md 2), and by ``redirects.error_redirect``, which
renders a page for an error that may not be redirected.
Descriptions are ours and never contain secrets or upstream error text.
"""

from __future__ import annotations

from typing import ClassVar


class OAuthError(Exception):
    """Base of every error a handler may raise. Anything else escaping a handler is a bug."""

    error: ClassVar[str] = "server_error"
    status: ClassVar[int] = 400
    #: May be delivered to a validated redirect URI as ``?error=...`` (RFC 6749 §4.1.2.1); when
    #: False, ``redirects.error_redirect`` renders a page instead.
    redirectable: ClassVar[bool] = True
    #: The ``WWW-Authenticate`` value a JSON answer carries, for errors that ask for credentials.
    challenge: ClassVar[str | None] = None

    def __init__(
        self,
        description: str = "",
        *,
        retry_after: int | None = None,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(description or self.error)
        self.description = description
        self.retry_after = retry_after
        #: Further headers for whatever answer renders this error (a cookie the browser may now
        #: forget). Never a secret: they are sent as they are.
        self.headers = headers

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.description!r})"


class InvalidRequestError(OAuthError):
    error = "invalid_request"


class InvalidClientError(OAuthError):
    """RFC 6749 §5.2: client authentication failed. 401 so clients re-register (spec/interop.md)."""

    error = "invalid_client"
    status = 401
    redirectable = False
    # RFC 6749 §5.2: a 401 from the token endpoint carries a challenge for the client's scheme.
    challenge = 'Basic realm="oauthproxy"'


class InvalidGrantError(OAuthError):
    error = "invalid_grant"
    redirectable = False


class UnauthorizedClientError(OAuthError):
    error = "unauthorized_client"


class UnsupportedGrantTypeError(OAuthError):
    error = "unsupported_grant_type"
    redirectable = False


class UnsupportedResponseTypeError(OAuthError):
    error = "unsupported_response_type"


class InvalidScopeError(OAuthError):
    error = "invalid_scope"


class InvalidTargetError(OAuthError):
    """RFC 8707 §2: the requested resource is invalid, unknown or malformed."""

    error = "invalid_target"


class AccessDeniedError(OAuthError):
    error = "access_denied"
    status = 403


class ServerError(OAuthError):
    error = "server_error"
    status = 500


class TemporarilyUnavailableError(OAuthError):
    """Upstream or store outage: a transient condition; nothing was revoked (RFC 6749 §4.1.2.1)."""

    error = "temporarily_unavailable"
    status = 503


class InvalidRedirectUriError(OAuthError):
    """RFC 7591 §3.2.2 at registration; at authorize it is rendered as a page, never redirected."""

    error = "invalid_redirect_uri"
    redirectable = False


class InvalidClientMetadataError(OAuthError):
    error = "invalid_client_metadata"
    redirectable = False


class UnsupportedTokenTypeError(OAuthError):
    error = "unsupported_token_type"
    redirectable = False


class InvalidTokenError(OAuthError):
    """RFC 6750 §3.1: the access token is expired, revoked, malformed or for another audience."""

    error = "invalid_token"
    status = 401
    redirectable = False
    # RFC 6750 §3 (RFC 7592 §2: the registration access token is a bearer token too).
    challenge = 'Bearer error="invalid_token"'


class InsufficientScopeError(OAuthError):
    error = "insufficient_scope"
    status = 403
    redirectable = False


class TooManyRequestsError(OAuthError):
    """A bound on an unauthenticated endpoint was reached (spec/security.md 28)."""

    error = "too_many_requests"
    status = 429
    redirectable = False


class NotFoundError(OAuthError):
    """No endpoint at this path. Rendered as a plain 404."""

    error = "not_found"
    status = 404
    redirectable = False


class MethodNotAllowedError(OAuthError):
    error = "method_not_allowed"
    status = 405
    redirectable = False


class PayloadTooLargeError(OAuthError):
    error = "invalid_request"
    status = 413
    redirectable = False


class PageError(OAuthError):
    """Shown to the user as a page, never sent to a redirect URI: an ``invalid_request`` found
    before the client and its redirect URI are established (spec/security.md 2), or in a browser
    step whose transaction is unknown, already answered or expired, when the flow has no redirect
    left to make."""

    error = "invalid_request"
    status = 400
    redirectable = False


class UnknownClientError(PageError):
    """RFC 6749 §4.1.2.1: the client identifier is invalid (not registered, no longer registered,
    or its metadata document could not be fetched). The user is told; there is nowhere to redirect."""

    error = "invalid_client"


class SignInRefusedError(PageError):
    """The upstream provider's callback cannot continue this sign-in: the transaction was already
    final or changed meanwhile, its deadline passed, or the callback came from another browser
    (spec/security.md 13)."""

    error = "access_denied"


class UntrustedFormError(PageError):
    """A consent POST the proxy's own page did not send: not from its origin, or without the form
    token bound to this browser (spec/security.md 31). Nothing is decided, nothing is redirected."""

    error = "access_denied"
    status = 403


class AuthorizationPendingError(OAuthError):
    """RFC 8628 §3.5: the user has not finished at the verification page yet; poll again."""

    error = "authorization_pending"
    redirectable = False


class SlowDownError(OAuthError):
    """RFC 8628 §3.5: polled faster than the interval; the interval is now 5 seconds longer."""

    error = "slow_down"
    redirectable = False


class ExpiredTokenError(OAuthError):
    """RFC 8628 §3.5: the device code's lifetime has ended; start a new device authorization."""

    error = "expired_token"
    redirectable = False


class DeviceAccessDeniedError(OAuthError):
    """RFC 8628 §3.5 ``access_denied`` at the token endpoint: the user (or the provider, or the
    ``[access]`` rules) refused. A token endpoint error: 400 (RFC 6749 §5.2), never redirected."""

    error = "access_denied"
    redirectable = False


ALL_ERRORS: tuple[type[OAuthError], ...] = (
    InvalidRequestError,
    InvalidClientError,
    InvalidGrantError,
    UnauthorizedClientError,
    UnsupportedGrantTypeError,
    UnsupportedResponseTypeError,
    InvalidScopeError,
    InvalidTargetError,
    AccessDeniedError,
    ServerError,
    TemporarilyUnavailableError,
    InvalidRedirectUriError,
    InvalidClientMetadataError,
    UnsupportedTokenTypeError,
    InvalidTokenError,
    InsufficientScopeError,
    TooManyRequestsError,
    NotFoundError,
    MethodNotAllowedError,
    PayloadTooLargeError,
    PageError,
    UnknownClientError,
    SignInRefusedError,
    UntrustedFormError,
    AuthorizationPendingError,
    SlowDownError,
    ExpiredTokenError,
    DeviceAccessDeniedError,
)
