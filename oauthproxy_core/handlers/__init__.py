"""One generator per endpoint of the authorization server (ARCHITECTURE.md)."""
