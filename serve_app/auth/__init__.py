"""Auth: who is calling. API keys (hashes only), JWTs and JWKS documents of tenants'
identity providers, and the tenant table built from the router's ``user_config``."""
