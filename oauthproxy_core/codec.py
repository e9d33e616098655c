"""An explicit, versioned JSON codec for records (spec/style.md: never pickle).

The envelope is ``[SCHEMA, kind, {field: value}]``. Tuples become JSON arrays and are converted back by
the records' own converters. Decoding anything malformed raises ``CorruptRecordError``, which callers
treat as an absent record: a damaged store entry can deny service but never grant access.

Decoding is a pure function of the bytes, and records are immutable, so the codec remembers the
record behind the bytes it most recently encoded: a flow's next request usually reads back exactly
what the previous one wrote, and then skips parsing and validation. The memo is bounded and holds
nothing the store does not already hold.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

import attrs

from .records import Client, ConsentDecision, DeviceAuthorization, Grant, Transaction

SCHEMA = 1

_KINDS: dict[str, type[Any]] = {
    "client": Client,
    "tx": Transaction,
    "grant": Grant,
    "consent": ConsentDecision,
    "device": DeviceAuthorization,
}
_NAMES = {cls: kind for kind, cls in _KINDS.items()}
_FIELDS = {cls: tuple(a.name for a in attrs.fields(cls)) for cls in _KINDS.values()}
#: Fields left out of the encoding while they hold their default (the decoder restores it).
_DEFAULTS = {
    cls: {
        a.name: a.default
        for a in attrs.fields(cls)
        if a.default is not attrs.NOTHING and not isinstance(a.default, attrs.Factory)  # type: ignore[arg-type]
    }
    for cls in _KINDS.values()
}

T = TypeVar("T")
_JSON = json.JSONEncoder(separators=(",", ":"))


class CorruptRecordError(Exception):
    pass


MEMO_SIZE = 4096
_memo: dict[bytes, Any] = {}  # values are records: Client | Transaction | Grant | ConsentDecision


def encode(record: Any) -> bytes:
    cls = type(record)
    kind = _NAMES[cls]
    defaults = _DEFAULTS[cls]
    body = {}
    for name in _FIELDS[cls]:
        value = getattr(record, name)
        if name in defaults and value == defaults[name]:
            continue
        body[name] = value
    data = _JSON.encode([SCHEMA, kind, body]).encode()
    if len(_memo) >= MEMO_SIZE:
        _memo.pop(next(iter(_memo)), None)
    _memo[data] = record
    return data


def decode(data: bytes, cls: type[T], version: int | None = None) -> T:
    """Decode ``data`` as ``cls``; ``version`` (the store's) overrides the stored field."""
    hit: Any = _memo.get(data)
    if (
        hit is not None
        and type(hit) is cls
        and (version is None or getattr(hit, "version", None) == version)
    ):
        return hit
    try:
        schema, kind, body = json.loads(data)
        if schema != SCHEMA or _KINDS.get(kind) is not cls or not isinstance(body, dict):
            raise CorruptRecordError("unexpected record envelope")
        if version is not None:
            body["version"] = version
        return cls(**body)
    except CorruptRecordError:
        raise
    except (ValueError, TypeError, KeyError) as exc:
        raise CorruptRecordError(type(exc).__name__) from None
