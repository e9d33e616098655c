"""HTML rendered by the core: the consent page and the error page.

An error's page is read from its class (``error_response``): the status and code the class declares
and the description the instance carries (errors.py).

The consent page is the proxy's defence against the confused-deputy attack on a proxy with one static
upstream client (MCP Security Best Practices; FastMCP CVE-2026-27124): the user sees which client asks,
where the answer goes and what it may do, before the upstream provider is ever contacted.
spec/security.md 17 lists what it must show and the headers it is served with. Everything interpolated is
HTML-escaped; the page loads no script and no remote resource except a configured logo (CSP
``default-src 'none'``, ``img-src`` naming only the logo's origin). Accessibility: ``lang``, one
``<main>`` landmark labelled by its heading, real buttons inside a labelled form, a visible focus
ring, text colours chosen for a contrast of at least 4.5:1, and a layout that stacks the buttons on
narrow (phone) screens. The operator's look comes from ``consent_theme.ConsentTheme``.
"""

from __future__ import annotations

import functools
import string
from html import escape

from .consent_theme import ConsentTheme
from .errors import OAuthError
from .http import Response

DEFAULT_THEME = ConsentTheme()

_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src {img_src}; "
    "form-action 'self' https: http:; frame-ancestors 'none'; base-uri 'none'"
)


@functools.lru_cache(maxsize=32)
def page_headers(theme: ConsentTheme = DEFAULT_THEME) -> tuple[tuple[str, str], ...]:
    """The headers of every page (spec/security.md 17). ``img-src`` admits the theme's logo and nothing
    else; no script may run (``default-src 'none'`` and no ``script-src``)."""
    return (
        ("Content-Type", "text/html; charset=utf-8"),
        ("Cache-Control", "no-store"),
        ("X-Frame-Options", "DENY"),
        ("Content-Security-Policy", _CSP.format(img_src=theme.img_src())),
        ("Referrer-Policy", "no-referrer"),
        ("X-Content-Type-Options", "nosniff"),
    )


PAGE_HEADERS: tuple[tuple[str, str], ...] = page_headers()


@functools.lru_cache(maxsize=32)
def _style(theme: ConsentTheme) -> str:
    """The stylesheet, from the theme's palette: every colour is a ``#rrggbb`` the core wrote.

    A pure function of the (frozen) theme, built once per theme rather than per page.
    """
    c = theme.palette()
    return (
        f"body{{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:36rem;"
        f"margin:0 auto;padding:1rem 1.25rem 2rem;line-height:1.5;font-size:1.0625rem;"
        f"color:{c['text']};background:{c['background']}}}"
        "header{display:flex;align-items:center;gap:.75rem;padding:.5rem 0 1rem;"
        f"border-bottom:1px solid {c['text']}33;margin-bottom:1rem}}"
        "header img{height:2.5rem;width:auto;max-width:10rem;object-fit:contain}"
        "header .product{font-weight:600}"
        "h1{font-size:1.4rem;line-height:1.3;margin:.5rem 0 1rem}"
        "dt{font-weight:600;margin-top:.75rem}dd{margin:0}ul{margin:.25rem 0;padding-left:1.25rem}"
        ".note{font-size:.95rem}"
        ".warn{color:#111111;background:#fff4d6;border-left:4px solid #8a5a00;padding:.6rem .8rem}"
        "code{word-break:break-all;font-size:.95em}"
        ".actions{display:flex;flex-wrap:wrap;gap:.75rem;margin-top:1.25rem}"
        "button{font:inherit;font-weight:600;min-height:2.75rem;min-width:8rem;"
        "padding:.6rem 1.4rem;border-radius:6px;cursor:pointer}"
        f"button.approve{{background:{c['primary']};color:{c['on_primary']};"
        f"border:2px solid {c['accent']}}}"
        f"button.deny{{background:transparent;color:{c['text']};border:2px solid {c['text']}}}"
        f":focus-visible{{outline:3px solid {c['accent']};outline-offset:3px}}"
        "fieldset.scopes{border:1px solid currentColor;border-radius:.5rem;margin:1rem 0}"
        "fieldset.scopes label{display:block;padding:.25rem 0}"
        f"footer{{margin-top:2rem;padding-top:1rem;border-top:1px solid {c['text']}33;"
        "font-size:.95rem}"
        "@media (max-width:30rem){body{padding:.75rem 1rem 1.5rem}"
        ".actions{flex-direction:column}.actions button{width:100%}}"
    )


