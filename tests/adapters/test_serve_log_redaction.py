"""``oauthproxy serve`` never writes a secret-bearing query value to its log, at any log level.

The browser brings secrets in query strings: the provider's ``code`` and the proxy's upstream
``state`` at the callback, the transaction id ``txn`` at the consent page, the client's ``state`` at
``/authorize``; a misbehaving client may put tokens or credentials there too. uvicorn's access log
(``info``) writes the request line with its query, and its ``trace`` level writes the ASGI scope with
``query_string``. Each case runs ``oauthproxy serve`` as a process at a log level, sends
callback-, consent- and authorize-shaped requests, and greps the captured stdout and stderr.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oauthproxy_adapters.log_redaction import (
    REDACTED,
    SECRET_QUERY_PARAMETERS,
    RedactSecretQueryValues,
)
from oauthproxy_adapters.testing.serve import ServeProcess
from tests.adapters.serve_process import start_serve

#: One distinct, greppable value per secret-bearing parameter.
SECRETS = {
    name: f"SeCrEt{i:02d}x{name.replace('_', '')}"
    for i, name in enumerate(sorted(SECRET_QUERY_PARAMETERS))
}


def requests_carrying_secrets(base: str) -> list[str]:
    """Callback-, consent- and authorize-shaped URLs, and every secret parameter on each path."""
    everything = "&".join(f"{quote(k)}={quote(v)}" for k, v in SECRETS.items())
    return [
        f"{base}/auth/callback?code={SECRETS['code']}&state={SECRETS['state']}&iss=x",
        f"{base}/consent?txn={SECRETS['txn']}",
        f"{base}/authorize?client_id=c&response_type=code&state={SECRETS['state']}",
        # Spellings a parser would still read as the name: case, percent-encoding.
        f"{base}/auth/callback?CODE={SECRETS['code']}&%73tate={SECRETS['state']}",
        f"{base}/auth/callback?{everything}",
        f"{base}/token?{everything}",
        f"{base}/mcp?{everything}",
    ]


@pytest.fixture(scope="module", params=["info", "debug", "trace"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServeProcess, str]]:
    level = str(request.param)
    proc = start_serve(tmp_path_factory.mktemp(f"serve-log-{level}"), "--log-level", level)
    try:
        yield proc, f"http://{proc.netloc}"
    finally:
        proc.stop()


def log_after(proc: ServeProcess, base: str) -> str:
    with httpx.Client(timeout=5.0, trust_env=False) as http:
        for url in requests_carrying_secrets(base):
            http.get(url)
    proc.stop()  # everything is flushed once the process has exited
    return Path(proc.log).read_text(errors="replace")


def test_secret_query_values_never_reach_the_serve_log(served: tuple[ServeProcess, str]) -> None:
    proc, base = served
    log = log_after(proc, base)
    # The requests were logged (at info and below): the check below is not vacuous.
    assert "/auth/callback?" in log and "/consent?" in log, log
    leaked = [name for name, value in SECRETS.items() if value in log]
    assert not leaked, (leaked, log)
    assert REDACTED in log
    # What is not secret stays readable.
    assert re.search(r"/authorize\?client_id=c&response_type=code&state=", log), log


# -- the filter itself ----------------------------------------------------------------------------

VALUE = st.text(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~%+/=", min_size=6
)
# Values of the other parameters: without "=", so that none of them reads as a secret pair itself.
PLAIN_VALUE = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~%+/")


def spellings(name: str) -> st.SearchStrategy[str]:
    """``name`` as a query may spell it: any case per letter, any character percent-encoded."""
    return st.tuples(
        *[
            st.sampled_from(sorted({c.lower(), c.upper(), "%" + format(ord(c), "02X")}))
            for c in name
        ]
    ).map("".join)


@settings(max_examples=300, deadline=None)
@given(
    name=st.sampled_from(sorted(SECRET_QUERY_PARAMETERS)).flatmap(spellings),
    value=VALUE,
    before=st.lists(
        st.tuples(st.sampled_from(["client_id", "iss", "scope"]), PLAIN_VALUE), max_size=2
    ),
    style=st.sampled_from(["access", "scope", "exception"]),
    nested=st.booleans(),
)
def test_redaction_property_no_secret_value_survives(
    name: str, value: str, before: list[tuple[str, str]], style: str, nested: bool
) -> None:
    """Whatever the spelling of a secret parameter's name, and wherever the query appears in a
    record (the access line's argument, a repr'd ASGI scope, an exception message), its value is
    gone from the formatted line, and the other parameters are intact."""
    secret = f"{name}=S{value}"
    if nested:  # unencoded inside another parameter's value, as a sloppy client may send it
        secret = f"redirect_uri=http://127.0.0.1/cb?{secret}"
    query = "&".join([*(f"{k}={v}" for k, v in before), secret])
    record = access_record(query, style)
    assert RedactSecretQueryValues().filter(record) is True
    line = logging.Formatter("%(message)s").format(record)
    assert f"=S{value}" not in line, line
    assert f"{name}={REDACTED}" in line, line
    for k, v in before:
        assert f"{k}={v}" in line, line


def access_record(query: str, style: str) -> logging.LogRecord:
    if style == "access":  # uvicorn.access: the path with its query is one argument
        msg, args = '%s - "%s %s HTTP/%s" %d', ("127.0.0.1:1", "GET", f"/cb?{query}", "1.1", 200)
    elif style == "scope":  # uvicorn.asgi at trace: the scope dict, query_string as bytes
        msg, args = "scope=%s", ({"path": "/cb", "query_string": query.encode()},)
    else:
        msg, args = "failed", ()
    exc_info = None
    if style == "exception":
        try:
            raise ValueError(f"bad url http://h/cb?{query}")
        except ValueError:
            exc_info = sys.exc_info()
    return logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, msg, args, exc_info)
