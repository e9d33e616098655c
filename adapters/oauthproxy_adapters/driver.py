"""The two drivers that run the core's handlers: one blocking, one asyncio.

A handler is a generator of effects (``oauthproxy_core.effects``). The driver executes each effect
against a store, an HTTP client and a document fetcher and sends the result back, until the handler
returns. This is the
only place where effects meet I/O, so every web framework adapter shares it (psycopg 3's pattern).

Observers (the audit log, metrics) see every effect with its result and how long it took; an
``Emit`` effect is executed by handing it to the observer alone. Timing lives here, once for both
drivers, rather than in wrappers around each store and HTTP client.

A ``FetchDocument`` (a URL a client chose: spec/security.md 23) goes only to the ``fetch`` callable, the
SSRF-safe fetcher (``oauthproxy_adapters.safe_fetch``), never to ``http``. A driver given no ``fetch``
answers ``HttpFailure(reason="refused")``: forgetting the fetcher fails closed.

A store outage (``StoreUnavailableError``) is thrown into the handler as ``TemporarilyUnavailableError``
so the core renders it like any OAuth error: 503 ``temporarily_unavailable``, never a traceback.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Generator
from typing import Any, TypeVar

from oauthproxy_core.effects import (
    CompareAndSet,
    DeleteRecord,
    Emit,
    FetchDocument,
    GetRecord,
    HttpCall,
    HttpFailure,
    HttpRequest,
    HttpResponse,
    PutRecord,
    TakeRecord,
)
from oauthproxy_core.errors import TemporarilyUnavailableError

from .stores.base import AsyncStore, StoreUnavailableError, SyncStore

T = TypeVar("T")

SyncHttp = Callable[[HttpRequest], HttpResponse | HttpFailure]
AsyncHttp = Callable[[HttpRequest], Awaitable[HttpResponse | HttpFailure]]
SyncFetch = Callable[[FetchDocument], HttpResponse | HttpFailure]
AsyncFetch = Callable[[FetchDocument], Awaitable[HttpResponse | HttpFailure]]

#: ``observe(effect, result, seconds)``: every executed effect, its result and its duration
#: (``0.0`` for ``Emit``, which does no I/O).
Observer = Callable[[Any, Any, float], None]


class UnknownEffectError(TypeError):
    pass


def _no_http(_req: HttpRequest) -> HttpResponse | HttpFailure:
    return HttpFailure(reason="connect")


def refuse_fetch(_doc: FetchDocument) -> HttpResponse | HttpFailure:
    return HttpFailure(reason="refused")


def execute_sync(
    effect: Any, store: SyncStore, http: SyncHttp, fetch: SyncFetch = refuse_fetch
) -> Any:
    t = type(effect)
    if t is GetRecord:
        return store.get(effect.kind, effect.key)
    if t is CompareAndSet:
        return store.compare_and_set(
            effect.kind, effect.key, effect.expected_version, effect.value, effect.ttl
        )
    if t is TakeRecord:
        return store.take(effect.kind, effect.key)
    if t is PutRecord:
        return store.put(effect.kind, effect.key, effect.value, effect.version, effect.ttl)
    if t is DeleteRecord:
        return store.delete(effect.kind, effect.key)
    if t is HttpCall:
        return http(effect.request)
    if t is FetchDocument:
        return fetch(effect)
    if t is Emit:
        return None
    raise UnknownEffectError(type(effect).__name__)


def run(
    handler: Generator[Any, Any, T],
    store: SyncStore,
    http: SyncHttp = _no_http,
    observe: Observer | None = None,
    fetch: SyncFetch = refuse_fetch,
) -> T:
    """Drive ``handler`` to completion with blocking I/O; ``observe`` sees each effect."""
    send: Any = None
    throw: BaseException | None = None
    clock = time.perf_counter
    while True:
        try:
            effect = handler.send(send) if throw is None else handler.throw(throw)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        throw = None
        try:
            if observe is None:
                send = execute_sync(effect, store, http, fetch)
            else:
                start = clock()
                send = execute_sync(effect, store, http, fetch)
                observe(effect, send, clock() - start)
        except StoreUnavailableError:
            send = None
            throw = TemporarilyUnavailableError(
                "storage is unavailable; retry shortly", retry_after=1
            )


async def _no_http_async(_req: HttpRequest) -> HttpResponse | HttpFailure:
    return HttpFailure(reason="connect")


async def refuse_fetch_async(_doc: FetchDocument) -> HttpResponse | HttpFailure:
    return HttpFailure(reason="refused")


async def execute_async(
    effect: Any, store: AsyncStore, http: AsyncHttp, fetch: AsyncFetch = refuse_fetch_async
) -> Any:
    t = type(effect)
    if t is GetRecord:
        return await store.get(effect.kind, effect.key)
    if t is CompareAndSet:
        return await store.compare_and_set(
            effect.kind, effect.key, effect.expected_version, effect.value, effect.ttl
        )
    if t is TakeRecord:
        return await store.take(effect.kind, effect.key)
    if t is PutRecord:
        return await store.put(effect.kind, effect.key, effect.value, effect.version, effect.ttl)
    if t is DeleteRecord:
        return await store.delete(effect.kind, effect.key)
    if t is HttpCall:
        return await http(effect.request)
    if t is FetchDocument:
        return await fetch(effect)
    if t is Emit:
        return None
    raise UnknownEffectError(type(effect).__name__)


async def run_async(
    handler: Generator[Any, Any, T],
    store: AsyncStore,
    http: AsyncHttp = _no_http_async,
    observe: Observer | None = None,
    fetch: AsyncFetch = refuse_fetch_async,
) -> T:
    """Drive ``handler`` to completion with asyncio I/O; ``observe`` sees each effect."""
    send: Any = None
    throw: BaseException | None = None
    clock = time.perf_counter
    while True:
        try:
            effect = handler.send(send) if throw is None else handler.throw(throw)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        throw = None
        try:
            if observe is None:
                send = await execute_async(effect, store, http, fetch)
            else:
                start = clock()
                send = await execute_async(effect, store, http, fetch)
                observe(effect, send, clock() - start)
        except StoreUnavailableError:
            send = None
            throw = TemporarilyUnavailableError(
                "storage is unavailable; retry shortly", retry_after=1
            )