def _page(title: str, body: str, theme: ConsentTheme = DEFAULT_THEME) -> bytes:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_style(theme)}</style></head>"
        f"<body>{body}</body></html>"
    ).encode()


def _paragraphs(text: str | None) -> str:
    if not text:
        return ""
    blocks = [b.strip() for b in text.replace("\r\n", "\n").split("\n\n")]
    return "".join(f"<p>{escape(b)}</p>" for b in blocks if b)


def consent_page(
    *,
    service_name: str,
    client_name: str | None,
    client_id: str,
    redirect_host: str,
    scopes: tuple[str, ...],
    resource: str,
    upstream_name: str,
    transaction_id: str,
    csrf_token: str,
    action: str,
    extra_headers: tuple[tuple[str, str], ...] = (),
    verified_host: str | None = None,
    localhost_warning: bool = False,
    theme: ConsentTheme = DEFAULT_THEME,
    fixed_scopes: tuple[str, ...] | None = None,
    device_sign_in: bool = False,
    signout_url: str | None = None,
) -> Response:
    """The consent page. ``device_sign_in``: the request comes from a device authorization (RFC
    8628): the page says so first, since the application runs elsewhere, not in this browser.
    ``verified_host``: the host of a CIMD client's metadata document (the
    verified part of its identity); ``localhost_warning``: every redirect URI is on this machine;
    ``theme``: the operator's look (``[consent]``), or a full template (``consent_theme.py``);
    ``fixed_scopes``: the scopes the user cannot decline; every other requested scope gets a ticked
    checkbox in the form (``scope_<position>``) the user may untick (``None``: no choice offered)."""
    name = client_name or client_id
    scope_items = "".join(f"<li><code>{escape(s)}</code></li>" for s in scopes) or "<li>none</li>"
    verified = (
        f"<dt>Published by</dt><dd><code>{escape(verified_host)}</code> "
        '<span class="note">(verified: the application\'s metadata document is served from this '
        "host)</span></dd>"
        if verified_host
        else ""
    )
    warning = (
        '<p class="warn" role="note">This application returns to an address on your own computer '
        "(localhost). Any program running on your computer can present itself under this name. "
        "Approve only if you just started this connection from an application you trust.</p>"
        if localhost_warning
        else ""
    )
    if device_sign_in:
        # RFC 8628 §5.4 (remote phishing): the user must know a device elsewhere gets the access.
        warning = _device_notice(name) + warning
    details = (
        f'<p class="note">The name &ldquo;{escape(name)}&rdquo; was chosen by the application '
        "itself and is not verified.</p>"
        f"{warning}"
        "<dl>"
        f'<dt>Application</dt><dd>{escape(name)} <span class="note">(client id '
        f"<code>{escape(client_id)}</code>)</span></dd>"
        f"{verified}"
        f"<dt>After approval you will be sent to</dt><dd><code>{escape(redirect_host)}</code></dd>"
        f"<dt>Access requested</dt><dd><ul>{scope_items}</ul></dd>"
        f"<dt>For the resource</dt><dd><code>{escape(resource)}</code></dd>"
        "</dl>"
    )
    form = (
        f'<form method="post" action="{escape(action)}" aria-label="Your decision">'
        f'<input type="hidden" name="txn" value="{escape(transaction_id)}">'
        f'<input type="hidden" name="csrf" value="{escape(csrf_token)}">'
        f"{_scope_choice(scopes, fixed_scopes)}"
        '<div class="actions">'
        '<button class="approve" type="submit" name="decision" value="approve">Approve</button>'
        '<button class="deny" type="submit" name="decision" value="deny">Deny</button>'
        "</div></form>"
    )
    # spec/security.md 40: a browser that already holds a sign-in for several servers is told so,
    # with the way to end it (handlers/signout.py).
    signout = (
        f'<p class="note">This browser is already signed in with {escape(upstream_name)} here: '
        f'approving uses that sign-in. Not you, or a shared computer? <a href="'
        f'{escape(signout_url)}">Sign out</a>.</p>'
        if signout_url
        else ""
    )
    product = theme.product_name or service_name
    logo = f'<img src="{escape(theme.logo_url)}" alt="" height="40">' if theme.logo_url else ""
    title = f"Authorize {name}"
    headers = page_headers(theme) + extra_headers
    if theme.template is not None:
        values = {
            "title": escape(title),
            "service_name": escape(service_name),
            "product_name": escape(product),
            "client_name": escape(name),
            "client_id": escape(client_id),
            "redirect_host": escape(redirect_host),
            "scopes": escape(" ".join(scopes)),
            "resource": escape(resource),
            "upstream_name": escape(upstream_name),
            "extra_text": escape(theme.extra_text or ""),
            "style": f"<style>{_style(theme)}</style>",
            "logo": logo,
            "details": details,
            "form": form,
            "signout": signout,
        }
        body = string.Template(theme.template).substitute(values)
        return Response(status=200, headers=headers, body=body.encode())
    footer = _paragraphs(theme.extra_text)
    body = (
        f'<header>{logo}<span class="product">{escape(product)}</span></header>'
        '<main aria-labelledby="consent-title">'
        f'<h1 id="consent-title">Allow {escape(name)} to use {escape(service_name)}?</h1>'
        f"{details}"
        f"<p>If you approve, you will sign in with {escape(upstream_name)}. Only approve if you "
        "started this connection yourself.</p>"
        f"{form}{signout}</main>"
        f"{f'<footer>{footer}</footer>' if footer else ''}"
    )
    return Response(status=200, headers=headers, body=_page(title, body, theme))


