"""How the consent page looks: the operator's theme and template, validated so nothing can inject.

The consent page is a security control (spec/security.md 17): whatever an operator configures must not be
able to hide what it shows, add script, or break out of the page's Content-Security-Policy. So every
value is checked when the configuration is built, and only values of a closed shape are ever written
into the page:

- ``product_name`` and ``extra_text``: plain text (no control characters, bounded length), always
  HTML-escaped where they appear.
- ``primary_color`` and ``background_color``: a CSS colour in ``#rgb``, ``#rrggbb`` or ``rgb(r, g, b)``
  notation, parsed to three numbers and written back as ``#rrggbb``; the text colours are derived from
  them so text keeps a WCAG contrast ratio of at least 4.5:1 (the better of black and white on any
  colour reaches 4.58:1).
- ``logo_url``: an ``https`` URL with a plain host, or a base64 ``data:`` URL of a raster image; the
  page's ``img-src`` then admits exactly that origin (or ``data:``), nothing else.
- ``template``: the text of a complete page with ``$placeholders`` (Python ``string.Template``).
  Placeholders may stand only in text content, never inside a tag, an attribute, a comment or a
  ``<script>``/``<style>`` element, so every value lands in a context where HTML escaping is enough.
  The form (with its CSRF token) and the facts the user must see are required placeholders.

The core reads no file: the adapter that loads the configuration passes the template's text.
"""

from __future__ import annotations

import base64
import binascii
import re
import string
from html.parser import HTMLParser
from urllib.parse import urlsplit

import attrs

from .url_policy import has_fragment, has_userinfo

__all__ = [
    "MAX_EXTRA_TEXT",
    "MAX_LOGO_DATA_URL",
    "MAX_PRODUCT_NAME",
    "MAX_TEMPLATE",
    "TEMPLATE_PLACEHOLDERS",
    "ConsentTheme",
    "contrast_ratio",
    "parse_color",
]

MAX_PRODUCT_NAME = 80
MAX_EXTRA_TEXT = 1000
MAX_LOGO_DATA_URL = 64 * 1024
MAX_TEMPLATE = 64 * 1024

#: Every placeholder a template may use, and what it becomes. Values are HTML-escaped text; the
#: ``*_html`` ones and ``form``/``details``/``logo``/``style`` are elements the core builds itself.
TEMPLATE_PLACEHOLDERS: dict[str, str] = {
    "title": "the page title (escaped text)",
    "service_name": "[server].service_name (escaped text)",
    "product_name": "[consent].product_name, or service_name when unset (escaped text)",
    "client_name": "the client's self-asserted name, or its client id (escaped text)",
    "client_id": "the client id (escaped text)",
    "redirect_host": "host of the redirect URI the answer goes to (escaped text)",
    "scopes": "the requested scopes, space-separated (escaped text)",
    "resource": "the protected resource (escaped text)",
    "upstream_name": "the upstream provider's name (escaped text)",
    "extra_text": "[consent].extra_text (escaped text, may be empty)",
    "style": "the built-in <style> element, themed with the configured colours",
    "logo": "an <img> element for [consent].logo_url, or nothing",
    "details": "the built-in <dl> of everything the user must see (client, host, scopes, ...)",
    "form": "the decision form: hidden transaction id and CSRF token, Approve and Deny buttons",
    "signout": "when the browser already holds a sign-in for several servers, a note saying so "
    "with a link to the sign-out page; otherwise nothing",
}
#: A template must show these (``details`` may stand in for the four facts it contains).
_REQUIRED = ("form",)
_FACTS = ("client_name", "redirect_host", "scopes", "resource")

_HEX = re.compile(r"#([0-9a-fA-F]{3}|[0-9a-fA-F]{6})")
_RGB = re.compile(r"rgb\(\s*(\d{1,3})\s*,\s*(\d{1,3})\s*,\s*(\d{1,3})\s*\)")
_HOST = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
_SAFE_URL_CHARS = re.compile(r"[A-Za-z0-9\-._~/%?=&+:@!$,;]*")
_DATA_URL = re.compile(r"data:image/(png|jpeg|gif|webp);base64,([A-Za-z0-9+/]+={0,2})")


