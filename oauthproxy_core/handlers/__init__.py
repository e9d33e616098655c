"""One generator per endpoint of the authorization server (spec/architecture.md)."""
