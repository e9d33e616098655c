"""Adapters: the I/O side of oauthproxy (stores, HTTP clients, web frameworks, CLI)."""
