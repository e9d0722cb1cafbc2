"""``QuotaLedger``: the replica that every router replica asks before forwarding.

Holds each tenant's GCRA state, concurrency leases and monthly image counts (the
arithmetic is in ``quota.py``). Monthly counts are written to a SQLite file
(``ledger_store.py``) in the same call that admits (one small WAL transaction per
grant), and read back on start, so even a hard crash neither forgets usage nor resets
anyone's monthly quota.

Routers' settlements (metered usage, refunds, key use) are applied exactly once, in
one transaction each, and the metered usage is exported as append-only JSON lines to
the usage store (``file://`` or ``s3://``) every ``USAGE_EXPORT_S`` and on shutdown.

Two deployments run this class on the file: the primary and a warm standby. Only the one
holding the file's lock (``leadership.py``) answers; the other raises ``NotLeader`` and
the routers ask it only once the leader is gone (``failover.py``). Taking over reads
the monthly counts from the file, as a restart would, but in milliseconds in a process
that is already up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any

from ray import serve

from serve_app.blobs import open_store
from serve_app.config import Quota, StoreSettings
from serve_app.constants import (
    HOLD_ABANDONED_S,
    KEY_ID_PREFIX,
    LEDGER_HEALTH_CHECK_PERIOD_S,
    SERVE_LOGGING,
    SETTLEMENT_IDS_KEPT_S,
    USAGE_EXPORT_MAX_ROWS,
    USAGE_EXPORT_S,
    USAGE_REPORT_HOURS,
)
from serve_app.quota.gcra import (
    Decision,
    TenantState,
    admit,
    grant,
    month_key,
    refund,
    release,
    seconds_to_next_month,
)
from serve_app.quota.leadership import Leadership, NotLeader
from serve_app.quota.ledger_models import LedgerModels
from serve_app.quota.ledger_store import LedgerStore
from serve_app.quota.model_book import ModelBook
from serve_app.quota.usage import Settlement, hour_key, usage_lines
from serve_app.uploads_spec import UploadsSpec
from serve_app.wire import TenantDefaults

logger = logging.getLogger("ray.serve")


@serve.deployment(
    num_replicas=1,
    max_ongoing_requests=1000,
    health_check_period_s=LEDGER_HEALTH_CHECK_PERIOD_S,
    ray_actor_options={"num_cpus": 0.1},
    logging_config=SERVE_LOGGING,
)
class QuotaLedger(LedgerModels):
    """Cluster-wide admission control, and tenants' own model versions
    (``ledger_models.py``). One replica per deployment, and of the primary and the
    standby only the leader acts: it is the source of truth."""

    def __init__(
        self,
        state_path: str,
        usage_uri: str = "file://var/usage",
        store_settings: StoreSettings | None = None,
        uploads: UploadsSpec | None = None,
    ) -> None:
        self._store = LedgerStore(Path(state_path))
        self._book = ModelBook(Path(state_path))
        self._uploads = uploads or UploadsSpec()
        self._models_init()
        self._usage_uri = usage_uri.rstrip("/")
        self._store_settings = store_settings or StoreSettings()
        self._state_path = state_path
        self._leadership = Leadership(Path(state_path))
        self._tenants: dict[str, TenantState] = {}
        self._exporter: asyncio.Task[None] | None = None

    def _state(self, tenant: str) -> TenantState:
        return self._tenants.setdefault(tenant, TenantState())

    async def take_over(self, expected_epoch: str | None = None) -> str:
        """Lead, if the lock is free, and return this file's epoch.

        ``expected_epoch``: the file the previous leader had. A standby placed where it
        sees another file (another node's disk) refuses, rather than serve an empty
        ledger: nobody's monthly usage may reset.

        Raises:
            NotLeader: Another live replica holds the file, or this is another file.
        """
        if not self._leadership.held:
            epoch = self._store.epoch
            if expected_epoch is not None and epoch != expected_epoch:
                logger.error("ledger: standby sees ledger file %s, the leader had %s; not "
                             "taking over (place both where state_path is the same file)",
                             epoch, expected_epoch)  # fmt: skip
                raise NotLeader("this ledger replica sees another ledger file")
            if not self._leadership.acquire():
                raise NotLeader("another ledger replica holds the ledger file")
            # Whatever the last leader wrote, committed before it died, is in the file.
            self._tenants = {
                tenant: TenantState(monthly=dict(months))
                for tenant, months in self._store.load().items()
            }
            self._exporter = asyncio.get_running_loop().create_task(self._export_loop())
            self._resume_validations()
            logger.info("ledger: leading; restored usage of %d tenants from %s",
                        len(self._tenants), self._state_path)  # fmt: skip
        return self._store.epoch

    async def _start(self) -> None:
        """Every call acts only as the leader (taking over if nobody leads)."""
        if not self._leadership.held:
            await self.take_over()

    def _count(self, tenant: str, month: str, images: int, origin: str) -> None:
        # Durable before the router hears "yes": a crash right after cannot undercount.
        # Held against the origin until it says which were answered.
        held = [(origin, tenant, month, images)] if origin else []
        self._store.add([(tenant, month, images)], holds=held)

    async def admit(self, tenant: str, quota: Quota, images: int = 1, origin: str = "") -> Decision:
        """One request, with a concurrency lease to ``release`` (capped tenants)."""
        await self._start()
        # The router's Quota arrives already validated (frozen, from its user_config).
        decision = admit(self._state(tenant), quota, images, time.monotonic(), time.time())
        if decision.allowed:
            self._count(tenant, decision.month, images, origin)
        return decision

    async def grant(self, tenant: str, quota: Quota, want: int, origin: str = "") -> Decision:
        """Up to ``want`` admissions at once, for a router's local allowance."""
        await self._start()
        decision = grant(self._state(tenant), quota, want, time.monotonic(), time.time())
        if decision.allowed:
            self._count(tenant, decision.month, decision.granted, origin)
        return decision

    async def settle(self, settlement: Settlement) -> bool:
        """Apply a router's settlement exactly once; True if it was new.

        Its answered admissions, refunds and key uses are written in the same
        transaction as its batch id, so a retry after a lost answer changes nothing.
        """
        await self._start()
        now = time.monotonic()
        quotas = {t: q for t, q, _n, _m in settlement.refunds}
        uses = [(k, t, ts) for k, t, ts in settlement.key_uses if k.startswith(KEY_ID_PREFIX)]
        applied = self._store.apply_settlement(
            settlement.batch_id,
            [(t, month, unused) for t, _q, unused, month in settlement.refunds],
            uses,
            settlement.usage,
            settlement.origin,
            settlement.spent,
            settlement.charged,
        )
        if applied is None:
            return False
        for tenant, month, images in applied:
            refund(self._state(tenant), quotas[tenant], images, month, now)
        for tenant, month, images in settlement.charged:
            monthly = self._state(tenant).monthly
            monthly[month] = monthly.get(month, 0) + images
        return True

    async def close_origin(self, origin: str) -> int:
        """A router replica died and its journal was settled: refund what it still held
        (granted, never answered). Returns the images refunded; 0 for a closed origin."""
        await self._start()
        refunded = self._store.close_origin(origin)
        for tenant, month, images in refunded:
            monthly = self._state(tenant).monthly
            monthly[month] = max(0, monthly.get(month, 0) - images)
        if refunded:
            logger.info("ledger: refunded %d images held by a router that died",
                        sum(n for _t, _m, n in refunded))  # fmt: skip
        return sum(n for _t, _m, n in refunded)

    async def usage_report(self, tenant: str, quota: Quota) -> dict[str, Any]:
        """Body of ``GET /v1/usage``: this month's images, the quota left, the last hours."""
        await self._start()
        now = time.time()
        month = month_key(now)
        used = self._state(tenant).monthly.get(month, 0)
        since = hour_key(now - (USAGE_REPORT_HOURS - 1) * 3600)
        hours = self._store.hourly(tenant, since)
        remaining = None
        if quota.monthly_images is not None:
            remaining = max(0, quota.monthly_images - used)
        return {
            "month": month,
            "images_this_month": used,
            "monthly_quota": quota.monthly_images,
            "remaining": remaining,
            "resets_in_s": round(seconds_to_next_month(now)),
            "hours": [
                {"hour": h, "requests": c.requests, "images": c.images,
                 "compute_s": round(c.compute_s, 3), "rejected": c.rejected,
                 "errors": c.errors}
                for h, c in sorted(hours.items())
            ],
        }  # fmt: skip

    def export_usage(self) -> int:
        """Write metered rows past the watermark to the usage store; returns how many.

        File names carry this ledger file's epoch and the id range, so an export
        repeated after a crash (before the watermark moved) rewrites the same files
        with the same lines: nothing is counted twice. Only the leader exports.
        """
        if not self._leadership.held:
            raise NotLeader("only the leading ledger replica exports usage")
        first, last, rows = self._store.unexported(USAGE_EXPORT_MAX_ROWS)
        if not rows:
            return 0
        by_month: dict[str, list[Any]] = {}
        for row in rows:
            by_month.setdefault(row.hour[:7], []).append(row)
        for month, month_rows in by_month.items():
            store = open_store(f"{self._usage_uri}/{month}", self._store_settings)
            name = f"{self._store.epoch}-{first:012d}-{last:012d}.jsonl"
            store.write(name, "".join(usage_lines(month_rows)).encode())
        self._store.mark_exported(last)
        return len(rows)

    async def _export_loop(self) -> None:
        while True:
            await asyncio.sleep(USAGE_EXPORT_S)
            try:
                while await asyncio.to_thread(self.export_usage) == USAGE_EXPORT_MAX_ROWS:
                    pass
            except Exception as exc:  # the store is down: the rows wait in SQLite
                logger.error("ledger: usage export failed: %s", exc)
            await asyncio.to_thread(self.prune, time.time())

    def prune(self, now: float) -> tuple[int, int]:
        """Forget old settlement ids and exported usage rows past the report window."""
        window_start = hour_key(now - USAGE_REPORT_HOURS * 3600)
        return self._store.prune(now - SETTLEMENT_IDS_KEPT_S, window_start, now - HOLD_ABANDONED_S)

    async def tenant_defaults(self, tenant: str) -> TenantDefaults | None:
        """The tenant's own detection defaults, if it saved any."""
        await self._start()
        body = self._store.tenant_defaults(tenant)
        return None if body is None else TenantDefaults.model_validate_json(body)

    async def set_tenant_defaults(self, tenant: str, defaults: TenantDefaults) -> None:
        """Save them (the router checked them against the operator's bounds)."""
        await self._start()
        self._store.set_tenant_defaults(tenant, defaults.model_dump_json())

    async def release(self, tenant: str, lease_id: str) -> None:
        await self._start()
        release(self._state(tenant), lease_id)

    async def key_last_used(self, tenant: str) -> dict[str, float]:
        """Epoch seconds each of ``tenant``'s API keys was last presented."""
        await self._start()
        return self._store.key_last_used(tenant)

    async def usage(self, tenant: str) -> dict[str, Any]:
        await self._start()
        state = self._state(tenant)
        return {"monthly_images": dict(state.monthly), "in_flight": len(state.leases)}

    def __del__(self) -> None:
        # Graceful shutdown (redeploy, scale-down): export what the loop has not yet,
        # then let the other replica (or the new version) lead.
        if self._leadership.held:
            try:
                while self.export_usage() == USAGE_EXPORT_MAX_ROWS:
                    pass
            except Exception as exc:
                logger.error("ledger: usage export on shutdown failed: %s", exc)
        with contextlib.suppress(Exception):
            self._store.close()
            self._book.close()
        self._leadership.release()
