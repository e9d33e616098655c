"""A Flask app serving oauthproxy's authorization server and a view for signed-in callers.

Run: ``OAUTHPROXY_CONFIG=proxy.toml python adapters/examples/flask/app.py`` (``mcp_path = "/api"``)
"""

from __future__ import annotations

import os

from flask import Flask, g

from oauthproxy_adapters.config_file import load_settings
from oauthproxy_adapters.integrations.flask import oauthproxy_blueprint, require_oauth
from oauthproxy_adapters.integrations.proxies import sync_proxy

settings = load_settings(os.environ.get("OAUTHPROXY_CONFIG", "proxy.toml"))
app = Flask(__name__)
app.register_blueprint(oauthproxy_blueprint(sync_proxy(settings)))


@app.get(settings.mcp_path + "/me")
@require_oauth(["mcp"])
def me() -> dict[str, str]:
    principal = g.oauthproxy_principal
    return {"subject": principal.subject, "login": dict(principal.claims).get("login", "")}


if __name__ == "__main__":
    app.run(host=settings.host, port=settings.port)  # Werkzeug's development server, threaded
