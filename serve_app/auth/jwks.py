"""Verification keys published by a tenant's identity provider as a JWKS document.

A ``JwksCache`` per URL, shared by every tenant table a router builds, so a
``reconfigure()`` does not throw the keys away. Its fetches are bounded:

* a document is fresh for ``JWKS_CACHE_TTL_S`` and then refetched on next use;
* a token naming a ``kid`` the document lacks (a key rotation) triggers at most one
  refetch per ``JWKS_MIN_REFETCH_S`` per URL, however many such tokens arrive, so a
  flood of made-up ``kid``s costs the identity provider nothing;
* concurrent callers share one fetch (a task, not a lock held across the network: a
  token whose keys are known is never held up by a refresh, which runs in the
  background); the whole fetch has a deadline, ``JWKS_FETCH_TIMEOUT_S`` (an IdP that
  trickles its document is cut off); a failed fetch keeps the last good keys for up to
  ``JWKS_MAX_STALE_S`` (an IdP blip does not lock every user out);
* URLs are logged without their query string (it may carry a secret).

Only asymmetric signing keys are taken from the document (``RSA``, ``EC``, ``OKP``,
``use`` absent or ``sig``, ``alg`` absent or allowlisted): an ``oct`` (HMAC) key in a
JWKS must never become something a token can be "verified" with.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from serve_app.constants import (
    JWKS_CACHE_TTL_S,
    JWKS_FETCH_TIMEOUT_S,
    JWKS_MAX_BYTES,
    JWKS_MAX_KEYS,
    JWKS_MAX_STALE_S,
    JWKS_MIN_REFETCH_S,
)

logger = logging.getLogger("ray.serve")

ASYMMETRIC_KEY_TYPES = frozenset({"RSA", "EC", "OKP"})
Fetch = Callable[[str], Awaitable[bytes]]
Clock = Callable[[], float]


class JwksError(Exception):
    """The document could not be fetched or is not a JWKS."""


def parse_jwks(document: bytes, algorithms: frozenset[str]) -> dict[str | None, Any]:
    """Usable verification keys of a JWKS document, by ``kid`` (``None`` for keys without).

    Raises:
        JwksError: The document is not JSON with a ``keys`` list.
    """
    from jwt import PyJWK
    from jwt.exceptions import PyJWTError

    try:
        data = json.loads(document)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise JwksError(f"not JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise JwksError("no 'keys' list")
    keys: dict[str | None, Any] = {}
    for jwk in data["keys"][:JWKS_MAX_KEYS]:
        if not isinstance(jwk, dict) or jwk.get("kty") not in ASYMMETRIC_KEY_TYPES:
            continue
        alg = jwk.get("alg")
        if jwk.get("use", "sig") != "sig" or (alg is not None and alg not in algorithms):
            continue
        try:
            key = PyJWK(jwk).key
        except (PyJWTError, ValueError, TypeError):  # a key that does not parse is skipped
            continue
        kid = jwk.get("kid")
        keys[str(kid) if kid is not None else None] = key
    return keys


async def http_fetch(url: str) -> bytes:
    """GET ``url`` without blocking the event loop, bounded in time and size.

    Redirects are not followed: the URL was checked when the config was validated
    (https, or http to loopback), and a redirect could lead anywhere.
    """
    import httpx

    try:
        async with (
            httpx.AsyncClient(timeout=JWKS_FETCH_TIMEOUT_S, follow_redirects=False) as client,
            client.stream("GET", url, headers={"Accept": "application/json"}) as response,
        ):
            if response.status_code != 200:
                raise JwksError(f"fetch failed: HTTP {response.status_code}")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > JWKS_MAX_BYTES:
                    raise JwksError(f"document larger than {JWKS_MAX_BYTES} bytes")
    except httpx.HTTPError as exc:  # its text names the URL, query string and all
        raise JwksError(f"fetch failed: {type(exc).__name__}") from None
    return bytes(body)


def loggable(url: str) -> str:
    """``url`` without its query string and fragment (which may carry a secret)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


@dataclass
class JwksCache:
    """The keys of one JWKS URL, refreshed within the bounds above."""

    url: str
    algorithms: frozenset[str]
    fetch: Fetch = http_fetch
    clock: Clock = time.monotonic
    fetches: int = 0
    _keys: dict[str | None, Any] = field(default_factory=dict)
    _fetched_at: float | None = None  # last good document
    _attempted_at: float | None = None  # last attempt, good or not
    _inflight: asyncio.Task[None] | None = None

    async def keys_for(self, kid: str | None) -> list[Any]:
        """Keys a token with this ``kid`` may verify against (all of them if no kid)."""
        unknown = kid is not None and kid not in self._keys
        if (
            self._fetched_at is None
            or unknown
            or self.clock() - self._fetched_at >= JWKS_CACHE_TTL_S
        ):
            refresh = self._refresh()
            if refresh is not None and (self._fetched_at is None or unknown):
                await asyncio.shield(refresh)  # this token needs the answer
        if self._fetched_at is not None and self.clock() - self._fetched_at > JWKS_MAX_STALE_S:
            return []
        if kid is None:
            return list(self._keys.values())
        key = self._keys.get(kid)
        return [] if key is None else [key]

    def _refresh(self) -> asyncio.Task[None] | None:
        """The fetch in flight, or a new one unless the last attempt was under
        ``JWKS_MIN_REFETCH_S`` ago (then None)."""
        if self._inflight is not None and not self._inflight.done():
            return self._inflight
        now = self.clock()
        if self._attempted_at is not None and now - self._attempted_at < JWKS_MIN_REFETCH_S:
            return None
        self._attempted_at = now
        self.fetches += 1
        self._inflight = asyncio.get_running_loop().create_task(self._load())
        return self._inflight

    async def _load(self) -> None:
        try:
            async with asyncio.timeout(JWKS_FETCH_TIMEOUT_S):  # the whole fetch
                document = await self.fetch(self.url)
            keys = parse_jwks(document, self.algorithms)
        except (JwksError, TimeoutError) as exc:
            reason = str(exc) or f"no document within {JWKS_FETCH_TIMEOUT_S:g} s"
            logger.error("jwks: %s: %s", loggable(self.url), reason)
            return
        self._keys, self._fetched_at = keys, self.clock()
        logger.info("jwks: %s: %d usable keys", loggable(self.url), len(keys))


class JwksPool:
    """One ``JwksCache`` per URL, kept across tenant-table rebuilds."""

    def __init__(self, fetch: Fetch = http_fetch, clock: Clock = time.monotonic) -> None:
        self._fetch = fetch
        self._clock = clock
        self._caches: dict[tuple[str, frozenset[str]], JwksCache] = {}

    def get(self, url: str, algorithms: frozenset[str]) -> JwksCache:
        key = (url, algorithms)
        cache = self._caches.get(key)
        if cache is None:
            cache = JwksCache(url, algorithms, fetch=self._fetch, clock=self._clock)
            self._caches[key] = cache
        return cache

    def retain(self, keys: set[tuple[str, frozenset[str]]]) -> None:
        """Forget caches no tenant uses any more."""
        self._caches = {k: v for k, v in self._caches.items() if k in keys}
