"""A FastAPI app serving oauthproxy's authorization server and a route for signed-in callers.

Run: ``OAUTHPROXY_CONFIG=proxy.toml python adapters/examples/fastapi/app.py`` (``mcp_path = "/api"``)
"""

from __future__ import annotations

import os
from typing import Annotated

import uvicorn
from fastapi import Depends, FastAPI

from oauthproxy_adapters.config_file import load_settings
from oauthproxy_adapters.integrations.proxies import async_proxy
from oauthproxy_adapters.integrations.starlette import install, require_principal
from oauthproxy_core.handlers.bearer import Principal

settings = load_settings(os.environ.get("OAUTHPROXY_CONFIG", "proxy.toml"))
app = FastAPI()
install(app, async_proxy(settings))  # /.well-known/..., /register, /authorize, /token, ...


@app.get(settings.mcp_path + "/me")
async def me(
    principal: Annotated[Principal, Depends(require_principal(scopes=["mcp"]))],
) -> dict[str, str]:
    claims = dict(principal.claims)
    return {"subject": principal.subject, "login": claims.get("login", "")}


if __name__ == "__main__":
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")
