"""API-key authentication: the tenant comes from the credential and nothing else.

Only sha256 digests of keys are configured. A presented key is hashed and looked
up by digest; the final equality check is ``hmac.compare_digest``. The lookup's
timing depends only on the digest, which reveals nothing usable about any key.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence

from serve_app.constants import API_KEY_MAX_CHARS, API_KEY_PREFIX
from serve_app.errors import Unauthenticated

_BUCKET_BYTES = 4
_KEY_ALPHABET = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


def hash_api_key(key: str) -> str:
    """Hex sha256 of an API key, the only form in which keys are stored."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def generate_api_key() -> str:
    """A new random key, ``yk_`` + 43 URL-safe characters (256 bits)."""
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


# RFC 6750 §2.1: the scheme (any case), one or more spaces, a b64token. ASCII only: a
# key padded with a non-breaking space or any other non-ASCII character is no match.
_BEARER = re.compile(r"bearer +([A-Za-z0-9._~+/-]+=*) *", re.ASCII | re.IGNORECASE)
_CHALLENGE = 'Bearer realm="yolo"'
INVALID_REQUEST = {"WWW-Authenticate": f'{_CHALLENGE}, error="invalid_request"'}


def bearer_token(authorization: Sequence[str]) -> str:
    """The token of the request's ``Authorization`` header values (all of them: a request
    with two is refused, whichever a proxy or framework would have picked)."""
    if not authorization:
        raise Unauthenticated("missing credential: send 'Authorization: Bearer <api key>'")
    if len(authorization) > 1:
        raise Unauthenticated(
            "more than one Authorization header: send exactly one, 'Bearer <api key>'",
            headers=INVALID_REQUEST,
        )
    found = _BEARER.fullmatch(authorization[0])
    if found is None:
        raise Unauthenticated(
            "malformed Authorization header: use 'Bearer <api key>', ASCII letters, digits "
            "and -._~+/ only",
            headers=INVALID_REQUEST,
        )
    return found.group(1)


class KeyTable:
    """Maps key digests to ``(tenant id, key id)``. ``keys_by_tenant`` maps a tenant to
    ``(key id, sha256 hex)`` pairs; ``put`` and ``remove`` change one tenant's keys in
    time proportional to that tenant's keys (the tenant directory's changes)."""

    def __init__(self, keys_by_tenant: Mapping[str, Iterable[tuple[str, str]]]) -> None:
        # Bucketed by the digest's first bytes; the full digest is then compared in
        # constant time, so no timing reveals how much of a stored digest matched.
        self._buckets: dict[bytes, list[tuple[bytes, str, str]]] = {}
        self._by_tenant: dict[str, list[bytes]] = {}
        for tenant, keys in keys_by_tenant.items():
            self.put(tenant, keys)

    def __len__(self) -> int:
        return sum(len(b) for b in self._buckets.values())

    def put(self, tenant: str, keys: Iterable[tuple[str, str]]) -> None:
        """Make ``keys`` the tenant's keys (any it had before stop working)."""
        self.remove(tenant)
        digests = []
        for key_id, digest in keys:
            raw = bytes.fromhex(digest)
            self._buckets.setdefault(raw[:_BUCKET_BYTES], []).append((raw, tenant, key_id))
            digests.append(raw)
        self._by_tenant[tenant] = digests

    def remove(self, tenant: str) -> None:
        for raw in self._by_tenant.pop(tenant, []):
            bucket = self._buckets.get(raw[:_BUCKET_BYTES], [])
            bucket[:] = [k for k in bucket if not (k[0] == raw and k[1] == tenant)]
            if not bucket:
                self._buckets.pop(raw[:_BUCKET_BYTES], None)

    def authenticate(self, key: str) -> tuple[str, str]:
        """``(tenant id, key id)`` of ``key``.

        Raises:
            Unauthenticated: The key is malformed, unknown or revoked. One message
                for all three, so a caller learns nothing from which it was.
        """
        if (
            len(key) <= API_KEY_MAX_CHARS
            and key.startswith(API_KEY_PREFIX)
            and set(key) <= _KEY_ALPHABET
        ):
            digest = hashlib.sha256(key.encode("utf-8")).digest()
            for stored, tenant, key_id in self._buckets.get(digest[:_BUCKET_BYTES], ()):
                if hmac.compare_digest(stored, digest):
                    return tenant, key_id
        raise Unauthenticated("invalid API key: check the key or ask your operator for a new one")