def _device_notice(name: str) -> str:
    return (
        '<p class="warn" role="note" id="device-sign-in"><strong>Device sign-in.</strong> '
        f"You are signing in {escape(name)} on another device or program, not in this browser: "
        "it gets the access below. Continue only if you typed a code that your own device is "
        "showing you right now, and never for a code someone sent you.</p>"
    )


def device_entry_page(
    *,
    service_name: str,
    action: str,
    user_code: str,
    message: str | None,
    theme: ConsentTheme = DEFAULT_THEME,
    status: int = 200,
) -> Response:
    """RFC 8628 §3.3: the page where the user types the code their device shows. ``user_code``:
    a well-formed code to fill in (``verification_uri_complete``); the user still submits it."""
    notice = f'<p class="warn" role="alert">{escape(message)}</p>' if message else ""
    body = (
        '<main aria-labelledby="t">'
        f'<h1 id="t">Sign in a device to {escape(service_name)}</h1>{notice}'
        "<p>Type the code shown on your device. Continue only if you started the sign-in "
        "yourself.</p>"
        f'<form method="post" action="{escape(action)}" aria-label="Device code">'
        '<p><label for="user_code">Code</label><br>'
        f'<input id="user_code" name="user_code" value="{escape(user_code)}" '
        'autocomplete="off" autocapitalize="characters" spellcheck="false" maxlength="32" '
        'required></p><div class="actions">'
        '<button class="approve" type="submit">Continue</button></div></form></main>'
    )
    return Response(
        status=status,
        headers=page_headers(theme),
        body=_page("Device sign-in", body, theme),
    )


def device_done_page(*, service_name: str, theme: ConsentTheme = DEFAULT_THEME) -> Response:
    """The end of a device's sign-in in the browser: nothing is sent anywhere from here."""
    body = (
        '<main aria-labelledby="t"><h1 id="t">Your device is signed in</h1>'
        f"<p>You may close this page. Your device continues with {escape(service_name)} on its "
        "own.</p></main>"
    )
    return Response(status=200, headers=page_headers(theme), body=_page("Signed in", body, theme))


