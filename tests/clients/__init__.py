"""Clients: CIMD, static clients, RFC 7592 management, private_key_jwt (issue 6)."""
