"""The ledger's record of tenants' own model versions, activations and rollouts.

Kept in the ledger's SQLite file (its own connection; the standby that takes over
opens the same file), so a ledger restart or failover forgets no upload, activation or
rollout total:

* ``model_versions``: one row per uploaded version (a deleted one stays, marked, so
  version numbers are never reused and deletions still count against the hourly limit);
* ``activations``: a stack per model of the tenant's own activations, each with the
  operator's active version it replaced (``over``); a rollback pops one;
* ``rollouts``: one per candidate, with its request, state and running totals (pairs,
  agreement sum, the most recent latencies of each side).

Only the ledger's event loop uses it (each method is one short transaction).
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from serve_app.constants import ROLLOUT_LATENCY_SAMPLES
from serve_app.errors import Conflict, QuotaExceeded, UnknownModel
from serve_app.inference.catalog import NO_SUCH_MODEL
from serve_app.models.rollout import Rollout, RolloutRequest, RolloutState, judge, p95
from serve_app.models.versions import ModelState, TenantModels, VersionRecord, VersionStatus
from serve_app.uploads_spec import UploadsSpec
from serve_app.wire import utc_iso

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS model_versions (tenant TEXT NOT NULL, model TEXT NOT NULL, "
    "version INTEGER NOT NULL, status TEXT NOT NULL, reason TEXT, sha256 TEXT NOT NULL, "
    "size_bytes INTEGER NOT NULL, metrics TEXT NOT NULL DEFAULT '{}', "
    "created_at REAL NOT NULL, deleted INTEGER NOT NULL DEFAULT 0, "
    "PRIMARY KEY (tenant, model, version))",
    "CREATE TABLE IF NOT EXISTS activations (id INTEGER PRIMARY KEY AUTOINCREMENT, "
    "tenant TEXT NOT NULL, model TEXT NOT NULL, version INTEGER NOT NULL, "
    "over INTEGER NOT NULL, at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS rollouts (tenant TEXT NOT NULL, model TEXT NOT NULL, "
    "version INTEGER NOT NULL, request TEXT NOT NULL, over INTEGER NOT NULL, "
    "state TEXT NOT NULL, images INTEGER NOT NULL DEFAULT 0, "
    "agreement_sum REAL NOT NULL DEFAULT 0, incumbent_ms TEXT NOT NULL DEFAULT '[]', "
    "candidate_ms TEXT NOT NULL DEFAULT '[]', map50 TEXT NOT NULL DEFAULT '{}', "
    "reason TEXT, started_at REAL NOT NULL, "
    "decided_at REAL, PRIMARY KEY (tenant, model, version))",
)
HOUR_S = 3600.0


class ModelBook:
    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        for statement in _SCHEMA:
            self._db.execute(statement)

    def close(self) -> None:
        self._db.close()

    # ------------------------------------------------------------ versions

    def begin(
        self, tenant: str, model: str, floor: int, sha256: str, size: int, spec: UploadsSpec
    ) -> int:
        """Record a new upload as ``validating`` and return its version number: above
        ``floor`` (the operator's highest version of the model) and every upload's.

        Raises:
            QuotaExceeded: Over the uploads per hour, or the versions kept per model.
        """
        now = time.time()
        with self._db:
            (recent,) = self._db.execute(
                "SELECT COUNT(*) FROM model_versions WHERE tenant = ? AND created_at > ?",
                (tenant, now - HOUR_S),
            ).fetchone()
            if recent >= spec.per_hour:
                raise QuotaExceeded(
                    f"at most {spec.per_hour} model uploads per hour; retry after "
                    "Retry-After seconds",
                    reason="uploads_per_hour",
                    retry_after_s=self._next_slot(tenant, now),
                )
            (kept,) = self._db.execute(
                "SELECT COUNT(*) FROM model_versions WHERE tenant = ? AND model = ? "
                "AND deleted = 0",
                (tenant, model),
            ).fetchone()
            if kept >= spec.max_versions:
                raise QuotaExceeded(
                    f"model {model!r} already keeps {kept} uploaded versions, the most "
                    "allowed: DELETE one you no longer need, then upload again",
                    reason="versions_kept",
                    retry_after_s=60,
                )
            (top,) = self._db.execute(
                "SELECT MAX(version) FROM model_versions WHERE tenant = ? AND model = ?",
                (tenant, model),
            ).fetchone()
            version = max(floor, top or 0) + 1
            self._db.execute(
                "INSERT INTO model_versions (tenant, model, version, status, sha256, "
                "size_bytes, created_at) VALUES (?, ?, ?, 'validating', ?, ?, ?)",
                (tenant, model, version, sha256, size, now),
            )
        return version

    def _next_slot(self, tenant: str, now: float) -> int:
        (oldest,) = self._db.execute(
            "SELECT MIN(created_at) FROM model_versions WHERE tenant = ? AND created_at > ?",
            (tenant, now - HOUR_S),
        ).fetchone()
        return max(1, int((oldest or now) + HOUR_S - now) + 1)

    def finish(
        self,
        tenant: str,
        model: str,
        version: int,
        status: VersionStatus,
        reason: str | None = None,
        metrics: dict[str, float] | None = None,
    ) -> None:
        with self._db:
            self._db.execute(
                "UPDATE model_versions SET status = ?, reason = ?, metrics = ? "
                "WHERE tenant = ? AND model = ? AND version = ?",
                (status, reason, json.dumps(metrics or {}), tenant, model, version),
            )

    def record(self, tenant: str, model: str, version: int) -> VersionRecord:
        """One version's record (404 for a deleted one, or another tenant's)."""
        row = self._db.execute(
            "SELECT status, reason, sha256, size_bytes, metrics, created_at FROM "
            "model_versions WHERE tenant = ? AND model = ? AND version = ? AND deleted = 0",
            (tenant, model, version),
        ).fetchone()
        if row is None:
            raise UnknownModel(NO_SUCH_MODEL)
        status, reason, sha256, size, metrics, created = row
        return VersionRecord(
            version=version, status=status, reason=reason, sha256=sha256, size_bytes=size,
            created_at=utc_iso(created), metrics=json.loads(metrics),
            rollout=self.rollout(tenant, model, version),
        )  # fmt: skip

    def uploaded(self, tenant: str, model: str) -> list[VersionRecord]:
        rows = self._db.execute(
            "SELECT version FROM model_versions WHERE tenant = ? AND model = ? AND deleted = 0 "
            "ORDER BY version",
            (tenant, model),
        ).fetchall()
        return [self.record(tenant, model, v) for (v,) in rows]

    def validating(self) -> list[tuple[str, str, int, str]]:
        """``(tenant, model, version, sha256)`` of every version still being validated."""
        return self._db.execute(
            "SELECT tenant, model, version, sha256 FROM model_versions "
            "WHERE status = 'validating' AND deleted = 0"
        ).fetchall()

    def delete(self, tenant: str, model: str, version: int, over: int) -> None:
        """Mark a version deleted and stop its rollout.

        Raises:
            Conflict: It is the version the tenant's activation put in force (over the
                operator's ``over``): whatever a router's copy says, the ledger decides.
        """
        self.record(tenant, model, version)  # 404 if it is not there
        if self.active(tenant, model, over) == version:
            raise Conflict(
                f"version {version} is the active version: activate another one (or roll "
                "back) first"
            )
        with self._db:
            self._db.execute(
                "UPDATE model_versions SET deleted = 1 WHERE tenant = ? AND model = ? "
                "AND version = ?",
                (tenant, model, version),
            )
            self._db.execute(
                "DELETE FROM activations WHERE tenant = ? AND model = ? AND version = ?",
                (tenant, model, version),
            )
            self._end_rollout(tenant, model, version, "stopped", "stopped: the version was deleted")

    # ------------------------------------------------------------ activations

    def active(self, tenant: str, model: str, over: int) -> int | None:
        """The version the tenant's latest activation over ``over`` put in force."""
        row = self._db.execute(
            "SELECT version FROM activations WHERE tenant = ? AND model = ? AND over = ? "
            "ORDER BY id DESC LIMIT 1",
            (tenant, model, over),
        ).fetchone()
        return None if row is None else int(row[0])

    def activate(self, tenant: str, model: str, version: int, over: int) -> None:
        with self._db:
            self._db.execute(
                "INSERT INTO activations (tenant, model, version, over, at) VALUES (?, ?, ?, ?, ?)",
                (tenant, model, version, over, time.time()),
            )

    def rollback(self, tenant: str, model: str, over: int) -> None:
        """Undo the tenant's latest activation still in force over ``over``.

        Raises:
            Conflict: Nothing the tenant activated is in force.
        """
        with self._db:
            row = self._db.execute(
                "SELECT id FROM activations WHERE tenant = ? AND model = ? AND over = ? "
                "ORDER BY id DESC LIMIT 1",
                (tenant, model, over),
            ).fetchone()
            if row is None:
                raise Conflict(
                    f"nothing to roll back: model {model!r} answers with the version your "
                    "operator set; activate one of your versions instead"
                )
            self._db.execute("DELETE FROM activations WHERE id = ?", row)

    # ------------------------------------------------------------ rollouts

    def start_rollout(
        self,
        tenant: str,
        model: str,
        version: int,
        request: RolloutRequest,
        over: int,
        map50: dict[str, float] | None = None,
    ) -> None:
        """Start (or restart, from zero) a rollout; any other of the model's stops.
        ``map50`` (candidate's and incumbent's on the candidate's samples): a candidate
        that does worse is stopped at once and rejected."""
        with self._db:
            for (other,) in self._db.execute(
                "SELECT version FROM rollouts WHERE tenant = ? AND model = ? AND version != ? "
                "AND state IN ('running', 'paused')",
                (tenant, model, version),
            ).fetchall():
                self._end_rollout(
                    tenant, model, other, "stopped", f"stopped: version {version} rolled out"
                )
            self._db.execute(
                "INSERT OR REPLACE INTO rollouts (tenant, model, version, request, over, state, "
                "map50, started_at) VALUES (?, ?, ?, ?, ?, 'running', ?, ?)",
                (tenant, model, version, request.model_dump_json(), over,
                 json.dumps(map50 or {}), time.time()),
            )  # fmt: skip
            if map50 and map50["candidate"] < map50["incumbent"]:
                reason = (
                    f"stopped: mAP50 {map50['candidate']:.3f} on your samples is below the "
                    f"active version's {map50['incumbent']:.3f}"
                )
                self._end_rollout(tenant, model, version, "stopped", reason)
                self._db.execute(
                    "UPDATE model_versions SET status = 'rejected', reason = ? "
                    "WHERE tenant = ? AND model = ? AND version = ?",
                    (reason, tenant, model, version),
                )

    def pause(self, tenant: str, model: str, paused: bool) -> int:
        """Pause (or resume) the model's rollout; how many changed."""
        before, after = ("running", "paused") if paused else ("paused", "running")
        with self._db:
            return self._db.execute(
                "UPDATE rollouts SET state = ? WHERE tenant = ? AND model = ? AND state = ?",
                (after, tenant, model, before),
            ).rowcount

    def observe(
        self,
        tenant: str,
        model: str,
        version: int,
        pairs: list[tuple[float, float, float]],
    ) -> tuple[RolloutState, str] | None:
        """Add ``(agreement, incumbent_ms, candidate_ms)`` pairs to a running rollout and
        apply the gate; what it decided, if it did (a promotion is also an activation)."""
        with self._db:
            row = self._db.execute(
                "SELECT request, over, images, agreement_sum, incumbent_ms, candidate_ms "
                "FROM rollouts WHERE tenant = ? AND model = ? AND version = ? "
                "AND state = 'running'",
                (tenant, model, version),
            ).fetchone()
            if row is None:
                return None  # paused, ended, or gone: late pairs are dropped
            request = RolloutRequest.model_validate_json(row[0])
            images = row[2] + len(pairs)
            agreement_sum = row[3] + sum(p[0] for p in pairs)
            incumbent = (json.loads(row[4]) + [p[1] for p in pairs])[-ROLLOUT_LATENCY_SAMPLES:]
            candidate = (json.loads(row[5]) + [p[2] for p in pairs])[-ROLLOUT_LATENCY_SAMPLES:]
            self._db.execute(
                "UPDATE rollouts SET images = ?, agreement_sum = ?, incumbent_ms = ?, "
                "candidate_ms = ? WHERE tenant = ? AND model = ? AND version = ?",
                (images, agreement_sum, json.dumps(incumbent), json.dumps(candidate),
                 tenant, model, version),
            )  # fmt: skip
            decision = judge(request, images, agreement_sum, incumbent, candidate)
            if decision is None:
                return None
            self._end_rollout(tenant, model, version, *decision)
            if decision[0] == "promoted":
                self._db.execute(
                    "INSERT INTO activations (tenant, model, version, over, at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (tenant, model, version, row[1], time.time()),
                )
            else:
                self._db.execute(
                    "UPDATE model_versions SET status = 'rejected', reason = ? "
                    "WHERE tenant = ? AND model = ? AND version = ?",
                    (decision[1], tenant, model, version),
                )
        return decision

    def _end_rollout(
        self, tenant: str, model: str, version: int, state: RolloutState, reason: str
    ) -> None:
        self._db.execute(
            "UPDATE rollouts SET state = ?, reason = ?, decided_at = ? WHERE tenant = ? "
            "AND model = ? AND version = ? AND state IN ('running', 'paused')",
            (state, reason, time.time(), tenant, model, version),
        )

    def rollout(self, tenant: str, model: str, version: int) -> Rollout | None:
        row = self._db.execute(
            "SELECT request, state, images, agreement_sum, incumbent_ms, candidate_ms, reason, "
            "started_at, decided_at, map50 FROM rollouts WHERE tenant = ? AND model = ? "
            "AND version = ?",
            (tenant, model, version),
        ).fetchone()
        if row is None:
            return None
        request, state, images, agreement_sum, incumbent, candidate, reason, started, ended = row[
            :9
        ]
        return Rollout(
            **RolloutRequest.model_validate_json(request).model_dump(),
            state=state,
            images=images,
            agreement=round(agreement_sum / images, 4) if images else None,
            p95_ms={
                "incumbent": round(p95(json.loads(incumbent)), 2),
                "candidate": round(p95(json.loads(candidate)), 2),
            },
            reason=reason,
            map50=json.loads(row[9]),
            started_at=utc_iso(started),
            decided_at=utc_iso(ended) if ended else None,
        )

    def running(self) -> list[tuple[str, str, int, Rollout]]:
        """Every rollout not yet decided: ``(tenant, model, version, rollout)``."""
        rows = self._db.execute(
            "SELECT tenant, model, version FROM rollouts WHERE state IN ('running', 'paused')"
        ).fetchall()
        found = [(t, m, v, self.rollout(t, m, v)) for t, m, v in rows]
        return [(t, m, v, r) for t, m, v, r in found if r is not None]

    # ------------------------------------------------------------ the router's view

    def state(self, tenant: str) -> TenantModels:
        """What a router lays over the tenant's catalog."""
        models: dict[str, dict[str, Any]] = {}
        for model, version in self._db.execute(
            "SELECT model, version FROM model_versions WHERE tenant = ? AND status = 'ready' "
            "AND deleted = 0 ORDER BY version",
            (tenant,),
        ):
            models.setdefault(model, {"ready": []}).setdefault("ready", []).append(version)
        for model, version, over in self._db.execute(
            "SELECT model, version, over FROM activations WHERE tenant = ? ORDER BY id", (tenant,)
        ):
            models.setdefault(model, {}).update(active=version, over=over)
        for model, version, request in self._db.execute(
            "SELECT model, version, request FROM rollouts WHERE tenant = ? AND state = 'running'",
            (tenant,),
        ):
            spec = RolloutRequest.model_validate_json(request)
            models.setdefault(model, {}).update(
                rollout=version, mode=spec.mode, percent=spec.percent
            )
        return TenantModels(models={m: ModelState(**fields) for m, fields in models.items()})

    def tenants(self) -> list[str]:
        """Every tenant with an upload, an activation or a rollout."""
        rows = self._db.execute(
            "SELECT tenant FROM model_versions UNION SELECT tenant FROM activations "
            "UNION SELECT tenant FROM rollouts"
        ).fetchall()
        return [t for (t,) in rows]