def parse_color(value: str) -> tuple[int, int, int]:
    """``#rgb``, ``#rrggbb`` or ``rgb(r, g, b)`` as three 0-255 integers; ``ValueError`` otherwise.

    Deliberately narrow: a value that is not one of these shapes never reaches the stylesheet.
    """
    text = value.strip()
    hex_match = _HEX.fullmatch(text)
    if hex_match:
        digits = hex_match.group(1)
        if len(digits) == 3:
            digits = "".join(c * 2 for c in digits)
        return (int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16))
    rgb_match = _RGB.fullmatch(text)
    if rgb_match:
        channels = tuple(int(g) for g in rgb_match.groups())
        if all(0 <= c <= 255 for c in channels):
            return (channels[0], channels[1], channels[2])
    raise ValueError("must be a CSS colour written #rgb, #rrggbb or rgb(r, g, b)")


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _luminance(rgb: tuple[int, int, int]) -> float:
    # WCAG 2.2, "relative luminance".
    def channel(c: int) -> float:
        s = c / 255
        return s / 12.92 if s <= 0.04045 else ((s + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(c) for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast_ratio(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    """WCAG 2.2 contrast ratio of two sRGB colours, from 1 to 21."""
    la, lb = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


BLACK = (0, 0, 0)
WHITE = (255, 255, 255)


def _readable_on(background: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white, whichever contrasts more with ``background`` (always >= 4.5:1)."""
    return max((BLACK, WHITE), key=lambda c: contrast_ratio(c, background))


def _plain_text(name: str, value: str, limit: int, *, newlines: bool = False) -> None:
    if len(value) > limit:
        raise ValueError(f"{name} must be at most {limit} characters")
    allowed = "\n" if newlines else ""
    if any((ord(c) < 0x20 and c not in allowed) or 0x7F <= ord(c) < 0xA0 for c in value):
        raise ValueError(f"{name} must not contain control characters")
    if any(c in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069" for c in value):
        # Bidirectional overrides can make the page show text in another order than it is written.
        raise ValueError(f"{name} must not contain bidirectional control characters")


def _check_logo_url(value: str) -> None:
    if value.startswith("data:"):
        if len(value) > MAX_LOGO_DATA_URL:
            raise ValueError(f"logo_url: a data: URL must be at most {MAX_LOGO_DATA_URL} bytes")
        match = _DATA_URL.fullmatch(value)
        if not match:
            raise ValueError(
                "logo_url: a data: URL must be data:image/(png|jpeg|gif|webp);base64,<data>"
            )
        try:
            base64.b64decode(match.group(2), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("logo_url: the data: URL is not valid base64") from None
        return
    if len(value) > 2048:
        raise ValueError("logo_url must be at most 2048 characters")
    parts = urlsplit(value)
    if parts.scheme != "https":
        raise ValueError("logo_url must be an https: URL or a data:image/...;base64 URL")
    if has_userinfo(parts.netloc):
        raise ValueError("logo_url must not contain userinfo")
    host = parts.hostname or ""
    if not _HOST.fullmatch(host):
        raise ValueError("logo_url must have a plain DNS host name")
    try:
        parts.port  # noqa: B018 (validates the port)
    except ValueError:
        raise ValueError("logo_url has an invalid port") from None
    if has_fragment(value) or not _SAFE_URL_CHARS.fullmatch(value[len("https://") :]):
        raise ValueError("logo_url contains characters that are not allowed in a URL")


class _TemplateChecker(HTMLParser):
    """Finds placeholders anywhere but in text content (attributes, tags, comments, raw text)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.problems: list[str] = []
        self._raw: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._tag(tag)
        # Raw-text elements: HTML escaping does not apply inside them (a value in <style> could
        # add CSS rules). RCDATA elements (<title>, <textarea>) decode entities only: safe.
        if tag in ("style", "xmp", "noembed", "noframes", "noscript"):
            self._raw = tag

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._tag(tag)

    def handle_endtag(self, tag: str) -> None:
        if self._raw == tag:
            self._raw = None

    def _tag(self, tag: str) -> None:
        if tag in ("script", "base", "iframe", "object", "embed", "frame", "frameset"):
            self.problems.append(f"a <{tag}> element is not allowed")
        text = self.get_starttag_text() or ""
        if "$" in text:
            self.problems.append(f"a placeholder inside the tag {text[:60]!r}")

    def handle_data(self, data: str) -> None:
        if self._raw is not None and "$" in data:
            self.problems.append(f"a placeholder inside <{self._raw}>")

    def handle_comment(self, data: str) -> None:
        if "$" in data:
            self.problems.append("a placeholder inside a comment")

    def handle_decl(self, decl: str) -> None:
        if "$" in decl:
            self.problems.append("a placeholder inside a declaration")

    def handle_pi(self, data: str) -> None:
        self.problems.append("processing instructions are not allowed")

    def unknown_decl(self, data: str) -> None:
        self.problems.append("CDATA sections are not allowed")


def _check_template(text: str) -> None:
    if len(text) > MAX_TEMPLATE:
        raise ValueError(f"template must be at most {MAX_TEMPLATE} characters")
    template = string.Template(text)
    if not template.is_valid():
        raise ValueError("template: a '$' must start a $name placeholder (write $$ for a dollar)")
    # get_identifiers() lists each name once; count occurrences to insist on one form.
    names = [
        m.group("named") or m.group("braced")
        for m in template.pattern.finditer(text)
        if m.group("named") or m.group("braced")
    ]
    unknown = sorted(set(names) - set(TEMPLATE_PLACEHOLDERS))
    if unknown:
        raise ValueError(f"template: unknown placeholder ${unknown[0]}")
    for name in _REQUIRED:
        if names.count(name) != 1:
            raise ValueError(f"template: must contain ${name} exactly once")
    if "details" not in names:
        missing = [n for n in _FACTS if n not in names]
        if missing:
            raise ValueError(
                f"template: must contain $details, or ${missing[0]} and the other facts "
                f"({', '.join('$' + n for n in _FACTS)})"
            )
    # `$$` is a literal dollar: drop it before looking for placeholders in the wrong place.
    checker = _TemplateChecker()
    checker.feed(text.replace("$$", ""))
    checker.close()
    if checker.problems:
        raise ValueError(f"template: {checker.problems[0]}")


@attrs.frozen(kw_only=True)
class ConsentTheme:
    """The operator's look for the consent page (``[consent]`` in ``proxy.toml``).

    Every field is validated here, so a theme that exists is safe to render (h11 style: a record
    that exists is valid). ``None`` means "the built-in default".
    """

    #: Shown as the page's heading brand; plain text.
    product_name: str | None = None
    #: An ``https:`` URL with a DNS host, or ``data:image/(png|jpeg|gif|webp);base64,...``.
    logo_url: str | None = None
    #: Colour of the Approve button and of links (the button text is black or white for contrast).
    primary_color: str | None = None
    #: Page background (the text is black or white for contrast).
    background_color: str | None = None
    #: A paragraph shown under the form (plain text; blank lines separate paragraphs).
    extra_text: str | None = None
    #: The text of a full-page template replacing the built-in layout (see TEMPLATE_PLACEHOLDERS).
    template: str | None = attrs.field(default=None, repr=False)

    def __attrs_post_init__(self) -> None:
        if self.product_name is not None:
            if not self.product_name.strip():
                raise ValueError("product_name must not be empty")
            _plain_text("product_name", self.product_name, MAX_PRODUCT_NAME)
        if self.extra_text is not None:
            _plain_text("extra_text", self.extra_text, MAX_EXTRA_TEXT, newlines=True)
        for name in ("primary_color", "background_color"):
            value = getattr(self, name)
            if value is not None:
                try:
                    parse_color(value)
                except ValueError as exc:
                    raise ValueError(f"{name} {exc}") from None
        if self.logo_url is not None:
            _check_logo_url(self.logo_url)
        if self.template is not None:
            _check_template(self.template)

    # -- what the page uses ---------------------------------------------------------------------

    @property
    def background(self) -> tuple[int, int, int]:
        return WHITE if self.background_color is None else parse_color(self.background_color)

    @property
    def primary(self) -> tuple[int, int, int]:
        return (31, 95, 191) if self.primary_color is None else parse_color(self.primary_color)

    def palette(self) -> dict[str, str]:
        """The page's colours as ``#rrggbb``: background, text, primary, on-primary, accent.

        ``accent`` (links, focus rings, the Deny button's border) is the primary colour when it
        contrasts at least 3:1 with the background (WCAG 1.4.11, non-text contrast), else the text
        colour.
        """
        bg = self.background
        text = _readable_on(bg)
        primary = self.primary
        accent = primary if contrast_ratio(primary, bg) >= 3.0 else text
        return {
            "background": _hex(bg),
            "text": _hex(text),
            "primary": _hex(primary),
            "on_primary": _hex(_readable_on(primary)),
            "accent": _hex(accent),
        }

    def img_src(self) -> str:
        """The CSP ``img-src`` source list admitting the logo and nothing else."""
        if self.logo_url is None:
            return "'self'"
        if self.logo_url.startswith("data:"):
            return "'self' data:"
        parts = urlsplit(self.logo_url)
        port = f":{parts.port}" if parts.port is not None else ""
        return f"'self' https://{(parts.hostname or '').lower()}{port}"
