"""Sub-generators that turn record operations into store effects (used with ``yield from``).

A corrupt stored value is treated as absent (``codec.CorruptRecordError``): damage can deny a flow but
never grant one.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, TypeVar

import attrs

from . import codec, domain_events
from .effects import (
    CompareAndSet,
    DeleteRecord,
    Effect,
    Emit,
    GetRecord,
    PutRecord,
    Stored,
    TakeRecord,
)
from .states import Step

T = TypeVar("T")
Gen = Generator[Effect, Any, T]


def _decode(stored: Stored | None, cls: type[T]) -> T | None:
    if stored is None:
        return None
    try:
        return codec.decode(stored.value, cls, stored.version)
    except codec.CorruptRecordError:
        return None


def load(kind: str, key: str, cls: type[T]) -> Gen[T | None]:
    stored = yield GetRecord(kind=kind, key=key)
    return _decode(stored, cls)


def take(kind: str, key: str, cls: type[T]) -> Gen[T | None]:
    stored = yield TakeRecord(kind=kind, key=key)
    return _decode(stored, cls)


def create(kind: str, key: str, record: T, ttl: int) -> Gen[T | None]:
    """Insert only if absent (compare-and-set on version 0).

    Returns the record as stored, with version 1 whatever steps it took before it was first
    persisted, or ``None`` when the key already exists.
    """
    first = attrs.evolve(record, version=1)  # type: ignore[misc]
    ok = yield CompareAndSet(
        kind=kind, key=key, expected_version=0, value=codec.encode(first), ttl=max(ttl, 1)
    )
    return first if ok else None


def put(kind: str, key: str, record: Any, ttl: int) -> Gen[None]:
    yield PutRecord(
        kind=kind, key=key, value=codec.encode(record), version=record.version, ttl=max(ttl, 1)
    )


def replace(kind: str, key: str, old: T, ttl: int, **changes: Any) -> Gen[T | None]:
    """Compare-and-set ``old`` with ``changes`` applied over ``old``'s version.

    Returns the stored record (version ``old.version + 1``), or ``None`` if another writer got there
    first (spec/architecture.md: every state change is a compare-and-set on the version). A state is
    never changed here: transitions go through ``states`` and are persisted with ``commit``.
    """
    if "state" in changes:
        raise TypeError("states are written only by oauthproxy_core.states (use commit)")
    version: int = old.version  # type: ignore[attr-defined]
    updated = attrs.evolve(old, version=version + 1, **changes)  # type: ignore[misc]
    ok = yield CompareAndSet(
        kind=kind,
        key=key,
        expected_version=version,
        value=codec.encode(updated),
        ttl=max(ttl, 1),
    )
    return updated if ok else None


def commit(kind: str, key: str, old: Any, step: Step[T], ttl: int) -> Gen[T | None]:
    """Persist what a transition returned, by compare-and-set on ``old``'s version, and tell the
    observers (``Emit``) what happened, including a change lost to a concurrent writer.

    Returns the stored record, or ``None`` if another writer changed ``old`` first.
    """
    ok = yield CompareAndSet(
        kind=kind,
        key=key,
        expected_version=old.version,
        value=codec.encode(step.record),
        ttl=max(ttl, 1),
    )
    event = domain_events.changed(step, applied=bool(ok))
    if event is not None:
        yield Emit(event=event)
    return step.record if ok else None


def delete(kind: str, key: str) -> Gen[None]:
    yield DeleteRecord(kind=kind, key=key)


def put_raw(kind: str, key: str, value: bytes, ttl: int) -> Gen[None]:
    yield PutRecord(kind=kind, key=key, value=value, version=1, ttl=max(ttl, 1))


def get_raw(kind: str, key: str) -> Gen[bytes | None]:
    stored = yield GetRecord(kind=kind, key=key)
    return None if stored is None else stored.value


def take_raw(kind: str, key: str) -> Gen[bytes | None]:
    stored = yield TakeRecord(kind=kind, key=key)
    return None if stored is None else stored.value
