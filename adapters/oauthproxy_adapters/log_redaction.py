"""Secret-bearing query values never reach a log written by ``oauthproxy serve``.

Browsers bring secrets to the proxy in query strings: the provider's ``code`` and the proxy's
upstream ``state`` at the callback (RFC 6749 §4.1.2), the transaction id ``txn`` at the consent page,
the client's ``state`` at ``/authorize``. A client may also misplace a token or a credential in a
query (RFC 6750 §2.3 ``access_token``, RFC 7009 ``token``, ``client_secret``, ``client_assertion``).
uvicorn's access log writes the request line with its query at ``info``, its ``trace`` level writes
the ASGI scope with ``query_string``, and an exception message may quote a URL. Whoever reads the log
(an operator, a log pipeline, a support ticket) could replay a callback within the code's lifetime.

``RedactSecretQueryValues`` is a ``logging.Filter`` for handlers: in the message, every argument and
a formatted exception, the value of each ``name=value`` pair whose name, percent-decoded and
lower-cased, is in ``SECRET_QUERY_PARAMETERS`` or contains one of ``SECRET_NAME_PARTS`` becomes
``REDACTED``. It is attached to every handler of ``serve_log_config`` (uvicorn's own configuration
plus a root handler at ``WARNING`` for the proxy's and httpx's loggers), so no level lets a value
through. Everything else in the line (path, other parameters, status) stays readable.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote_plus

__all__ = [
    "REDACTED",
    "SECRET_NAME_PARTS",
    "SECRET_QUERY_PARAMETERS",
    "RedactSecretQueryValues",
    "redact",
    "serve_log_config",
]

REDACTED = "[redacted]"

#: Parameters whose value is a secret wherever they appear.
SECRET_QUERY_PARAMETERS = frozenset(
    {
        "code",  # RFC 6749 §4.1.2: the provider's authorization code at our callback
        "state",  # the upstream state (binds the callback) and the client's state
        "txn",  # our transaction id at the consent page
        "csrf",  # the consent form's token, if a browser ever sends the form as a GET
        "code_verifier",  # RFC 7636 §4.5
        "user_code",  # RFC 8628 §3.2
        "device_code",
        "access_token",  # RFC 6750 §2.3
        "refresh_token",
        "id_token",
        "token",  # RFC 7009 §2.1, RFC 7662 §2.1
        "client_secret",  # RFC 6749 §2.3.1
        "client_assertion",  # RFC 7523 §2.2
        "assertion",  # RFC 7523 §2.1
        "subject_token",  # RFC 8693 §2.1
        "actor_token",
        "password",
        "registration_access_token",  # RFC 7592 §3
    }
)
#: A name containing one of these is treated as secret too (``upstream_token``, ``api_key``...).
SECRET_NAME_PARTS = ("token", "secret", "password", "assertion", "verifier", "api_key", "apikey")

# A parameter name followed by "=", where the name is not the tail of a longer word. Values are not
# consumed by the search: a raw "?code=..." inside another parameter's value is still found.
_NAME = re.compile(r"(?<![\w.%+-])(?P<name>[\w.%+-]+)=")
# A value runs to the next separator of a query (``&``, ``;``), a fragment, whitespace, or a quote
# or bracket (the log line's own punctuation around it).
_VALUE_END = re.compile(r"[&;#\s\"'<>]")


def _is_secret(name: str) -> bool:
    folded = unquote_plus(name).strip().lower()
    return folded in SECRET_QUERY_PARAMETERS or any(part in folded for part in SECRET_NAME_PARTS)


def redact(text: str) -> str:
    """``text`` with the value of every secret-bearing ``name=value`` pair replaced."""
    if "=" not in text:
        return text
    out: list[str] = []
    done = 0
    for match in _NAME.finditer(text):
        if match.start() < done or not _is_secret(match["name"]):
            continue
        end = _VALUE_END.search(text, match.end())
        stop = end.start() if end else len(text)
        if stop == match.end():
            continue  # an empty value hides nothing
        out += (text[done : match.end()], REDACTED)
        done = stop
    out.append(text[done:])
    return "".join(out)


def _redact_arg(arg: Any) -> Any:
    if isinstance(arg, str):
        return redact(arg)
    if isinstance(arg, bytes | bytearray):
        return redact(bytes(arg).decode("latin-1")).encode("latin-1")
    if arg is None or isinstance(arg, bool | int | float):
        return arg  # numbers keep their type: a %d placeholder still works
    # Anything else (an ASGI scope, a URL object) is logged through str(): redacted as such.
    return redact(str(arg))


class RedactSecretQueryValues(logging.Filter):
    """A handler filter: rewrites the record in place, never drops it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, Mapping):
            record.args = {k: _redact_arg(v) for k, v in record.args.items()}
        elif record.args:
            record.args = tuple(_redact_arg(a) for a in record.args)
        if record.exc_info and not record.exc_text:
            # Formatter.format uses exc_text when it is set: format the exception here, redacted.
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def serve_log_config(base: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` (uvicorn's ``LOGGING_CONFIG``) with the filter on every handler, and a root
    handler at ``WARNING`` so the proxy's own and httpx's records pass through it as well."""
    config: dict[str, Any] = copy.deepcopy(dict(base))
    config.setdefault("filters", {})["redact_secret_query_values"] = {
        "()": f"{__name__}.RedactSecretQueryValues"
    }
    for handler in config.get("handlers", {}).values():
        handler["filters"] = [*handler.get("filters", []), "redact_secret_query_values"]
    config["root"] = {"handlers": ["default"], "level": "WARNING"}
    return config
