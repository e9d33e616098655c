"""Known attack strings, as data. Each entry names what it tries; tests/hostile/test_attack_corpus.py
sends every one through the real application and asserts the documented answer.

Sources: RFC 9700 §4.1 (redirect URI validation attacks), RFC 8252 §7.3 and §8.3 (loopback), OWASP's
open-redirect and header-injection cheat sheets, the incidents listed in spec/security.md (``javascript:``
at DCR, backslash in the authority, ``fnmatch`` across ``/``, dot segments), and the classic parser
differentials (userinfo, IDN homoglyphs, overlong UTF-8, lone surrogates).
"""

from __future__ import annotations

import base64

#: The client under attack registers these two (one web, one loopback native callback).
REGISTERED_HTTPS = "https://app.example/cb"
REGISTERED_LOOPBACK = "http://127.0.0.1:33418/callback"
REGISTERED_LOCALHOST = "http://localhost:33418/callback"

#: Refused at registration (RFC 7591 §2, spec/security.md 3): ``invalid_redirect_uri`` 400.
BAD_REDIRECT_URIS_AT_REGISTRATION: dict[str, str] = {
    "javascript scheme": "javascript:alert(document.domain)",
    "javascript with slashes": "javascript://app.example/%0aalert(1)",
    "data scheme": "data:text/html,<script>alert(1)</script>",
    "file scheme": "file:///etc/passwd",
    "vbscript scheme": "vbscript:msgbox(1)",
    "plain http to a public host": "http://app.example/cb",
    "http to a name that starts like localhost": "http://localhost.evil.example/cb",
    "http to 127.0.0.1 as a subdomain": "http://127.0.0.1.evil.example/cb",
    "userinfo disguising the host": "https://app.example@evil.example/cb",
    "userinfo on loopback": "http://localhost@evil.example/cb",
    "percent-encoded at-sign": "https://app.example%40evil.example/cb",
    "backslash in the authority": "https://app.example\\@evil.example/cb",
    "backslash after the host": "https://evil.example\\.app.example/cb",
    "scheme-relative": "//evil.example/cb",
    "missing slash": "https:/evil.example/cb",
    "fragment": "https://app.example/cb#frag",
    "empty fragment": "https://app.example/cb#",
    "dot segment": "https://app.example/cb/../evil",
    "encoded dot segment": "https://app.example/cb/%2e%2e/evil",
    "double-encoded dot segment": "https://app.example/cb/%252e%252e/evil",
    "encoded slash and dots": "https://app.example/cb%2f..%2fevil",
    "overlong UTF-8 dot": "https://app.example/cb/%c0%ae%c0%ae/evil",
    "IDN homoglyph host (Cyrillic a)": "https://\u0430pp.example/cb",
    "fullwidth dot in host": "https://app\uff0eexample/cb",
    "ideographic full stop encoded": "https://app%E3%80%82example/cb",
    "space": "https://app.example/c b",
    "tab": "https://app.example/\tcb",
    "CRLF": "https://app.example/cb\r\nLocation: https://evil.example/",
    "NUL": "https://app.example/cb\x00.evil.example",
    "IPv6 zone id": "http://[fe80::1%25eth0]:8080/cb",
    "malformed IPv6": "http://[::1/cb",
    "port out of range": "http://127.0.0.1:99999/cb",
    "relative": "/cb",
    "empty": "",
    # The authorization response would carry these twice (spec/security.md 4; issue 13, item 7).
    "query names iss": "https://app.example/cb?iss=https://evil.example",
    "query names code": "https://app.example/cb?code=attacker",
    "query names state": "http://127.0.0.1:33418/callback?x=1&state=s",
    "query names error": "https://app.example/cb?error=access_denied",
    "query names error_description": "https://app.example/cb?error_description=x",
    "query names error_uri": "https://app.example/cb?error_uri=https://evil.example",
    "query names iss without a value": "https://app.example/cb?iss",
    "query names iss percent-encoded": "https://app.example/cb?i%73s=https://evil.example",
    "query names ISS in upper case": "https://app.example/cb?ISS=https://evil.example",
    "query names iss after a semicolon": "https://app.example/cb?x=1;iss=https://evil.example",
    "query names code as a PHP array": "https://app.example/cb?code[]=attacker",
    "query names error.description (PHP)": "https://app.example/cb?error.description=x",
}

