"""The sign-out page: a browser ends the upstream session the proxy keeps for it.

spec/security.md 40: with several protected resources, one sign-in at the provider serves every
authorization in the same browser for ``[lifetimes] upstream_session`` seconds
(upstream_session.py). On a shared computer the user ends it here, before it ends by itself:

- ``GET`` shows the page: one button while the browser holds a session cookie.
- ``POST`` is accepted only when the browser says it came from the proxy's own origin
  (spec/security.md 31, as every form of ours), so another site cannot sign a visitor out. It
  deletes the session the cookie names and clears the cookie in the same response; the next
  authorization in this browser goes to the provider again.

Grants already made are not touched: an MCP client keeps the access it has until it ends or is
revoked (``/revoke``, ``oauthproxy grants revoke``), as signing out of a website leaves the
applications authorized there alone. The provider's own sign-in is the provider's.
"""

from __future__ import annotations

import attrs

from ..browser_binding import from_own_origin
from ..config import Context
from ..cookies import SESSION, clear_cookie, cookie_name
from ..effects import Handler
from ..errors import UntrustedFormError
from ..http import Request, Response
from ..pages import signout_page
from ..upstream_session import end_browser_session

__all__ = ["signout_get", "signout_post"]


def signout_get(req: Request, ctx: Context) -> Handler[Response]:
    held = req.cookie(cookie_name(SESSION, ctx.config.secure_cookies)) is not None
    return signout_page(
        service_name=ctx.config.service_name,
        held=held,
        done=False,
        theme=ctx.config.consent_theme,
    )
    yield  # pragma: no cover - makes this a generator like every handler


def signout_post(req: Request, ctx: Context) -> Handler[Response]:
    if not from_own_origin(req, ctx.config.issuer_origin):
        raise UntrustedFormError("This form was not sent from this sign-out page.")
    yield from end_browser_session(req, ctx)
    page = signout_page(
        service_name=ctx.config.service_name,
        held=False,
        done=True,
        theme=ctx.config.consent_theme,
    )
    cleared = clear_cookie(SESSION, secure=ctx.config.secure_cookies)
    return attrs.evolve(page, headers=(*page.headers, cleared))
