"""API keys as the registry stores them: an id, a display prefix and a sha256.

The key itself is returned once, to be shown to the operator, and never stored.
"""

from __future__ import annotations

import secrets

from serve_app.auth.keys import generate_api_key, hash_api_key

DISPLAY_PREFIX_CHARS = 8


def generate() -> str:
    return generate_api_key()


def digest(key: str) -> str:
    return hash_api_key(key)


def new_key_id() -> str:
    return "key_" + secrets.token_hex(6)


def display_prefix(key: str) -> str:
    """Enough of the key to recognise it in a list, far too little to use it."""
    return key[:DISPLAY_PREFIX_CHARS] + "…"
