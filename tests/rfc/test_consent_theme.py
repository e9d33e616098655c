"""Theming the consent page without weakening it (spec/security.md 17).

An operator may brand the page (product name, logo, colours, extra text) or replace its layout with
a template; no configured value may inject HTML or CSS, widen the Content-Security-Policy beyond the
logo's origin, or drop the CSRF-protected form and the facts the user must see. Bad values are
refused when the configuration is built (``ConsentTheme``) or loaded (``[consent]`` in proxy.toml)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from oauthproxy_adapters.config_file import ConfigError, parse_settings
from oauthproxy_core.consent_theme import ConsentTheme, contrast_ratio, parse_color
from oauthproxy_core.http import Response
from tests.harness import VERIFIER, Browser, Harness, consent_fields, make_config

PNG_DATA_URL = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8"
    "z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


def _page(theme: ConsentTheme, **register: Any) -> tuple[Harness, Response]:
    h = Harness(make_config(consent_theme=theme))
    client = h.register(**register)
    browser = Browser()
    resp = h.request("GET", h.authorize_url(client, VERIFIER), browser=browser)
    loc = resp.header("location") or ""
    page = h.request("GET", loc.removeprefix(h.config.issuer), browser=browser)
    assert page.status == 200, page.body
    return h, page


def _csp(page: Response) -> dict[str, str]:
    out = {}
    for directive in (page.header("content-security-policy") or "").split(";"):
        name, _, value = directive.strip().partition(" ")
        out[name] = value
    return out


# -- the built-in page: accessible and readable on a phone ---------------------------------------


def test_default_page_has_landmarks_lang_viewport_buttons_and_focus_ring() -> None:
    _, page = _page(ConsentTheme())
    html = page.body.decode()
    assert html.startswith('<!doctype html><html lang="en">')
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html
    assert '<main aria-labelledby="consent-title">' in html
    assert '<h1 id="consent-title">' in html
    assert '<form method="post"' in html and 'aria-label="Your decision"' in html
    # Decisions are submit buttons, never links.
    assert re.search(
        r'<button class="approve" type="submit" name="decision" value="approve">', html
    )
    assert re.search(r'<button class="deny" type="submit" name="decision" value="deny">', html)
    assert "<a " not in html
    assert ":focus-visible{outline:3px solid" in html
    assert "@media (max-width:30rem)" in html
    csp = _csp(page)
    assert csp["default-src"] == "'none'"
    assert csp["img-src"] == "'self'"
    assert "script-src" not in csp
    assert csp["frame-ancestors"] == "'none'"


def test_default_palette_meets_wcag_contrast() -> None:
    colors = {k: parse_color(v) for k, v in ConsentTheme().palette().items()}
    assert contrast_ratio(colors["text"], colors["background"]) >= 4.5
    assert contrast_ratio(colors["on_primary"], colors["primary"]) >= 4.5
    assert contrast_ratio(colors["accent"], colors["background"]) >= 3.0


@pytest.mark.parametrize(
    ("primary", "background"),
    [
        ("#ffff00", "#ffffff"),  # yellow on white: the accent falls back to the text colour
        ("#777", "#777777"),
        ("rgb(0, 0, 0)", "#000"),
        ("#0a0", "#102030"),
        ("#ff00ff", "rgb(250, 250, 250)"),
    ],
)
def test_any_theme_colours_keep_text_readable(primary: str, background: str) -> None:
    theme = ConsentTheme(primary_color=primary, background_color=background)
    colors = {k: parse_color(v) for k, v in theme.palette().items()}
    assert contrast_ratio(colors["text"], colors["background"]) >= 4.5
    assert contrast_ratio(colors["on_primary"], colors["primary"]) >= 4.5
    assert contrast_ratio(colors["accent"], colors["background"]) >= 3.0


# -- themed values appear, escaped --------------------------------------------------------------


def test_themed_values_appear_escaped_and_colours_normalised() -> None:
    theme = ConsentTheme(
        product_name="Acme & <Tools>",
        primary_color="#ABC",
        background_color="rgb(250, 250, 240)",
        extra_text='Questions? Ask "platform" <team>.\n\nSecond paragraph & more.',
        logo_url="https://cdn.example.com:8443/logo.png?v=2&x=1",
    )
    _, page = _page(theme)
    html = page.body.decode()
    assert '<span class="product">Acme &amp; &lt;Tools&gt;</span>' in html
    assert "<footer><p>Questions? Ask &quot;platform&quot; &lt;team&gt;.</p>" in html
    assert "<p>Second paragraph &amp; more.</p></footer>" in html
    assert '<img src="https://cdn.example.com:8443/logo.png?v=2&amp;x=1" alt=""' in html
    assert "background:#aabbcc" in html
    assert "background:#fafaf0" in html
    assert "<Tools>" not in html and "<team>" not in html
    assert _csp(page)["img-src"] == "'self' https://cdn.example.com:8443"


def test_data_logo_admits_only_data_images() -> None:
    _, page = _page(ConsentTheme(logo_url=PNG_DATA_URL))
    assert f'<img src="{PNG_DATA_URL}"' in page.body.decode()
    assert _csp(page)["img-src"] == "'self' data:"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("primary_color", "red;}body{display:none"),
        ("primary_color", "#fff;background:url(https://evil.example/x)"),
        ("primary_color", "red"),  # named colours are not accepted: only the closed notations
        ("primary_color", "expression(alert(1))"),
        ("primary_color", "#12345"),
        ("primary_color", "rgb(256, 0, 0)"),
        ("background_color", "var(--x)"),
        ("background_color", "#fff</style><script>alert(1)</script>"),
        ("background_color", "url(javascript:alert(1))"),
        ("logo_url", "javascript:alert(1)"),
        ("logo_url", "http://cdn.example/logo.png"),
        ("logo_url", 'https://cdn.example/logo.png" onerror="alert(1)'),
        ("logo_url", "https://cdn.example/a b.png"),
        ("logo_url", "https://user@cdn.example/logo.png"),
        ("logo_url", "https://cdn.example;script-src */x.png"),
        ("logo_url", "https://cdn.example/x.png#frag"),
        ("logo_url", "https://[::1]/x.png"),
        ("logo_url", "data:text/html;base64,PHNjcmlwdD4="),
        ("logo_url", "data:image/svg+xml;base64,PHN2Zy8+"),
        ("logo_url", "data:image/png,notbase64"),
        ("logo_url", "data:image/png;base64,@@@"),
        ("product_name", ""),
        ("product_name", "a" * 81),
        ("product_name", "Acme\r\nSet-Cookie: x=y"),
        ("product_name", "Acme\u202egnp.exe"),
        ("extra_text", "x\x00y"),
        ("extra_text", "x" * 1001),
    ],
)
def test_injection_attempts_in_theme_values_are_refused(field: str, value: str) -> None:
    with pytest.raises(ValueError, match=field):
        ConsentTheme(**{field: value})


# -- [consent] in proxy.toml ---------------------------------------------------------------------


def _settings(consent: dict[str, Any]) -> Any:
    data = {
        "server": {"base_url": "https://mcp.example"},
        "upstream": {"provider": "github", "client_id": "Iv1.abc", "client_secret": "s3cret"},
        "consent": consent,
    }
    return parse_settings(data, environ={})


def test_config_file_consent_keys_build_the_theme() -> None:
    settings = _settings(
        {
            "product_name": "Acme",
            "logo_url": PNG_DATA_URL,
            "primary_color": "#123456",
            "background_color": "#fff",
            "extra_text": "Hello",
        }
    )
    theme = settings.proxy.consent_theme
    assert theme == ConsentTheme(
        product_name="Acme",
        logo_url=PNG_DATA_URL,
        primary_color="#123456",
        background_color="#fff",
        extra_text="Hello",
    )


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("primary_color", "red;}body{display:none}"),
        ("background_color", "#fff</style>"),
        ("logo_url", "javascript:alert(1)"),
        ("logo_url", 'https://x.example/" onerror="alert(1)'),
        ("product_name", "Acme\x1b[31m"),
        ("extra_text", "\x07"),
    ],
)
def test_config_file_refuses_injection_naming_the_key(key: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        _settings({key: value})
    assert info.value.message.startswith(f"[consent].{key}: ")


def test_config_file_refuses_non_string_theme_values() -> None:
    with pytest.raises(ConfigError, match=r"^\[consent\].primary_color: must be a string"):
        _settings({"primary_color": 0x1F5FBF})


# -- a full template ------------------------------------------------------------------------------

TEMPLATE = """<!doctype html>
<html lang="de"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title>$style</head>
<body><main>
<h1>$product_name: $client_name m&ouml;chte auf $service_name zugreifen</h1>
<p>Ziel: $redirect_host. Rechte: $scopes. Ressource: $resource. Anmeldung mit $upstream_name.</p>
<p>Kosten: 0 $$</p>
$logo
$form
<p>$extra_text</p>
</main></body></html>
"""


def test_template_renders_with_every_value_escaped(tmp_path: Path) -> None:
    path = tmp_path / "consent.html"
    path.write_text(TEMPLATE, encoding="utf-8")
    settings = _settings(
        {
            "template": str(path),
            "product_name": "Acme <b>",
            "extra_text": "a & b",
            "logo_url": PNG_DATA_URL,
        }
    )
    h, page = _page(
        settings.proxy.consent_theme,
        client_name='Evil "</h1><script>x()</script>',
    )
    html = page.body.decode()
    assert html.startswith('<!doctype html>\n<html lang="de">')
    assert (
        "Acme &lt;b&gt;: Evil &quot;&lt;/h1&gt;&lt;script&gt;x()&lt;/script&gt; m&ouml;chte" in html
    )
    assert "<script>" not in html
    assert "Ziel: 127.0.0.1:33418." in html
    assert "Rechte: mcp." in html
    assert "Ressource: https://proxy.example/mcp." in html
    assert "Kosten: 0 $</p>" in html
    assert "<p>a &amp; b</p>" in html
    assert f'<img src="{PNG_DATA_URL}"' in html
    assert "<style>body{" in html
    # The form with its CSRF token is there, and the flow still works through it.
    fields = consent_fields(page)
    assert fields["txn"] and fields["csrf"]
    assert 'value="approve">Approve</button>' in html
    resp = h.form("/consent", {**fields, "decision": "approve"}, browser=Browser())
    assert resp.status == 403  # another browser: CSRF cookie missing
    assert page.header("x-frame-options") == "DENY"
    assert _csp(page)["img-src"] == "'self' data:"


def test_template_flow_reaches_the_client_with_a_code() -> None:
    h = Harness(make_config(consent_theme=ConsentTheme(template="<main>$details $form</main>")))
    client = h.register()
    resp = h.run_to_callback(client, VERIFIER, Browser())
    assert resp.status == 302
    assert "code=" in (resp.header("location") or "")


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("<main>$details</main>", r"\$form exactly once"),
        ("<main>$details $form $form</main>", r"\$form exactly once"),
        ("<main>$form $client_name</main>", r"\$details"),
        ("<main>$details $form $nonsense</main>", r"unknown placeholder \$nonsense"),
        ("<main>$details $form ${client_name</main>", "placeholder"),
        ('<main>$details $form <a href="$redirect_host">x</a></main>', "inside the tag"),
        ("<main>$details $form <img src=x alt=$client_name></main>", "inside the tag"),
        ("<main $client_name>$details $form</main>", "inside the tag"),
        ("<style>h1{color:$product_name}</style>$details $form", "inside <style>"),
        ("<!-- $client_name -->$details $form", "comment"),
        ("<script>1</script>$details $form", "<script>"),
        ("<base href=/x>$details $form", "<base>"),
        ("<iframe></iframe>$details $form", "<iframe>"),
        ("x" * 70_000 + "$details $form", "at most"),
    ],
)
def test_unsafe_or_incomplete_templates_are_refused(template: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        ConsentTheme(template=template)


def test_config_file_template_errors_name_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.html"
    bad.write_text('<a href="$client_name">$details $form</a>', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"^\[consent\].template: a placeholder"):
        _settings({"template": str(bad)})
    with pytest.raises(ConfigError, match=r"^\[consent\].template: cannot read"):
        _settings({"template": str(tmp_path / "missing.html")})
    binary = tmp_path / "bin.html"
    binary.write_bytes(b"\xff\xfe$form")
    with pytest.raises(ConfigError, match=r"^\[consent\].template: .* is not UTF-8"):
        _settings({"template": str(binary)})


def test_the_documented_example_template_is_accepted_and_renders() -> None:
    page = Path(__file__).resolve().parents[2] / "spec" / "docs" / "consent-page.md"
    text = page.read_text()
    template = text.split("```html\n", 1)[1].split("```", 1)[0]
    _h, rendered = _page(ConsentTheme(template=template, product_name="Acme"))
    html = rendered.body.decode()
    assert "<strong>Acme</strong>" in html
    assert consent_fields(rendered)["csrf"]
