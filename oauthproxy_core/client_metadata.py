"""Dynamic client registration metadata: validation and the echo (RFC 7591 §2 and §3.2).

Implements RFC 7591 §2 (metadata fields and defaults), §3.2.1 (the response "MUST return all
registered metadata about the client"), §3.2.2 (``invalid_redirect_uri``,
``invalid_client_metadata``), RFC 8252 §8.4 (native clients) and the MCP 2026-07-28
``application_type`` field (from OpenID Connect Dynamic Client Registration 1.0 §2).

Choices, made once here:

* ``application_type``: when the client sends it, it must be "web" or "native" and is used as is.
  When omitted it is *derived*: "native" if any redirect URI is not ``https`` (loopback ``http`` or
  a private-use scheme: CLI and desktop MCP clients register these without ``application_type``),
  otherwise "web" (the OpenID default). The record stores and echoes this effective value, so that
  re-checking a stored URI with ``validate_redirect_uri(uri, application_type=md.application_type)``
  accepts exactly what registration accepted (RFC 7591 §3.2.1 allows the server to replace values).
* Server-assigned fields sent by the client (``client_id``, ``client_id_issued_at``,
  ``client_secret_expires_at``, ``registration_access_token``, ``registration_client_uri``) are
  dropped, not echoed; ``client_secret``, ``jwks`` and ``jwks_uri`` are refused (a client holds no
  secret it chose itself, and we support no key-based authentication).
* ``client_name: ""`` is treated as absent. Duplicate array entries are collapsed, order kept.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from .errors import InvalidClientMetadataError, InvalidRedirectUriError, InvalidScopeError
from .redirect_uris import validate_redirect_uri
from .scopes import format_scope, parse_scope

__all__ = [
    "DEFAULT_AUTH_METHODS",
    "MAX_FIELDS",
    "MAX_FIELD_BYTES",
    "MAX_REDIRECT_URIS",
    "ClientMetadata",
    "validate_client_metadata",
]

DEFAULT_AUTH_METHODS: tuple[str, ...] = ("none", "client_secret_post", "client_secret_basic")
MAX_FIELDS = 50
MAX_FIELD_BYTES = 4096
MAX_FIELD_NAME_LENGTH = 128
MAX_REDIRECT_URIS = 20
MAX_CLIENT_NAME_LENGTH = 200

_APPLICATION_TYPES = ("web", "native")
_GRANT_TYPES = ("authorization_code", "refresh_token")
#: RFC 8628 §3.4, accepted while ``[device] enabled`` (``device_grant``).
DEVICE_GRANT_TYPE = "urn:ietf:params:oauth:grant-type:device_code"
_RESPONSE_TYPES = ("code",)
_URI_FIELDS = ("client_uri", "logo_uri", "tos_uri", "policy_uri")
_STRING_FIELDS = ("software_id", "software_version")
_FORBIDDEN_FIELDS = ("client_secret", "jwks", "jwks_uri")
_SERVER_ASSIGNED_FIELDS = frozenset(
    {
        "client_id",
        "client_id_issued_at",
        "client_secret_expires_at",
        "registration_access_token",
        "registration_client_uri",
    }
)
_KNOWN_FIELDS = frozenset(
    {
        "redirect_uris",
        "token_endpoint_auth_method",
        "grant_types",
        "response_types",
        "application_type",
        "client_name",
        "scope",
    }
)
# Bidi overrides and other format characters (Cf) let a name render as something else on the
# consent page; line and paragraph separators break its layout.
_FORBIDDEN_NAME_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def _str_tuple(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values)


def _pair_tuple(values: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    return tuple((key, value) for key, value in values)


@attrs.frozen(kw_only=True)
class ClientMetadata:
    """Validated registration metadata (RFC 7591 §2). A record that exists passed
    ``validate_client_metadata``; construct it only through that function.

    ``extra`` holds informational and unknown fields as ``(name, json.dumps(value,
    sort_keys=True))`` pairs sorted by name, so the record stays hashable and comparable.
    """

    redirect_uris: tuple[str, ...] = attrs.field(converter=_str_tuple)
    token_endpoint_auth_method: str
    grant_types: tuple[str, ...] = attrs.field(converter=_str_tuple)
    response_types: tuple[str, ...] = attrs.field(converter=_str_tuple)
    application_type: str
    client_name: str | None
    scope: tuple[str, ...] = attrs.field(converter=_str_tuple)
    extra: tuple[tuple[str, str], ...] = attrs.field(converter=_pair_tuple)

    def to_json_dict(self) -> dict[str, Any]:
        """All registered metadata, for the RFC 7591 §3.2.1 response (arrays as lists)."""
        result: dict[str, Any] = {name: json.loads(encoded) for name, encoded in self.extra}
        result.update(
            redirect_uris=list(self.redirect_uris),
            token_endpoint_auth_method=self.token_endpoint_auth_method,
            grant_types=list(self.grant_types),
            response_types=list(self.response_types),
            application_type=self.application_type,
        )
        if self.client_name is not None:
            result["client_name"] = self.client_name
        if self.scope:
            # RFC 7591 §2: "scope" is a space-separated string, not an array.
            result["scope"] = format_scope(self.scope)
        return result


def _fail(description: str) -> InvalidClientMetadataError:
    # Descriptions name the field, never the value: values are attacker-chosen.
    return InvalidClientMetadataError(description)


#: ``json.dumps(value, sort_keys=True, ...)`` builds an encoder per call; these are built once.
_SORTED = json.JSONEncoder(sort_keys=True)
_SORTED_STRICT = json.JSONEncoder(sort_keys=True, allow_nan=False)


def encode_echo(echo: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """The metadata a client record keeps (``Client.metadata``): each value as sorted-key JSON."""
    return tuple((k, _SORTED.encode(v)) for k, v in echo.items())


def _encode(name: str, value: object) -> str:
    try:
        encoded = _SORTED_STRICT.encode(value)
    except (TypeError, ValueError, RecursionError):
        raise _fail(f"{name} is not a JSON value") from None
    if len(encoded.encode("utf-8")) > MAX_FIELD_BYTES:
        raise _fail(f"{name} is too large")
    return encoded


def _string_list(raw: Mapping[str, Any], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    if name not in raw:
        return default
    value = raw[name]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _fail(f"{name} must be an array of strings")
    return tuple(dict.fromkeys(value))


def _optional_string(raw: Mapping[str, Any], name: str) -> str | None:
    value = raw.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _fail(f"{name} must be a string")
    return value


def _client_name(raw: Mapping[str, Any]) -> str | None:
    name = _optional_string(raw, "client_name")
    if not name:
        return None
    if len(name) > MAX_CLIENT_NAME_LENGTH:
        raise _fail("client_name is too long")
    if any(unicodedata.category(char) in _FORBIDDEN_NAME_CATEGORIES for char in name):
        raise _fail("client_name contains control or format characters")
    return name


def _application_type(raw: Mapping[str, Any], redirect_uris: Sequence[str]) -> str:
    value = _optional_string(raw, "application_type")
    if value is None:
        # Omitted: see the module docstring. The scheme test is a prefix test on purpose; the
        # URIs are then fully checked by validate_redirect_uri with the derived type.
        if all(uri.startswith("https:") for uri in redirect_uris):
            return "web"
        return "native"
    if value not in _APPLICATION_TYPES:
        raise _fail("application_type must be web or native")
    return value


# Long by nature: RFC 7591 §2 lists the members one by one; so does this, in the RFC's order, so a
# reviewer can tick them off.
def validate_client_metadata(  # noqa: C901, PLR0912, PLR0915
    raw: Mapping[str, Any],
    *,
    auth_methods: Sequence[str] = DEFAULT_AUTH_METHODS,
    supported_scopes: Sequence[str] | None = None,
    device_grant: bool = False,
) -> ClientMetadata:
    """Validate a registration request body (RFC 7591 §2, §3.1) into a ClientMetadata.

    Raises InvalidRedirectUriError for a bad redirect URI and InvalidClientMetadataError for
    anything else (RFC 7591 §3.2.2), including out-of-bounds input (spec/security.md 28).
    """
    if not isinstance(raw, Mapping):
        raise _fail("client metadata must be a JSON object")
    if len(raw) > MAX_FIELDS:
        raise _fail("too many metadata fields")
    encoded: dict[str, str] = {}
    for name, value in raw.items():
        if not isinstance(name, str) or not name or len(name) > MAX_FIELD_NAME_LENGTH:
            raise _fail("metadata field names must be short strings")
        encoded[name] = _encode(name, value)
    for name in _FORBIDDEN_FIELDS:
        if name in raw:
            raise _fail(f"{name} must not be supplied by the client")

    # redirect_uris: RFC 7591 §2 leaves it optional, but every grant we support needs one.
    if "redirect_uris" not in raw:
        raise InvalidRedirectUriError("redirect_uris is required")
    uris = raw["redirect_uris"]
    if not isinstance(uris, list) or not all(isinstance(uri, str) for uri in uris):
        raise InvalidRedirectUriError("redirect_uris must be an array of strings")
    if not uris:
        raise InvalidRedirectUriError("redirect_uris must not be empty")
    if len(uris) > MAX_REDIRECT_URIS:
        raise InvalidRedirectUriError("too many redirect_uris")
    redirect_uris = tuple(dict.fromkeys(uris))
    application_type = _application_type(raw, redirect_uris)
    for uri in redirect_uris:
        validate_redirect_uri(uri, application_type=application_type)

    # RFC 7591 §2: "If unspecified or omitted, the default is client_secret_basic".
    method = _optional_string(raw, "token_endpoint_auth_method")
    if method is None:
        method = "client_secret_basic"
    if method not in auth_methods:
        raise _fail("token_endpoint_auth_method is not supported")

    grant_types = _string_list(raw, "grant_types", ("authorization_code",))
    allowed = (*_GRANT_TYPES, DEVICE_GRANT_TYPE) if device_grant else _GRANT_TYPES
    if any(grant not in allowed for grant in grant_types):
        raise _fail("grant_types may only contain " + ", ".join(allowed))
    if "authorization_code" not in grant_types:
        raise _fail("grant_types must include authorization_code")
    response_types = _string_list(raw, "response_types", ("code",))
    # RFC 7591 §2.1: "code" goes with authorization_code; no implicit flow in OAuth 2.1.
    if response_types != _RESPONSE_TYPES:
        raise _fail("response_types must be code")

    client_name = _client_name(raw)

    scope_text = _optional_string(raw, "scope")
    try:
        scope = parse_scope(scope_text)
    except InvalidScopeError:
        raise _fail("scope is malformed") from None
    if supported_scopes is not None and any(s not in supported_scopes for s in scope):
        raise _fail("scope contains an unsupported scope")

    for name in _URI_FIELDS:
        uri = _optional_string(raw, name)
        if uri is None:
            continue
        try:
            validate_redirect_uri(uri, application_type="web")
        except InvalidRedirectUriError:
            raise _fail(f"{name} must be an https URI") from None
    for name in _STRING_FIELDS:
        _optional_string(raw, name)
    if "contacts" in raw:
        _string_list(raw, "contacts", ())

    extra = tuple(
        sorted(
            (name, value)
            for name, value in encoded.items()
            if name not in _KNOWN_FIELDS and name not in _SERVER_ASSIGNED_FIELDS
        )
    )
    return ClientMetadata(
        redirect_uris=redirect_uris,
        token_endpoint_auth_method=method,
        grant_types=grant_types,
        response_types=response_types,
        application_type=application_type,
        client_name=client_name,
        scope=scope,
        extra=extra,
    )
