"""HTML rendered by the core: the consent page and the error page.

The consent page is the proxy's defence against the confused-deputy attack on a proxy with one static
upstream client (MCP Security Best Practices; FastMCP CVE-2026-27124): the user sees which client asks,
where the answer goes and what it may do, before the upstream provider is ever contacted.
SECURITY.md 17 lists what it must show and the headers it is served with. Everything interpolated is
HTML-escaped; the page loads no script and no remote resource (CSP ``default-src 'none'``).
"""

from __future__ import annotations

from html import escape

from .http import Response

PAGE_HEADERS: tuple[tuple[str, str], ...] = (
    ("Content-Type", "text/html; charset=utf-8"),
    ("Cache-Control", "no-store"),
    ("X-Frame-Options", "DENY"),
    (
        "Content-Security-Policy",
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self' https: http:; "
        "frame-ancestors 'none'; base-uri 'none'",
    ),
    ("Referrer-Policy", "no-referrer"),
    ("X-Content-Type-Options", "nosniff"),
)

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:34rem;margin:2rem auto;padding:0 1rem;"
    "line-height:1.5;color:#1b1b1b;background:#fff}"
    "h1{font-size:1.35rem}dt{font-weight:600;margin-top:.6rem}dd{margin:0 0 0 0}"
    ".note{color:#5a5a5a;font-size:.9rem}.warn{background:#fff4d6;padding:.5rem;border-radius:4px}"
    "button{font-size:1rem;padding:.6rem 1.2rem;margin:.4rem .4rem 0 0;border-radius:6px;"
    "border:1px solid #555;cursor:pointer}button.primary{background:#1f5fbf;color:#fff;border:0}"
    "code{word-break:break-all}"
)


def _page(title: str, body: str) -> bytes:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>{body}</body></html>"
    ).encode()


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
) -> Response:
    """The consent page. ``verified_host``: the host of a CIMD client's metadata document (the
    verified part of its identity); ``localhost_warning``: every redirect URI is on this machine."""
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
        '<p class="warn">This application returns to an address on your own computer '
        "(localhost). Any program running on your computer can present itself under this name. "
        "Approve only if you just started this connection from an application you trust.</p>"
        if localhost_warning
        else ""
    )
    body = (
        f"<main><h1>Allow {escape(name)} to use {escape(service_name)}?</h1>"
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
        f"<p>If you approve, you will sign in with {escape(upstream_name)}. Only approve if you "
        "started this connection yourself.</p>"
        f'<form method="post" action="{escape(action)}">'
        f'<input type="hidden" name="txn" value="{escape(transaction_id)}">'
        f'<input type="hidden" name="csrf" value="{escape(csrf_token)}">'
        '<button class="primary" type="submit" name="decision" value="approve">Approve</button>'
        '<button type="submit" name="decision" value="deny">Deny</button>'
        "</form></main>"
    )
    return Response(
        status=200, headers=PAGE_HEADERS + extra_headers, body=_page(f"Authorize {name}", body)
    )


def error_page(status: int, error: str, description: str) -> Response:
    body = (
        f"<main><h1>This request cannot be completed</h1><p><code>{escape(error)}</code></p>"
        f'<p>{escape(description)}</p><p class="note">Nothing was sent to the application. '
        "Return to it and try again.</p></main>"
    )
    return Response(status=status, headers=PAGE_HEADERS, body=_page("Authorization error", body))
