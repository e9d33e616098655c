"""HTTP clients that execute the core's ``HttpCall`` effects, on httpx.

One pooled client per proxy, never one per call (creating an httpx client costs milliseconds of CPU:
TLS context, pool). Each call is bounded: a timeout from the request, and a response size cap read
incrementally so an oversized body is cut off, not buffered. Transport errors become the core's
``HttpFailure`` values; nothing raises into the handler.

The request's timeout is a deadline for the whole call, not only for each network operation: httpx
applies its timeout to every read, so a server dripping one byte per second would otherwise hold the
caller for as long as it keeps dripping (up to the size cap). The async client cancels the call at
the deadline; the blocking one checks it after each chunk (a blocking read cannot be interrupted), so
it gives up at most one read timeout later.
"""

from __future__ import annotations

import asyncio
import time

import httpx

from oauthproxy_core.effects import HttpFailure, HttpRequest, HttpResponse

DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)
USER_AGENT = "oauthproxy/0.1"


def _headers(req: HttpRequest) -> list[tuple[str, str]]:
    headers = list(req.headers)
    if not any(k.lower() == "user-agent" for k, _ in headers):
        headers.append(("User-Agent", USER_AGENT))
    return headers


class SyncHttpClient:
    """Blocking executor: ``client(request) -> HttpResponse | HttpFailure``."""

    def __init__(self, *, verify: bool = True, client: httpx.Client | None = None) -> None:
        self._client = client or httpx.Client(
            limits=DEFAULT_LIMITS, verify=verify, follow_redirects=False, trust_env=False
        )

    def __call__(self, req: HttpRequest) -> HttpResponse | HttpFailure:
        deadline = time.monotonic() + req.timeout
        try:
            with self._client.stream(
                req.method,
                req.url,
                headers=_headers(req),
                content=req.body or None,
                timeout=req.timeout,
            ) as resp:
                body = bytearray()
                for chunk in resp.iter_bytes():
                    body += chunk
                    if len(body) > req.max_response_bytes:
                        return HttpFailure(reason="too_large")
                    if time.monotonic() > deadline:
                        return HttpFailure(reason="timeout")
                return HttpResponse(
                    status=resp.status_code, headers=tuple(resp.headers.items()), body=bytes(body)
                )
        except httpx.TimeoutException:
            return HttpFailure(reason="timeout")
        except (httpx.ConnectError, httpx.NetworkError):
            return HttpFailure(reason="connect")
        except httpx.HTTPError:
            return HttpFailure(reason="protocol")

    def close(self) -> None:
        self._client.close()


class AsyncHttpClient:
    """asyncio executor: ``await client(request) -> HttpResponse | HttpFailure``.

    Without ``client``, requests go straight to a pooled ``httpx.AsyncHTTPTransport`` (``transport``
    replaces it, e.g. with ``httpx.MockTransport`` in tests): the core builds complete requests and
    wants nothing ``httpx.AsyncClient`` adds on top of the transport (a cookie jar, which would carry
    one user's upstream cookies into another user's calls; redirects; auth flows; event hooks), and
    that layer is half the cost of a call. With ``client``, calls go through that client.
    """

    def __init__(
        self,
        *,
        verify: bool = True,
        client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if client is not None and transport is not None:
            raise ValueError("pass a client or a transport, not both")
        self._client = client
        self._transport = transport
        if client is None and transport is None:
            self._transport = httpx.AsyncHTTPTransport(
                verify=verify, limits=DEFAULT_LIMITS, trust_env=False
            )

    async def _send(self, transport: httpx.AsyncBaseTransport, req: HttpRequest) -> httpx.Response:
        request = httpx.Request(
            req.method,
            req.url,
            headers=_headers(req),
            content=req.body or None,
            extensions={"timeout": httpx.Timeout(req.timeout).as_dict()},
        )
        return await transport.handle_async_request(request)

    async def __call__(self, req: HttpRequest) -> HttpResponse | HttpFailure:
        # The whole call, body included, within the request's timeout (module docstring: httpx's
        # timeout bounds each read, and a dripping body would otherwise hold the call).
        try:
            async with asyncio.timeout(req.timeout):
                return await self._call(req)
        except TimeoutError:
            return HttpFailure(reason="timeout")

    async def _call(self, req: HttpRequest) -> HttpResponse | HttpFailure:
        try:
            if self._transport is not None:
                resp = await self._send(self._transport, req)
                try:
                    body = bytearray()
                    async for chunk in resp.aiter_bytes():
                        body += chunk
                        if len(body) > req.max_response_bytes:
                            return HttpFailure(reason="too_large")
                    return HttpResponse(
                        status=resp.status_code,
                        headers=tuple(resp.headers.items()),
                        body=bytes(body),
                    )
                finally:
                    await resp.aclose()
            assert self._client is not None
            async with self._client.stream(
                req.method,
                req.url,
                headers=_headers(req),
                content=req.body or None,
                timeout=req.timeout,
            ) as resp:
                body = bytearray()
                async for chunk in resp.aiter_bytes():
                    body += chunk
                    if len(body) > req.max_response_bytes:
                        return HttpFailure(reason="too_large")
                return HttpResponse(
                    status=resp.status_code, headers=tuple(resp.headers.items()), body=bytes(body)
                )
        except httpx.TimeoutException:
            return HttpFailure(reason="timeout")
        except (httpx.ConnectError, httpx.NetworkError):
            return HttpFailure(reason="connect")
        except httpx.HTTPError:
            return HttpFailure(reason="protocol")

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
        if self._transport is not None:
            await self._transport.aclose()
