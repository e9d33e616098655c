"""oauthproxy inside the frameworks people already use, one small module each.

Every module here is a thin shell around the same ``Proxy`` / ``AsyncProxy`` (``..proxy``): the
authorization server's endpoints are answered by the sans-IO core, bearer tokens are checked by the
core's verifier (``oauthproxy_core.handlers.bearer``), and a failed check is answered with the core's
exact ``WWW-Authenticate`` challenge (RFC 6750 §3, RFC 9728 §5.1). None of them repeats protocol logic.

- ``proxies``: build a ``Proxy`` / ``AsyncProxy`` from the ``proxy.toml`` settings of ``oauthproxy serve``.
- ``starlette``: Starlette and FastAPI: the endpoints as routes, ``install(app, proxy)``, and the
  ``require_principal(scopes=...)`` dependency.
- ``fastmcp``: ``FastMCP("name", auth=OAuthProxyAuth(proxy))`` (or ``OAuthProxyAuth.from_config``),
  an ``AuthProvider`` replacing FastMCP's own OAuth proxy with this one.
- the `mcp` SDK's server is served by ``..mcp_sdk``: ``protect(server, proxy)`` returns its
  streamable-HTTP app with the authorization server beside it and its MCP path protected.
- ``flask``: a blueprint serving the endpoints and the ``@require_oauth(scopes)`` decorator.
- ``django``: ``path("", include(oauthproxy_urls(proxy)))`` and the ``@oauth_required`` decorator.

Each framework is an optional dependency: importing this package imports none of them.
"""
