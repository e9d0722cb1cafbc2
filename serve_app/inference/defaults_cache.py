"""A router's short-lived copy of each tenant's own detection defaults.

The defaults (``PUT /v1/policy``) are kept by the quota ledger, shared by every router
replica. Each router keeps a copy per tenant for ``TENANT_DEFAULTS_TTL_S``, so a change
made through any replica is in force everywhere within that time. Only a tenant's
first request waits for the ledger: after that an expired copy is answered while one
shared task refreshes it, so the hot path never waits on the ledger.

The fetch is injected, so this is unit-tested with a fake ledger and a fake clock.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable

from serve_app.constants import LEDGER_TIMEOUT_S, TENANT_DEFAULTS_TTL_S
from serve_app.wire import TenantDefaults

logger = logging.getLogger("ray.serve")
Fetch = Callable[[str], Awaitable[TenantDefaults | None]]


class TenantDefaultsCache:
    """Tenant id -> its defaults (None: it saved none), refreshed in the background."""

    def __init__(
        self,
        fetch: Fetch,
        ttl_s: float = TENANT_DEFAULTS_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._ttl_s = ttl_s
        self._clock = clock
        self._entries: dict[str, tuple[float, TenantDefaults | None]] = {}
        self._refreshing: dict[str, asyncio.Task[TenantDefaults | None]] = {}

    async def get(self, tenant_id: str) -> TenantDefaults | None:
        cached = self._entries.get(tenant_id)
        if cached is not None and self._clock() < cached[0]:
            return cached[1]
        task = self._refreshing.get(tenant_id)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._refresh(tenant_id, cached))
            self._refreshing[tenant_id] = task
            task.add_done_callback(functools.partial(self._done, tenant_id))
        if cached is not None:
            return cached[1]
        return await asyncio.shield(task)

    def put(self, tenant_id: str, defaults: TenantDefaults | None) -> None:
        """What this replica just saved: in force here at once."""
        self._entries[tenant_id] = (self._clock() + self._ttl_s, defaults)

    def _done(self, tenant_id: str, _: object) -> None:
        self._refreshing.pop(tenant_id, None)

    async def _refresh(
        self, tenant_id: str, cached: tuple[float, TenantDefaults | None] | None
    ) -> TenantDefaults | None:
        try:
            async with asyncio.timeout(LEDGER_TIMEOUT_S):
                found = await self._fetch(tenant_id)
        except Exception as exc:
            # Admission needs the ledger too and fails closed; here the last copy (kept
            # for another TTL) or the operator's defaults will do.
            logger.warning("router: tenant defaults unavailable: %s", type(exc).__name__)
            found = None if cached is None else cached[1]
        self.put(tenant_id, found)
        return found
