"""The control-plane store: one SQLite file, the source of truth for tenants.

Every write runs in one ``BEGIN IMMEDIATE`` transaction, so concurrent
``tenantctl`` processes serialise on the file (WAL mode, a busy timeout) and lose
nothing. Values are validated with the data plane's own pydantic models before
they are stored, so whatever the registry holds renders into a valid config.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from serve_app.config import AutoscalingSpec, DetectionPolicy, Quota, ResourceSpec, Tier
from serve_app.wire import JwtSettings, utc_iso
from tenant_registry import keys
from tenant_registry.errors import Conflict, InvalidInput, NotFound
from tenant_registry.migrations import migrate
from tenant_registry.platform import PlatformSettings
from tenant_registry.records import (
    ApiKey,
    Changes,
    ModelVersion,
    Tenant,
    TenantModel,
    validate_model_name,
    validate_name,
    validate_tenant_id,
    validated,
)
from tenant_registry.rows import (
    end_reservation,
    insert_version,
    next_version_number,
    read_tenant,
    write_policy,
    write_resources,
)

DB_ENV = "TENANTCTL_DB"
DEFAULT_DB = Path("var") / "registry.db"
BUSY_TIMEOUT_MS = 30_000
T = TypeVar("T")  # what Registry.change's write returns


def default_db_path() -> Path:
    return Path(os.environ.get(DB_ENV, str(DEFAULT_DB)))


class Registry:
    """Tenants, keys, quotas, policies, resources and model versions in SQLite."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_db_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1e3)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA foreign_keys = ON")
        migrate(self._conn)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One transaction that takes the write lock up front (no upgrade deadlocks)."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise

    def platform(self) -> PlatformSettings:
        row = self._conn.execute("SELECT value FROM platform WHERE key = 'settings'").fetchone()
        if row is None:
            return PlatformSettings()
        return PlatformSettings.model_validate_json(row["value"])

    def set_platform(self, settings: PlatformSettings) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO platform(key, value) VALUES ('settings', ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (settings.model_dump_json(),),
            )

    # ------------------------------------------------------------------- tenants

    def create_tenant(
        self,
        tenant_id: str,
        name: str,
        tier: Tier,
        default_model: tuple[str, ModelVersion] | None = None,
    ) -> Tenant:
        """Create a tenant with the platform's default quota, policy and resources and,
        if given, a first model ``(name, version)`` (the platform's default model)."""
        validate_tenant_id(tenant_id)
        name = validate_name(name)
        if tier not in ("shared", "dedicated"):
            raise InvalidInput("tier must be 'shared' or 'dedicated'")
        now = utc_iso()
        platform = self.platform()
        policy = DetectionPolicy()
        resources, autoscaling = platform.dedicated_resources, platform.dedicated_autoscaling
        with self._write() as db:
            if db.execute("SELECT 1 FROM tenants WHERE id = ?", (tenant_id,)).fetchone():
                raise Conflict(f"tenant {tenant_id!r} already exists: pick another id")
            db.execute(
                "INSERT INTO tenants(id, name, tier, status, created_at, updated_at) "
                "VALUES (?, ?, ?, 'active', ?, ?)",
                (tenant_id, name, tier, now, now),
            )
            db.execute("INSERT INTO quotas(tenant_id) VALUES (?)", (tenant_id,))
            write_policy(db, tenant_id, policy)
            write_resources(db, tenant_id, resources, autoscaling)
            if default_model is not None:
                model_name, version = default_model
                insert_version(db, tenant_id, model_name, version, activate=True)
        return self.tenant(tenant_id)

    def tenant(self, tenant_id: str) -> Tenant:
        row = self._conn.execute("SELECT * FROM tenants WHERE id = ?", (tenant_id,)).fetchone()
        if row is None:
            raise NotFound(f"no tenant {tenant_id[:40]!r}: see `tenantctl tenant list`")
        return read_tenant(self._conn, row)

    def tenants(self, tier: Tier | None = None) -> list[Tenant]:
        """Every tenant, or one ``tier``'s (the directory's Serve config: dedicated)."""
        rows = self._conn.execute(
            "SELECT * FROM tenants WHERE ?1 IS NULL OR tier = ?1 ORDER BY id", (tier,)
        ).fetchall()
        return [read_tenant(self._conn, r) for r in rows]

    def changed_since(self, seq: int) -> Changes:
        """The tenants changed after ``seq`` (recorded by triggers on every table of a
        tenant's record: migration 6), the latest change number, and who this registry is."""
        rows = self._conn.execute(
            "SELECT tenant_id, MAX(seq) AS last FROM tenant_changes WHERE seq > ? "
            "GROUP BY tenant_id ORDER BY last",
            (seq,),
        ).fetchall()
        latest = self._conn.execute("SELECT COALESCE(MAX(seq), 0) FROM tenant_changes").fetchone()
        identity = self._conn.execute("SELECT id FROM registry_identity").fetchone()
        return Changes(identity["id"], int(latest[0]), [str(r["tenant_id"]) for r in rows])

    def forget_changes(self, upto: int) -> None:
        """Drop change records up to ``upto`` (published), keeping the latest number."""
        with self._write() as db:
            db.execute(
                "DELETE FROM tenant_changes WHERE seq <= ? AND seq < (SELECT MAX(seq) "
                "FROM tenant_changes)",
                (upto,),
            )

    def find_tenant(self, tenant_id: str) -> Tenant | None:
        row = self._conn.execute("SELECT * FROM tenants WHERE id = ?", (tenant_id,)).fetchone()
        return None if row is None else read_tenant(self._conn, row)

    def _touch(self, db: sqlite3.Connection, tenant_id: str) -> None:
        cur = db.execute("UPDATE tenants SET updated_at = ? WHERE id = ?", (utc_iso(), tenant_id))
        if cur.rowcount == 0:
            raise NotFound(f"no tenant {tenant_id[:40]!r}: see `tenantctl tenant list`")

    def set_status(self, tenant_id: str, status: str) -> Tenant:
        if status not in ("active", "suspended"):
            raise InvalidInput("status must be 'active' or 'suspended'")
        with self._write() as db:
            self._touch(db, tenant_id)
            db.execute("UPDATE tenants SET status = ? WHERE id = ?", (status, tenant_id))
        return self.tenant(tenant_id)

    def set_tier(self, tenant_id: str, tier: Tier) -> Tenant:
        if tier not in ("shared", "dedicated"):
            raise InvalidInput("tier must be 'shared' or 'dedicated'")
        with self._write() as db:
            self._touch(db, tenant_id)
            db.execute("UPDATE tenants SET tier = ? WHERE id = ?", (tier, tenant_id))
        return self.tenant(tenant_id)

    def delete_tenant(self, tenant_id: str) -> None:
        with self._write() as db:
            # model_versions reference models; delete children first for clarity.
            db.execute("DELETE FROM model_versions WHERE tenant_id = ?", (tenant_id,))
            cur = db.execute("DELETE FROM tenants WHERE id = ?", (tenant_id,))
            if cur.rowcount == 0:
                raise NotFound(f"no tenant {tenant_id[:40]!r}: see `tenantctl tenant list`")

    # ---------------------------------------------------------------------- keys

    def issue_key(self, tenant_id: str) -> tuple[ApiKey, str]:
        """A new key for ``tenant_id``: the record, and the key itself (shown once)."""
        plaintext = keys.generate()
        record = ApiKey(
            key_id=keys.new_key_id(),
            tenant_id=tenant_id,
            prefix=keys.display_prefix(plaintext),
            sha256=keys.digest(plaintext),
            created_at=utc_iso(),
            revoked_at=None,
        )
        with self._write() as db:
            self._touch(db, tenant_id)
            db.execute(
                "INSERT INTO api_keys(key_id, tenant_id, prefix, sha256, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (record.key_id, tenant_id, record.prefix, record.sha256, record.created_at),
            )
        return record, plaintext

    def revoke_key(self, key_id: str) -> ApiKey:
        with self._write() as db:
            row = db.execute("SELECT * FROM api_keys WHERE key_id = ?", (key_id,)).fetchone()
            if row is None:
                raise NotFound(f"no key {key_id[:40]!r}: see `tenantctl key list TENANT`")
            if row["revoked_at"] is None:
                db.execute(
                    "UPDATE api_keys SET revoked_at = ? WHERE key_id = ?", (utc_iso(), key_id)
                )
            self._touch(db, row["tenant_id"])
        return next(k for k in self.tenant(row["tenant_id"]).keys if k.key_id == key_id)

    # -------------------------------------------------- quota, policy, resources

    def set_quota(self, tenant_id: str, **changes: Any) -> Quota:
        current = self.tenant(tenant_id).quota.model_dump()
        quota: Quota = validated(Quota, {**current, **changes}, "quota")
        with self._write() as db:
            self._touch(db, tenant_id)
            db.execute(
                "UPDATE quotas SET requests_per_s = ?, burst = ?, max_concurrent = ?, "
                "monthly_images = ? WHERE tenant_id = ?",
                (
                    quota.requests_per_s,
                    quota.burst,
                    quota.max_concurrent,
                    quota.monthly_images,
                    tenant_id,
                ),
            )
        return quota

    def set_policy(self, tenant_id: str, **changes: Any) -> DetectionPolicy:
        current = self.tenant(tenant_id).policy.model_dump()
        policy: DetectionPolicy = validated(DetectionPolicy, {**current, **changes}, "policy")
        with self._write() as db:
            self._touch(db, tenant_id)
            write_policy(db, tenant_id, policy)
        return policy

    def set_resources(self, tenant_id: str, **changes: Any) -> Tenant:
        tenant = self.tenant(tenant_id)
        resources: ResourceSpec = validated(
            ResourceSpec,
            {
                **tenant.resources.model_dump(),
                **{k: v for k, v in changes.items() if k in ResourceSpec.model_fields},
            },
            "resources",
        )
        autoscaling: AutoscalingSpec = validated(
            AutoscalingSpec,
            {
                **tenant.autoscaling.model_dump(),
                **{k: v for k, v in changes.items() if k in AutoscalingSpec.model_fields},
            },
            "autoscaling",
        )
        with self._write() as db:
            self._touch(db, tenant_id)
            write_resources(db, tenant_id, resources, autoscaling)
        return self.tenant(tenant_id)

    # ----------------------------------------------------------------------- jwt

    def set_jwt(self, tenant_id: str, **values: Any) -> JwtSettings:
        """Set the tenant's identity provider (issuer, audience, algorithms, public keys
        and/or JWKS URL)."""
        current = self.tenant(tenant_id).jwt
        merged = {**(current.model_dump() if current else {}), **values}
        settings: JwtSettings = validated(JwtSettings, merged, "jwt settings")
        with self._write() as db:
            self._touch(db, tenant_id)
            other = db.execute(
                "SELECT tenant_id FROM jwt_settings WHERE issuer = ? AND tenant_id != ?",
                (settings.issuer, tenant_id),
            ).fetchone()
            if other:
                raise Conflict("that issuer belongs to another tenant: each tenant needs its own")
            db.execute(
                "INSERT INTO jwt_settings"
                "(tenant_id, issuer, audience, algorithms, public_keys, jwks_url) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(tenant_id) DO UPDATE SET "
                "issuer = excluded.issuer, audience = excluded.audience, "
                "algorithms = excluded.algorithms, public_keys = excluded.public_keys, "
                "jwks_url = excluded.jwks_url",
                (
                    tenant_id,
                    settings.issuer,
                    settings.audience,
                    json.dumps(settings.algorithms),
                    json.dumps(settings.public_keys_pem),
                    settings.jwks_url,
                ),
            )
        return settings

    def clear_jwt(self, tenant_id: str) -> None:
        with self._write() as db:
            self._touch(db, tenant_id)
            db.execute("DELETE FROM jwt_settings WHERE tenant_id = ?", (tenant_id,))

    # -------------------------------------------------------------------- models

    def add_model_version(
        self, tenant_id: str, model: str, version: ModelVersion, *, activate: bool = False
    ) -> TenantModel:
        """Record a version (and end its reservation, if ``reserve_version`` made one)."""
        validate_model_name(model)
        with self._write() as db:
            self._touch(db, tenant_id)
            insert_version(db, tenant_id, model, version, activate=activate)
            end_reservation(db, tenant_id, model, version.version)
        return self.model(tenant_id, model)

    def change(self, tenant_id: str, write: Callable[[sqlite3.Connection], T]) -> T:
        """``write`` in one transaction, as a change of the tenant (published by apply)."""
        with self._write() as db:
            self._touch(db, tenant_id)
            return write(db)

    def next_version(self, tenant_id: str, model: str) -> int:
        """The number after every recorded and reserved version of the model."""
        return next_version_number(self._conn, tenant_id, model)

    def reserve_version(self, tenant_id: str, model: str) -> int:
        """Take the next version number for an upload in progress: a concurrent push
        gets the one after, so no two pushes write the same version's files. The
        reservation ends when the version is recorded (``add_model_version``) or
        released; a push that crashed leaves its number unused, never reused."""
        validate_model_name(model)
        with self._write() as db:
            number = next_version_number(db, tenant_id, model)
            db.execute(
                "INSERT INTO model_version_reservations(tenant_id, model, version, reserved_at) "
                "VALUES (?, ?, ?, ?)",
                (tenant_id, model, number, utc_iso()),
            )
        return number

    def release_version(self, tenant_id: str, model: str, version: int) -> None:
        """Give back a reserved number whose upload failed (nothing was recorded)."""
        with self._write() as db:
            end_reservation(db, tenant_id, model, version)

    def model(self, tenant_id: str, model: str) -> TenantModel:
        found = next((m for m in self.tenant(tenant_id).models if m.name == model), None)
        if found is None:
            raise NotFound(f"tenant {tenant_id!r} has no model {model[:40]!r}: see `model list`")
        return found

    def activate(self, tenant_id: str, model: str, version: int) -> TenantModel:
        current = self.model(tenant_id, model)
        if version not in {v.version for v in current.versions}:
            known = ", ".join(str(v.version) for v in current.versions)
            raise NotFound(f"{tenant_id}/{model} has no version {version} (versions: {known})")
        if version != current.active_version:
            with self._write() as db:
                self._touch(db, tenant_id)
                db.execute(
                    "UPDATE models SET previous_version = active_version, active_version = ? "
                    "WHERE tenant_id = ? AND name = ?",
                    (version, tenant_id, model),
                )
        return self.model(tenant_id, model)

    def rollback(self, tenant_id: str, model: str) -> TenantModel:
        """Re-activate the version that was active before the current one."""
        current = self.model(tenant_id, model)
        if current.previous_version is None:
            raise Conflict(
                f"{tenant_id}/{model} has no earlier active version: use `model activate`"
            )
        return self.activate(tenant_id, model, current.previous_version)
