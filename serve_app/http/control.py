"""The calls that are not detection — ``GET /v1/usage``, ``GET`` and ``PUT /v1/policy``,
and v2's model metadata and readiness — kept from becoming a choke point shared by every
tenant.

Each goes to the one quota ledger (or would), so one tenant polling its usage in a
tight loop could queue every other tenant's admissions behind it. Each router replica
therefore lets a tenant make ``CONTROL_CALLS_PER_S`` of them per second (bursts of
``CONTROL_CALLS_BURST``; GCRA, as the ledger's own rate limits) and answers 429 with
``Retry-After`` past that, without a ledger call; and answers ``GET /v1/usage`` from a
copy up to ``USAGE_CACHE_S`` old, fetched once however many ask for it at once
(``GET /v1/policy`` is answered from the tenant-defaults cache the detection path uses).

Pure asyncio with an injected clock: unit-tested without Ray.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from serve_app.constants import CONTROL_CALLS_BURST, CONTROL_CALLS_PER_S, USAGE_CACHE_S
from serve_app.errors import QuotaExceeded

Report = dict[str, Any]


class ControlCalls:
    """Per-tenant rate limit and usage-report cache of one router replica."""

    def __init__(
        self,
        rate_per_s: float = CONTROL_CALLS_PER_S,
        burst: int = CONTROL_CALLS_BURST,
        cache_s: float = USAGE_CACHE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._interval = 1.0 / rate_per_s
        self._tolerance = burst * self._interval
        self._cache_s = cache_s
        self._clock = clock
        self._tat: dict[str, float] = {}  # tenant -> GCRA theoretical arrival time
        self._reports: dict[str, tuple[float, Report]] = {}  # tenant -> (expiry, report)
        self._fetching: dict[str, asyncio.Task[Report]] = {}

    def admit(self, tenant_id: str) -> None:
        """Count one control call of the tenant's.

        Raises:
            QuotaExceeded: Over ``CONTROL_CALLS_PER_S`` (429 with ``Retry-After``).
        """
        now = self._clock()
        tat = max(self._tat.get(tenant_id, now), now) + self._interval
        if tat - now > self._tolerance:
            wait = tat - now - self._tolerance
            raise QuotaExceeded(
                f"usage, policy and model metadata calls are limited to {CONTROL_CALLS_PER_S:g} "
                "per second per account; retry after Retry-After seconds",
                retry_after_s=max(1, math.ceil(wait)),
            )
        self._tat[tenant_id] = tat

    async def usage(self, tenant_id: str, fetch: Callable[[], Awaitable[Report]]) -> Report:
        """The tenant's usage report, at most ``USAGE_CACHE_S`` old."""
        cached = self._reports.get(tenant_id)
        if cached is not None and self._clock() < cached[0]:
            return cached[1]
        task = self._fetching.get(tenant_id)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._fetch(tenant_id, fetch))
            self._fetching[tenant_id] = task
        return await asyncio.shield(task)

    async def _fetch(self, tenant_id: str, fetch: Callable[[], Awaitable[Report]]) -> Report:
        try:
            report = await fetch()
            self._reports[tenant_id] = (self._clock() + self._cache_s, report)
            return report
        finally:
            self._fetching.pop(tenant_id, None)
