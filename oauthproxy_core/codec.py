"""An explicit, versioned JSON codec for records (STYLE.md: never pickle).

The envelope is ``[SCHEMA, kind, {field: value}]``. Tuples become JSON arrays and are converted back by
the records' own converters. Decoding anything malformed raises ``CorruptRecordError``, which callers
treat as an absent record: a damaged store entry can deny service but never grant access.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

import attrs

from .records import Client, ConsentDecision, Grant, Transaction

SCHEMA = 1

_KINDS: dict[str, type[Any]] = {
    "client": Client,
    "tx": Transaction,
    "grant": Grant,
    "consent": ConsentDecision,
}
_NAMES = {cls: kind for kind, cls in _KINDS.items()}
_FIELDS = {cls: tuple(a.name for a in attrs.fields(cls)) for cls in _KINDS.values()}

T = TypeVar("T")


class CorruptRecordError(Exception):
    pass


def encode(record: Any) -> bytes:
    cls = type(record)
    kind = _NAMES[cls]
    body = {name: getattr(record, name) for name in _FIELDS[cls]}
    return json.dumps([SCHEMA, kind, body], separators=(",", ":")).encode()


def decode(data: bytes, cls: type[T], version: int | None = None) -> T:
    """Decode ``data`` as ``cls``; ``version`` (the store's) overrides the stored field."""
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