def signout_page(
    *, service_name: str, held: bool, done: bool, theme: ConsentTheme = DEFAULT_THEME
) -> Response:
    """The sign-out page of the upstream session (handlers/signout.py): one button while the
    browser holds a session cookie (``held``), what happened once it was pressed (``done``)."""
    name = escape(service_name)
    if done:
        body = (
            '<main aria-labelledby="t"><h1 id="t">You are signed out</h1>'
            f"<p>This browser no longer holds a sign-in for {name}: the next connection from "
            "it asks the provider again.</p>"
            "<p>MCP clients that were already connected keep their access until it ends or is "
            "revoked. On a shared computer, also sign out at the provider itself.</p></main>"
        )
    elif held:
        body = (
            '<main aria-labelledby="t">'
            f'<h1 id="t">Sign out of {name}</h1>'
            f"<p>After you sign in at the provider, this browser can connect your MCP clients to "
            f"every server of {name} without signing in again, for a limited time. Sign out "
            "to end that now, for example on a shared computer.</p>"
            '<form method="post" action="" aria-label="Sign out"><div class="actions">'
            '<button class="deny" type="submit">Sign out</button></div></form></main>'
        )
    else:
        body = (
            '<main aria-labelledby="t"><h1 id="t">Not signed in</h1>'
            f"<p>This browser holds no sign-in for {name}.</p></main>"
        )
    title = "Signed out" if done else "Sign out"
    return Response(status=200, headers=page_headers(theme), body=_page(title, body, theme))


def _scope_choice(scopes: tuple[str, ...], fixed: tuple[str, ...] | None) -> str:
    """The checkboxes of the optional scopes (ticked: granted unless the user unticks them), the
    fixed ones shown ticked and disabled, and the marker that says the form offered the choice."""
    if fixed is None or all(s in fixed for s in scopes):
        return ""
    boxes = []
    for i, scope in enumerate(scopes):
        if scope in fixed:
            boxes.append(
                f'<label><input type="checkbox" checked disabled> <code>{escape(scope)}</code> '
                '<span class="note">(required)</span></label>'
            )
        else:
            boxes.append(
                f'<label><input type="checkbox" name="scope_{i}" value="1" checked> '
                f"<code>{escape(scope)}</code></label>"
            )
    return (
        '<fieldset class="scopes"><legend>Access to grant (untick what you do not want to '
        'give)</legend><input type="hidden" name="scope_choice" value="1">'
        + "".join(boxes)
        + "</fieldset>"
    )


def error_page(status: int, error: str, description: str) -> Response:
    body = (
        f"<main><h1>This request cannot be completed</h1><p><code>{escape(error)}</code></p>"
        f'<p>{escape(description)}</p><p class="note">Nothing was sent to the application. '
        "Return to it and try again.</p></main>"
    )
    return Response(status=status, headers=PAGE_HEADERS, body=_page("Authorization error", body))


def refusal_page(reason: str, *, location: str, service: str) -> Response:
    """spec/security.md 33: signed in, but not admitted. ``reason`` names the classes of rule that
    exist (``AccessPolicy.describe``), never their values; ``location`` is the ``access_denied``
    redirect to the client's registered, validated redirect URI."""
    body = (
        '<main aria-labelledby="t"><h1 id="t">This account is not allowed</h1>'
        f"<p>You signed in, but {escape(service)} admits only {escape(reason)}, and this account "
        "is not one of them.</p>"
        '<p class="note">Nothing was kept about this sign-in. If you think this is a mistake, ask '
        "the people who run this server, or sign in with another account.</p>"
        f'<p><a href="{escape(location, quote=True)}">Return to the application</a></p></main>'
    )
    return Response(status=403, headers=PAGE_HEADERS, body=_page("Account not allowed", body))


def error_response(err: OAuthError) -> Response:
    """The page form of ``err``: its class's status and code, its description, ``Retry-After``
    when it has one and the headers the error carries."""
    page = error_page(err.status, err.error, err.description or "The request was not valid.")
    extra: tuple[tuple[str, str], ...] = ()
    if err.retry_after is not None:
        extra += (("Retry-After", str(err.retry_after)),)
    return Response(status=page.status, headers=page.headers + extra + err.headers, body=page.body)