#: Sent at /authorize by a client that registered ``REGISTERED_*``; answered with a 400 page and no
#: redirect anywhere (spec/security.md 1, 2): exact string comparison, only the loopback port may vary.
BAD_REDIRECT_URIS_AT_AUTHORIZE: dict[str, str] = {
    "other host": "https://evil.example/cb",
    "suffix host": "https://app.example.evil.example/cb",
    "host with trailing dot": "https://app.example./cb",
    "upper-case host": "https://APP.example/cb",
    "explicit default port": "https://app.example:443/cb",
    "other port on https": "https://app.example:8443/cb",
    "trailing slash": "https://app.example/cb/",
    "extra path": "https://app.example/cb/more",
    "extra query": "https://app.example/cb?next=https://evil.example",
    "fragment": "https://app.example/cb#x",
    "dot segment": "https://app.example/cb/../cb",
    "encoded dot segment": "https://app.example/%2e/cb",
    "userinfo": "https://app.example@evil.example/cb",
    "backslash": "https://app.example\\@evil.example/cb",
    "scheme-relative": "//app.example/cb",
    "http downgrade": "http://app.example/cb",
    "IDN homoglyph": "https://\u0430pp.example/cb",
    "javascript": "javascript:alert(1)//https://app.example/cb",
    "CRLF": "https://app.example/cb\r\nX: y",
    "NUL": "https://app.example/cb\x00",
    "path case": "http://127.0.0.1:33418/Callback",
    "loopback other path": "http://127.0.0.1:33418/callback2",
    "loopback with query": "http://127.0.0.1:33418/callback?x=1",
    "loopback as localhost": "http://localhost:33418/callback",
    "loopback other spelling": "http://127.1:33418/callback",
    "loopback IPv6 not registered": "http://[::1]:33418/callback",
    "loopback https": "https://127.0.0.1:33418/callback",
    "loopback userinfo": "http://127.0.0.1:33418@evil.example/callback",
    "loopback decimal": "http://2130706433:33418/callback",
    "loopback port empty": "http://127.0.0.1:/callback",
    "loopback port garbage": "http://127.0.0.1:0x50/callback",
}

#: RFC 8252 §7.3: "MUST allow any port to be specified at the time of the request for loopback IP
#: redirect URIs" (and for ``localhost`` where the proxy's policy allows it, the default).
ALLOWED_LOOPBACK_VARIANTS: dict[str, str] = {
    "other port": "http://127.0.0.1:1/callback",
    "highest port": "http://127.0.0.1:65535/callback",
    "no port": "http://127.0.0.1/callback",
    "localhost other port": "http://localhost:50123/callback",
}

#: Client ``state`` values that try to break out of the Location header or the query string. Each
#: must come back byte for byte, percent-encoded, in one ``state`` parameter (spec/security.md 4).
HOSTILE_STATES: dict[str, str] = {
    "CRLF header injection": "x\r\nSet-Cookie: session=evil",
    "LF only": "x\nLocation: https://evil.example/",
    "parameter smuggling": "x&code=attacker&iss=https://evil.example",
    "fragment": "x#https://evil.example",
    "quotes and brackets": "\"'><script>alert(1)</script>",
    "non-ASCII": "\u00e9t\u00e9 \u2603 \U0001f600",
    "percent signs": "%0d%0a%00%",
    "long": "s" * 2000,
}

#: Percent-encoded byte sequences that are not valid UTF-8, or decode to a NUL: 400 wherever they
#: appear in a parameter.
MALFORMED_ENCODINGS: dict[str, str] = {
    "overlong dot": "%C0%AE",
    "overlong slash": "%C0%AF",
    "overlong NUL": "%C0%80",
    "lone high surrogate": "%ED%A0%80",
    "lone low surrogate": "%ED%B0%80",
    "truncated sequence": "%E2%82",
    "invalid byte": "%FF",
    "NUL": "%00",
}

#: JSON bodies for /register that attack the parser rather than the policy: 400, never 5xx.
JSON_BOMBS: dict[str, bytes] = {
    "deep arrays": b"[" * 100_000 + b"]" * 100_000,
    "deep objects": b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
    "deep in a valid field": b'{"redirect_uris":["https://app.example/cb"],"x":'
    + b"[" * 5000
    + b"]" * 5000
    + b"}",
    "unbalanced": b"[" * 50_000,
    "huge integer": b'{"redirect_uris":["https://app.example/cb"],"x":' + b"9" * 50_000 + b"}",
    "huge exponent": b'{"redirect_uris":["https://app.example/cb"],"x":1e999999}',
    "NaN": b'{"redirect_uris":["https://app.example/cb"],"x":NaN}',
    "Infinity": b'{"redirect_uris":["https://app.example/cb"],"x":-Infinity}',
    "not UTF-8": b'{"redirect_uris":["https://app.example/cb"],"client_name":"\xff\xfe"}',
    "UTF-16 BOM": b"\xff\xfe{\x00}\x00",
    "duplicate keys": b'{"redirect_uris":["https://app.example/cb"],'
    b'"redirect_uris":["https://evil.example/cb"]}',
    "top-level array": b'[{"redirect_uris":["https://app.example/cb"]}]',
    "top-level string": b'"https://app.example/cb"',
    "empty": b"",
    "truncated": b'{"redirect_uris":["https://app.example/cb"',
}

#: Numbers where a small one belongs.
HUGE_NUMBERS: tuple[str, ...] = (
    "9" * 400,
    "-1",
    "1e308",
    "18446744073709551616",
    "0x7fffffff",
    "NaN",
)


# -- JWTs that attack the JSON and base64url parsers (issue 13, item 5) ---------------------------


