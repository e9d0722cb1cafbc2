"""``QuotaLedger``: one replica that every router replica asks before forwarding.

Holds each tenant's GCRA state, concurrency leases and monthly image counts (the
arithmetic is in ``quota.py``). Monthly usage is written to a SQLite file every
``LEDGER_FLUSH_S`` and on shutdown, and read back on start, so a restart neither
forgets billed usage nor resets anyone's monthly quota (at most the last flush
interval of usage is lost on a hard crash).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ray import serve

from serve_app.config import Quota
from serve_app.constants import KEY_ID_PREFIX, LEDGER_FLUSH_S
from serve_app.quota import Decision, TenantState, admit, grant, month_key, refund, release

logger = logging.getLogger("ray.serve")


class UsageStore:
    """Monthly image counts in SQLite (the ledger's durable half)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS usage (tenant TEXT NOT NULL, month TEXT NOT NULL, "
            "images INTEGER NOT NULL, PRIMARY KEY (tenant, month))"
        )
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS key_last_used (key_id TEXT PRIMARY KEY, "
            "tenant TEXT NOT NULL, last_used REAL NOT NULL)"
        )

    def load(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for tenant, month, images in self._conn.execute("SELECT tenant, month, images FROM usage"):
            out.setdefault(tenant, {})[month] = int(images)
        return out

    def key_last_used(self, tenant: str) -> dict[str, float]:
        rows = self._conn.execute(
            "SELECT key_id, last_used FROM key_last_used WHERE tenant = ?", (tenant,)
        )
        return {key_id: float(ts) for key_id, ts in rows}

    def add(
        self, deltas: list[tuple[str, str, int]], last_used: Sequence[tuple[str, str, float]] = ()
    ) -> None:
        """Add image counts and key last-used times (``(key id, tenant, epoch s)``).

        Deltas, not totals: during a rolling restart the old and the new ledger both
        write, and both sets of increments must survive; last-used keeps the later time.
        """
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            self._conn.executemany(
                "INSERT INTO usage(tenant, month, images) VALUES (?, ?, ?) "
                "ON CONFLICT(tenant, month) DO UPDATE SET images = images + excluded.images",
                deltas,
            )
            self._conn.executemany(
                "INSERT INTO key_last_used(key_id, tenant, last_used) VALUES (?, ?, ?) "
                "ON CONFLICT(key_id) DO UPDATE SET "
                "last_used = max(last_used, excluded.last_used)",
                last_used,
            )
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self._conn.close()


@serve.deployment(num_replicas=1, max_ongoing_requests=1000, ray_actor_options={"num_cpus": 0.1})
class QuotaLedger:
    """Cluster-wide admission control. Exactly one replica: it is the source of truth."""

    def __init__(self, state_path: str) -> None:
        self._store = UsageStore(Path(state_path))
        self._tenants: dict[str, TenantState] = {}
        for tenant, months in self._store.load().items():
            self._tenants[tenant] = TenantState(monthly=dict(months))
        self._pending: dict[tuple[str, str], int] = {}
        self._pending_keys: dict[str, tuple[str, float]] = {}  # key id -> (tenant, epoch s)
        self._flusher: asyncio.Task[None] | None = None
        logger.info("ledger: restored usage of %d tenants from %s", len(self._tenants), state_path)

    def _state(self, tenant: str) -> TenantState:
        return self._tenants.setdefault(tenant, TenantState())

    def _start(self) -> None:
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())

    def _count(self, tenant: str, month: str, images: int) -> None:
        key = (tenant, month)
        self._pending[key] = self._pending.get(key, 0) + images

    async def admit(self, tenant: str, quota: Quota, images: int = 1) -> Decision:
        """One request, with a concurrency lease to ``release`` (capped tenants)."""
        self._start()
        now = time.time()
        # The router's Quota arrives already validated (frozen, from its user_config).
        decision = admit(self._state(tenant), quota, images, time.monotonic(), now)
        if decision.allowed:
            self._count(tenant, month_key(now), images)
        return decision

    async def grant(self, tenant: str, quota: Quota, want: int) -> Decision:
        """Up to ``want`` admissions at once, for a router's local allowance."""
        self._start()
        decision = grant(self._state(tenant), quota, want, time.monotonic(), time.time())
        if decision.allowed:
            self._count(tenant, decision.month, decision.granted)
        return decision

    async def settle(
        self,
        refunds: list[tuple[str, Quota, int, str]],
        key_uses: dict[str, tuple[str, float]],
    ) -> None:
        """What a router reports in the background: unspent allowances
        ``(tenant, quota, unused, month)`` and when each API key was last presented."""
        self._start()
        now = time.monotonic()
        for tenant, quota, unused, month in refunds:
            refund(self._state(tenant), quota, unused, month, now)
            self._count(tenant, month, -unused)
        for key_id, (tenant, ts) in key_uses.items():
            if key_id.startswith(KEY_ID_PREFIX):
                previous = self._pending_keys.get(key_id, (tenant, 0.0))[1]
                self._pending_keys[key_id] = (tenant, max(ts, previous))

    async def release(self, tenant: str, lease_id: str) -> None:
        release(self._state(tenant), lease_id)

    async def key_last_used(self, tenant: str) -> dict[str, float]:
        """Epoch seconds each of ``tenant``'s API keys was last presented."""
        used = self._store.key_last_used(tenant)
        for key_id, (owner, ts) in self._pending_keys.items():
            if owner == tenant:
                used[key_id] = max(ts, used.get(key_id, 0.0))
        return used

    async def usage(self, tenant: str) -> dict[str, Any]:
        state = self._state(tenant)
        return {"monthly_images": dict(state.monthly), "in_flight": len(state.leases)}

    def flush(self) -> int:
        """Persist the usage counted since the last flush; returns how many rows."""
        pending, self._pending = self._pending, {}
        keys, self._pending_keys = self._pending_keys, {}
        rows = [(t, m, n) for (t, m), n in pending.items()]
        used = [(key_id, t, ts) for key_id, (t, ts) in keys.items()]
        try:
            if rows or used:
                self._store.add(rows, used)
        except BaseException:
            for (t, m), n in pending.items():  # keep them for the next try
                self._pending[(t, m)] = self._pending.get((t, m), 0) + n
            for key_id, value in keys.items():
                self._pending_keys.setdefault(key_id, value)
            raise
        return len(rows)

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(LEDGER_FLUSH_S)
            try:
                self.flush()
            except sqlite3.Error as exc:  # keep counting; the next flush retries
                logger.error("ledger: usage flush failed: %s", exc)

    def __del__(self) -> None:
        # Graceful shutdown (redeploy, scale-down): persist what the loop has not yet.
        with contextlib.suppress(Exception):
            self.flush()
            self._store.close()
