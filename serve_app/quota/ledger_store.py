"""The ledger's durable half: one SQLite file.

* ``usage``: images admitted per tenant and month (the monthly quota's counter), written
  as deltas so an old and a new ledger overlapping in a rolling restart both count;
* ``key_last_used``: when each API key was last presented;
* ``settlements``: ids of router settlements already applied, written in the same
  transaction as their counts, so a retried settlement is applied exactly once; kept
  ``SETTLEMENT_IDS_KEPT_S`` (a router sends a settlement again every fraction of a
  second until the ledger acknowledges it), then pruned;
* ``usage_log``: the metered usage rows, append-only, exported to the usage store
  past ``export_state.watermark``; pruned once exported and older than the hours
  ``GET /v1/usage`` shows;
* ``tenant_defaults``: each tenant's own detection defaults (``PUT /v1/policy``), as JSON;
* ``holds``: admissions granted to a router replica (its *origin*) that it has not yet
  reported answered (billed) or refunded; counted in ``usage`` meanwhile, so the monthly
  quota stays exact. A dead router's hold is settled from its journal and the rest
  refunded (``close_origin``); one nobody settles for ``HOLD_ABANDONED_S`` stays billed.

One connection, used from the ledger's event loop (admissions, settlements) and from the
export thread: every use holds ``_lock``, a transaction for its whole length, so one
thread's statements never land inside the other's transaction (SQLite would refuse the
second ``BEGIN``, or commit the other thread's half-done writes).
"""

from __future__ import annotations

import secrets
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from serve_app.quota.usage import UsageCounts, UsageRow

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS usage (tenant TEXT NOT NULL, month TEXT NOT NULL, "
    "images INTEGER NOT NULL, PRIMARY KEY (tenant, month))",
    "CREATE TABLE IF NOT EXISTS key_last_used (key_id TEXT PRIMARY KEY, "
    "tenant TEXT NOT NULL, last_used REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS settlements (batch_id TEXT PRIMARY KEY, applied_at REAL)",
    "CREATE TABLE IF NOT EXISTS usage_log (id INTEGER PRIMARY KEY AUTOINCREMENT, "
    "tenant TEXT NOT NULL, hour TEXT NOT NULL, model TEXT NOT NULL, "
    "requests INTEGER NOT NULL, images INTEGER NOT NULL, compute_s REAL NOT NULL, "
    "rejected INTEGER NOT NULL, errors INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS usage_log_tenant_hour ON usage_log(tenant, hour)",
    "CREATE TABLE IF NOT EXISTS export_state (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS tenant_defaults (tenant TEXT PRIMARY KEY, "
    "body TEXT NOT NULL, updated_at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS holds (origin TEXT NOT NULL, tenant TEXT NOT NULL, "
    "month TEXT NOT NULL, images INTEGER NOT NULL, updated_at REAL NOT NULL, "
    "PRIMARY KEY (origin, tenant, month))",
)

Hold = tuple[str, str, str, int]  # (origin, tenant, month, images)


class LedgerStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._lock = threading.RLock()
        self._conn.execute("PRAGMA journal_mode = WAL")
        # WAL + NORMAL: a commit survives a process crash without an fsync per commit.
        self._conn.execute("PRAGMA synchronous = NORMAL")
        for statement in _SCHEMA:
            self._conn.execute(statement)
        # Names this file's exports, so a fresh file never overwrites an older one's.
        self._conn.execute(
            "INSERT OR IGNORE INTO export_state(key, value) VALUES ('epoch', ?)",
            (time.strftime("%Y%m%d%H%M%S") + "-" + secrets.token_hex(3),),
        )

    # ---------------------------------------------------------------- defaults

    def tenant_defaults(self, tenant: str) -> str | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT body FROM tenant_defaults WHERE tenant = ?", (tenant,)
            ).fetchone()
        return None if row is None else str(row[0])

    def set_tenant_defaults(self, tenant: str, body: str) -> None:
        with self._transaction():
            self._conn.execute(
                "INSERT INTO tenant_defaults(tenant, body, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT(tenant) DO UPDATE SET body = excluded.body, "
                "updated_at = excluded.updated_at",
                (tenant, body, time.time()),
            )

    # ----------------------------------------------------------------- monthly

    def load(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        with self._lock:
            rows = self._conn.execute("SELECT tenant, month, images FROM usage").fetchall()
        for tenant, month, images in rows:
            out.setdefault(tenant, {})[month] = int(images)
        return out

    def key_last_used(self, tenant: str) -> dict[str, float]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT key_id, last_used FROM key_last_used WHERE tenant = ?", (tenant,)
            ).fetchall()
        return {key_id: float(ts) for key_id, ts in rows}

    def add(
        self,
        deltas: Sequence[tuple[str, str, int]],
        last_used: Sequence[tuple[str, str, float]] = (),
        holds: Sequence[Hold] = (),
    ) -> None:
        """Add monthly image counts, key last-used times (``(key id, tenant, epoch s)``)
        and what is held against the origins the images were granted to."""
        with self._transaction():
            self._add(deltas, last_used)
            self._conn.executemany(
                "INSERT INTO holds(origin, tenant, month, images, updated_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT(origin, tenant, month) DO UPDATE SET "
                "images = images + excluded.images, updated_at = excluded.updated_at",
                [(*hold, time.time()) for hold in holds],
            )

    def holds(self, origin: str | None = None) -> list[Hold]:
        """What is held, of one origin or of all."""
        query = "SELECT origin, tenant, month, images FROM holds"
        with self._lock:
            if origin is None:
                rows = self._conn.execute(query).fetchall()
            else:
                rows = self._conn.execute(f"{query} WHERE origin = ?", (origin,)).fetchall()
        return [(str(o), str(t), str(m), int(n)) for o, t, m, n in rows]

    def _release_hold(self, origin: str, tenant: str, month: str, images: int) -> int:
        """Take up to ``images`` off the origin's hold; returns how many were held."""
        row = self._conn.execute(
            "SELECT images FROM holds WHERE origin = ? AND tenant = ? AND month = ?",
            (origin, tenant, month),
        ).fetchone()
        taken = min(images, int(row[0])) if row else 0
        if taken:
            self._conn.execute(
                "UPDATE holds SET images = images - ?, updated_at = ? "
                "WHERE origin = ? AND tenant = ? AND month = ?",
                (taken, time.time(), origin, tenant, month),
            )
        return taken

    def close_origin(self, origin: str) -> list[tuple[str, str, int]]:
        """Refund everything still held for a router that is gone (its journal was
        settled first); returns ``(tenant, month, images)`` refunded."""
        with self._transaction():
            rows = self._conn.execute(
                "SELECT tenant, month, images FROM holds WHERE origin = ? AND images > 0",
                (origin,),
            ).fetchall()
            refunds = [(str(t), str(m), int(n)) for t, m, n in rows]
            self._add([(t, m, -n) for t, m, n in refunds], ())
            self._conn.execute("DELETE FROM holds WHERE origin = ?", (origin,))
        return refunds

    def _add(
        self, deltas: Sequence[tuple[str, str, int]], last_used: Sequence[tuple[str, str, float]]
    ) -> None:
        self._conn.executemany(
            "INSERT INTO usage(tenant, month, images) VALUES (?, ?, ?) "
            "ON CONFLICT(tenant, month) DO UPDATE SET images = images + excluded.images",
            deltas,
        )
        self._conn.executemany(
            "INSERT INTO key_last_used(key_id, tenant, last_used) VALUES (?, ?, ?) "
            "ON CONFLICT(key_id) DO UPDATE SET last_used = max(last_used, excluded.last_used)",
            last_used,
        )

    # ------------------------------------------------------------ settlements

    def apply_settlement(
        self,
        batch_id: str,
        refunds: Sequence[tuple[str, str, int]],
        last_used: Sequence[tuple[str, str, float]],
        usage: Sequence[UsageRow],
        origin: str = "",
        spent: Sequence[tuple[str, str, int]] = (),
        charged: Sequence[tuple[str, str, int]] = (),
    ) -> list[tuple[str, str, int]] | None:
        """Apply one router settlement: ``refunds`` and ``spent`` are ``(tenant, month,
        images)`` given back / answered; ``charged``, answered without a grant (added to
        the month). None (and nothing written) if already applied;
        else the refunds as applied — of an ``origin``, no more than it still held (a
        closed origin's were refunded already)."""
        with self._transaction():
            inserted = self._conn.execute(
                "INSERT OR IGNORE INTO settlements(batch_id, applied_at) VALUES (?, ?)",
                (batch_id, time.time()),
            ).rowcount
            if not inserted:
                return None
            for tenant, month, images in spent:
                self._release_hold(origin, tenant, month, images)
            if origin:
                refunds = [(t, m, self._release_hold(origin, t, m, n)) for t, m, n in refunds]
                self._conn.execute("DELETE FROM holds WHERE origin = ? AND images <= 0", (origin,))
            refunds = [(t, m, n) for t, m, n in refunds if n > 0]
            self._add([(t, m, -n) for t, m, n in refunds] + list(charged), last_used)
            self._conn.executemany(
                "INSERT INTO usage_log(tenant, hour, model, requests, images, compute_s, "
                "rejected, errors) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        r.tenant,
                        r.hour,
                        r.model,
                        r.counts.requests,
                        r.counts.images,
                        r.counts.compute_s,
                        r.counts.rejected,
                        r.counts.errors,
                    )
                    for r in usage
                ],
            )
        return refunds

    def hourly(self, tenant: str, since_hour: str) -> dict[str, UsageCounts]:
        """The tenant's usage per hour from ``since_hour`` on, all models together."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT hour, sum(requests), sum(images), sum(compute_s), sum(rejected), "
                "sum(errors) FROM usage_log WHERE tenant = ? AND hour >= ? GROUP BY hour",
                (tenant, since_hour),
            ).fetchall()
        return {
            hour: UsageCounts(int(req), int(img), float(cs), int(rej), int(err))
            for hour, req, img, cs, rej, err in rows
        }

    # ----------------------------------------------------------------- export

    @property
    def epoch(self) -> str:
        with self._lock:
            row = self._conn.execute(
                "SELECT value FROM export_state WHERE key = 'epoch'"
            ).fetchone()
        return str(row[0])

    def unexported(self, limit: int) -> tuple[int, int, list[UsageRow]]:
        """``(first id, last id, rows)`` past the watermark, at most ``limit`` rows."""
        with self._transaction():  # the watermark and the rows past it, read together
            return self._unexported(limit)

    def _unexported(self, limit: int) -> tuple[int, int, list[UsageRow]]:
        row = self._conn.execute(
            "SELECT value FROM export_state WHERE key = 'watermark'"
        ).fetchone()
        watermark = int(row[0]) if row else 0
        found = self._conn.execute(
            "SELECT id, tenant, hour, model, requests, images, compute_s, rejected, errors "
            "FROM usage_log WHERE id > ? ORDER BY id LIMIT ?",
            (watermark, limit),
        ).fetchall()
        if not found:
            return watermark, watermark, []
        rows = [
            UsageRow(t, h, m, UsageCounts(int(rq), int(im), float(cs), int(rj), int(er)))
            for _, t, h, m, rq, im, cs, rj, er in found
        ]
        return int(found[0][0]), int(found[-1][0]), rows

    def mark_exported(self, last_id: int) -> None:
        with self._transaction():
            self._conn.execute(
                "INSERT INTO export_state(key, value) VALUES ('watermark', ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (str(last_id),),
            )

    def prune(
        self, settled_before: float, hours_before: str, held_before: float = 0.0
    ) -> tuple[int, int]:
        """Forget settlement ids applied before ``settled_before`` (epoch s), usage rows
        both exported and older than ``hours_before`` (an ``hour_key``), and holds nobody
        settled since ``held_before`` (they stay billed). Returns how many settlement ids
        and usage rows went."""
        with self._transaction():
            self._conn.execute("DELETE FROM holds WHERE updated_at < ?", (held_before,))
            settlements = self._conn.execute(
                "DELETE FROM settlements WHERE applied_at < ?", (settled_before,)
            ).rowcount
            row = self._conn.execute(
                "SELECT value FROM export_state WHERE key = 'watermark'"
            ).fetchone()
            watermark = int(row[0]) if row else 0
            rows = self._conn.execute(
                "DELETE FROM usage_log WHERE id <= ? AND hour < ?", (watermark, hours_before)
            ).rowcount
        return settlements, rows

    def sizes(self) -> dict[str, int]:
        """Rows in the tables that grow with traffic."""
        with self._lock:
            settlements = self._conn.execute("SELECT count(*) FROM settlements").fetchone()
            rows = self._conn.execute("SELECT count(*) FROM usage_log").fetchone()
        return {"settlements": int(settlements[0]), "usage_log": int(rows[0])}

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _transaction(self) -> _Transaction:
        return _Transaction(self._conn, self._lock)


class _Transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on error), holding the store's lock
    from before the ``BEGIN`` to after the end."""

    def __init__(self, conn: sqlite3.Connection, lock: threading.RLock) -> None:
        self._conn, self._lock = conn, lock

    def __enter__(self) -> None:
        self._lock.acquire()
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._lock.release()
            raise

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            self._conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
        finally:
            self._lock.release()