def _b64(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


_HEADER = _b64('{"alg":"ES256","kid":"k1"}')
_CLAIMS = _b64('{"iss":"https://client.example/c.json","sub":"https://client.example/c.json"}')
_SIG = _b64(b"\x00" * 64)

#: Compact JWS strings sent as ``client_assertion`` at /token and /revoke and as bearer tokens at the
#: protected path: a clean 401 each time, never a 5xx (spec/security.md 29). The first one answered 500
#: with a ``RecursionError`` traceback at /token and /revoke before the one guarded JSON parser.
HOSTILE_JWTS: dict[str, str] = {
    "header nested 2900 arrays deep": _b64("[" * 2900) + "." + _CLAIMS + "." + _SIG,
    "header nested 450 objects deep": _b64('{"a":' * 450 + "1" + "}" * 450)
    + "."
    + _CLAIMS
    + "."
    + _SIG,
    "header one past the depth bound": _b64('{"alg":"ES256","x":' + "[" * 16 + "]" * 16 + "}")
    + "."
    + _CLAIMS
    + "."
    + _SIG,
    "brackets inside a header string": _b64('{"alg":"ES256","x":"' + "[" * 200 + '"}')
    + "."
    + _CLAIMS
    + "."
    + _SIG,
    "claims nested 2900 arrays deep": _HEADER + "." + _b64("[" * 2900) + "." + _SIG,
    "claims unbalanced 580 objects": _HEADER + "." + _b64('{"a":' * 580) + "." + _SIG,
    "header is an array": _b64("[]") + "." + _CLAIMS + "." + _SIG,
    "header is a string": _b64('"ES256"') + "." + _CLAIMS + "." + _SIG,
    "header is not UTF-8": _b64(b'{"alg":"\xff\xfe"}') + "." + _CLAIMS + "." + _SIG,
    "header in UTF-16": _b64('{"alg":"ES256"}'.encode("utf-16")) + "." + _CLAIMS + "." + _SIG,
    "NaN in the header": _b64('{"alg":"ES256","x":NaN}') + "." + _CLAIMS + "." + _SIG,
    "lone surrogate in the header": _b64('{"alg":"ES256","kid":"\\ud800"}')
    + "."
    + _CLAIMS
    + "."
    + _SIG,
    "huge integer in the claims": _HEADER + "." + _b64('{"exp":' + "9" * 2800 + "}") + "." + _SIG,
    "duplicate alg": _b64('{"alg":"none","alg":"ES256"}') + "." + _CLAIMS + "." + _SIG,
    "alg none, empty signature": _b64('{"alg":"none"}') + "." + _CLAIMS + ".",
    "not base64url": "e30!." + _CLAIMS + "." + _SIG,
    "standard base64 alphabet": "e30+/w." + _CLAIMS + "." + _SIG,
    "impossible base64 length": "e30ab." + _CLAIMS + "." + _SIG,
    "two segments": _HEADER + "." + _CLAIMS,
    "five segments (JWE shape)": ".".join([_HEADER, _CLAIMS, _SIG, _SIG, _SIG]),
    "empty segments": "..",
    "only dots": "." * 300,
}

#: What a consent POST says about where it comes from, other than the proxy's own page (spec/security.md
#: 31): answered with a 403 page before the form is read, whatever the form and the cookie hold.
#: ``{issuer}`` stands for the issuer's origin. Only exact tokens count: no browser sends a list, a
#: different case or padding, and an ``Origin`` counts only when ``Sec-Fetch-Site`` is absent.
FOREIGN_CONSENT_ORIGINS: dict[str, tuple[tuple[str, str], ...]] = {
    "cross-site page": (("Sec-Fetch-Site", "cross-site"), ("Origin", "https://evil.example")),
    "same-site page (sibling, other port)": (
        ("Sec-Fetch-Site", "same-site"),
        ("Origin", "http://127.0.0.1:9"),
    ),
    "same-site page claiming the issuer's Origin": (
        ("Sec-Fetch-Site", "same-site"),
        ("Origin", "{issuer}"),
    ),
    "a list of values": (("Sec-Fetch-Site", "same-origin, cross-site"),),
    "upper case": (("Sec-Fetch-Site", "SAME-ORIGIN"),),
    "empty Sec-Fetch-Site": (("Sec-Fetch-Site", ""),),
    "no Fetch Metadata, foreign Origin": (("Origin", "https://evil.example"),),
    "no Fetch Metadata, null Origin": (("Origin", "null"),),
    "no Fetch Metadata, another port": (("Origin", "http://127.0.0.1:8001"),),
    "no Fetch Metadata, localhost for 127.0.0.1": (("Origin", "http://localhost:8000"),),
    "no Fetch Metadata, issuer with a path": (("Origin", "{issuer}/consent"),),
    "no Fetch Metadata, issuer as a prefix": (("Origin", "{issuer}.evil.example"),),
    "no Fetch Metadata, only a Referer": (("Referer", "{issuer}/consent"),),
    "neither header": (),
}
