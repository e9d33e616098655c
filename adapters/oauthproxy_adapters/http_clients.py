"""HTTP clients that execute the core's ``HttpCall`` effects, on httpx.

One pooled client per proxy, never one per call (creating an httpx client costs milliseconds of CPU:
TLS context, pool). Each call is bounded: a timeout from the request, and a response size cap read
incrementally so an oversized body is cut off, not buffered. Transport errors become the core's
``HttpFailure`` values; nothing raises into the handler.
"""

from __future__ import annotations

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
    """asyncio executor: ``await client(request) -> HttpResponse | HttpFailure``."""

    def __init__(self, *, verify: bool = True, client: httpx.AsyncClient | None = None) -> None:
        self._client = client or httpx.AsyncClient(
            limits=DEFAULT_LIMITS, verify=verify, follow_redirects=False, trust_env=False
        )

    async def __call__(self, req: HttpRequest) -> HttpResponse | HttpFailure:
        try:
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
        await self._client.aclose()
