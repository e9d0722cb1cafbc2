"""The control-plane store: one SQLite file, the source of truth for tenants.

Every write runs in one ``BEGIN IMMEDIATE`` transaction, so concurrent
``tenantctl`` processes serialise on the file (WAL mode, a busy timeout) and lose
nothing. Values are validated with the data plane's own pydantic models before
they are stored, so whatever the registry holds renders into a valid config.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from serve_app.config import (
    AutoscalingSpec,
    DetectionPolicy,
    Quota,
    ResourceSpec,
    Tier,
)
from serve_app.constants import MODEL_NAME_PATTERN, TENANT_ID_PATTERN
from serve_app.wire import JwtSettings, utc_iso
from tenant_registry import keys
from tenant_registry.errors import Conflict, InvalidInput, NotFound
from tenant_registry.migrations import migrate
from tenant_registry.platform import PlatformSettings

DB_ENV = "TENANTCTL_DB"
DEFAULT_DB = Path("var") / "registry.db"
BUSY_TIMEOUT_MS = 30_000
MAX_NAME_CHARS = 128
_TENANT_ID_RE = re.compile(TENANT_ID_PATTERN)
_MODEL_NAME_RE = re.compile(MODEL_NAME_PATTERN)


def default_db_path() -> Path:
    return Path(os.environ.get(DB_ENV, str(DEFAULT_DB)))


def validate_tenant_id(tenant_id: str) -> str:
    if not _TENANT_ID_RE.fullmatch(tenant_id):
        raise InvalidInput(
            f"invalid tenant id {tenant_id[:40]!r}: use 2-32 characters, lowercase letters, "
            "digits and '-', starting with a letter (e.g. acme-eu)"
        )
    return tenant_id


def validate_name(name: str) -> str:
    if not name.strip() or len(name) > MAX_NAME_CHARS or not name.isprintable():
        raise InvalidInput(
            f"invalid tenant name: use 1-{MAX_NAME_CHARS} printable characters (no newlines)"
        )
    return name.strip()


def validate_model_name(name: str) -> str:
    if not _MODEL_NAME_RE.fullmatch(name):
        raise InvalidInput(
            f"invalid model name {name[:40]!r}: lowercase letters, digits, '_' and '-', "
            "starting with a letter"
        )
    return name


def _validated(model: type[Any], values: dict[str, Any], what: str) -> Any:
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or what}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidInput(f"invalid {what}: {problems}") from None


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    tenant_id: str
    prefix: str
    sha256: str
    created_at: str
    revoked_at: str | None


@dataclass(frozen=True)
class ModelVersion:
    version: int
    uri: str
    architecture: str
    sha256: str
    created_at: str


@dataclass(frozen=True)
class TenantModel:
    name: str
    active_version: int | None
    previous_version: int | None
    is_default: bool
    versions: tuple[ModelVersion, ...]


@dataclass(frozen=True)
class Tenant:
    id: str
    name: str
    tier: Tier
    status: str
    created_at: str
    updated_at: str
    quota: Quota
    policy: DetectionPolicy
    resources: ResourceSpec
    autoscaling: AutoscalingSpec
    keys: tuple[ApiKey, ...] = field(default_factory=tuple)
    models: tuple[TenantModel, ...] = field(default_factory=tuple)
    jwt: JwtSettings | None = None

    def active_keys(self) -> list[ApiKey]:
        return sorted((k for k in self.keys if k.revoked_at is None), key=lambda k: k.key_id)


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

    # ------------------------------------------------------------------ platform

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
            self._store_policy(db, tenant_id, policy)
            self._store_resources(db, tenant_id, resources, autoscaling)
            if default_model is not None:
                model_name, version = default_model
                self._insert_version(db, tenant_id, model_name, version, activate=True)
        return self.tenant(tenant_id)

    def tenant(self, tenant_id: str) -> Tenant:
        row = self._conn.execute("SELECT * FROM tenants WHERE id = ?", (tenant_id,)).fetchone()
        if row is None:
            raise NotFound(f"no tenant {tenant_id[:40]!r}: see `tenantctl tenant list`")
        return self._load(row)

    def tenants(self) -> list[Tenant]:
        rows = self._conn.execute("SELECT * FROM tenants ORDER BY id").fetchall()
        return [self._load(r) for r in rows]

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
        quota: Quota = _validated(Quota, {**current, **changes}, "quota")
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
        policy: DetectionPolicy = _validated(DetectionPolicy, {**current, **changes}, "policy")
        with self._write() as db:
            self._touch(db, tenant_id)
            self._store_policy(db, tenant_id, policy)
        return policy

    def set_resources(self, tenant_id: str, **changes: Any) -> Tenant:
        tenant = self.tenant(tenant_id)
        resources: ResourceSpec = _validated(
            ResourceSpec,
            {
                **tenant.resources.model_dump(),
                **{k: v for k, v in changes.items() if k in ResourceSpec.model_fields},
            },
            "resources",
        )
        autoscaling: AutoscalingSpec = _validated(
            AutoscalingSpec,
            {
                **tenant.autoscaling.model_dump(),
                **{k: v for k, v in changes.items() if k in AutoscalingSpec.model_fields},
            },
            "autoscaling",
        )
        with self._write() as db:
            self._touch(db, tenant_id)
            self._store_resources(db, tenant_id, resources, autoscaling)
        return self.tenant(tenant_id)

    @staticmethod
    def _store_policy(db: sqlite3.Connection, tenant_id: str, policy: DetectionPolicy) -> None:
        classes = json.dumps(policy.allowed_classes) if policy.allowed_classes is not None else None
        db.execute(
            "INSERT INTO policies(tenant_id, conf, min_conf, iou, max_det, allowed_classes, "
            "max_imgsz) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(tenant_id) DO UPDATE SET "
            "conf = excluded.conf, min_conf = excluded.min_conf, iou = excluded.iou, "
            "max_det = excluded.max_det, allowed_classes = excluded.allowed_classes, "
            "max_imgsz = excluded.max_imgsz",
            (
                tenant_id,
                policy.conf,
                policy.min_conf,
                policy.iou,
                policy.max_det,
                classes,
                policy.max_imgsz,
            ),
        )

    @staticmethod
    def _store_resources(
        db: sqlite3.Connection, tenant_id: str, resources: ResourceSpec, scaling: AutoscalingSpec
    ) -> None:
        db.execute(
            "INSERT INTO resources(tenant_id, num_cpus, num_gpus, min_replicas, max_replicas, "
            "target_ongoing_requests) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(tenant_id) DO UPDATE "
            "SET num_cpus = excluded.num_cpus, num_gpus = excluded.num_gpus, "
            "min_replicas = excluded.min_replicas, max_replicas = excluded.max_replicas, "
            "target_ongoing_requests = excluded.target_ongoing_requests",
            (
                tenant_id,
                resources.num_cpus,
                resources.num_gpus,
                scaling.min_replicas,
                scaling.max_replicas,
                scaling.target_ongoing_requests,
            ),
        )

    # ----------------------------------------------------------------------- jwt

    def set_jwt(self, tenant_id: str, **values: Any) -> JwtSettings:
        """Set the tenant's identity provider (issuer, audience, algorithms, public keys
        and/or JWKS URL)."""
        current = self.tenant(tenant_id).jwt
        merged = {**(current.model_dump() if current else {}), **values}
        settings: JwtSettings = _validated(JwtSettings, merged, "jwt settings")
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
        validate_model_name(model)
        with self._write() as db:
            self._touch(db, tenant_id)
            self._insert_version(db, tenant_id, model, version, activate=activate)
        return self.model(tenant_id, model)

    def next_version(self, tenant_id: str, model: str) -> int:
        row = self._conn.execute(
            "SELECT MAX(version) AS v FROM model_versions WHERE tenant_id = ? AND model = ?",
            (tenant_id, model),
        ).fetchone()
        return int(row["v"] or 0) + 1

    @staticmethod
    def _insert_version(
        db: sqlite3.Connection, tenant_id: str, model: str, version: ModelVersion, *, activate: bool
    ) -> None:
        db.execute(
            "INSERT INTO models(tenant_id, name) VALUES (?, ?) ON CONFLICT DO NOTHING",
            (tenant_id, model),
        )
        if db.execute(
            "SELECT 1 FROM model_versions WHERE tenant_id = ? AND model = ? AND version = ?",
            (tenant_id, model, version.version),
        ).fetchone():
            raise Conflict(f"{tenant_id}/{model} already has version {version.version}")
        db.execute(
            "INSERT INTO model_versions(tenant_id, model, version, uri, architecture, sha256, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                tenant_id,
                model,
                version.version,
                version.uri,
                version.architecture,
                version.sha256,
                version.created_at,
            ),
        )
        row = db.execute(
            "SELECT active_version FROM models WHERE tenant_id = ? AND name = ?", (tenant_id, model)
        ).fetchone()
        if activate or row["active_version"] is None:
            db.execute(
                "UPDATE models SET previous_version = active_version, active_version = ? "
                "WHERE tenant_id = ? AND name = ?",
                (version.version, tenant_id, model),
            )
        if not db.execute(
            "SELECT 1 FROM models WHERE tenant_id = ? AND is_default = 1", (tenant_id,)
        ).fetchone():
            db.execute(
                "UPDATE models SET is_default = 1 WHERE tenant_id = ? AND name = ?",
                (tenant_id, model),
            )

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

    # -------------------------------------------------------------------- loading

    def _load(self, row: sqlite3.Row) -> Tenant:
        tid = row["id"]
        q = self._conn.execute("SELECT * FROM quotas WHERE tenant_id = ?", (tid,)).fetchone()
        p = self._conn.execute("SELECT * FROM policies WHERE tenant_id = ?", (tid,)).fetchone()
        r = self._conn.execute("SELECT * FROM resources WHERE tenant_id = ?", (tid,)).fetchone()
        key_rows = self._conn.execute(
            "SELECT * FROM api_keys WHERE tenant_id = ? ORDER BY created_at, key_id", (tid,)
        ).fetchall()
        models = []
        for m in self._conn.execute(
            "SELECT * FROM models WHERE tenant_id = ? ORDER BY name", (tid,)
        ).fetchall():
            versions = tuple(
                ModelVersion(
                    version=v["version"],
                    uri=v["uri"],
                    architecture=v["architecture"],
                    sha256=v["sha256"],
                    created_at=v["created_at"],
                )
                for v in self._conn.execute(
                    "SELECT * FROM model_versions WHERE tenant_id = ? AND model = ? "
                    "ORDER BY version",
                    (tid, m["name"]),
                ).fetchall()
            )
            models.append(
                TenantModel(
                    name=m["name"],
                    active_version=m["active_version"],
                    previous_version=m["previous_version"],
                    is_default=bool(m["is_default"]),
                    versions=versions,
                )
            )
        j = self._conn.execute("SELECT * FROM jwt_settings WHERE tenant_id = ?", (tid,)).fetchone()
        jwt_settings = None
        if j is not None:
            jwt_settings = JwtSettings(
                issuer=j["issuer"],
                audience=j["audience"],
                algorithms=tuple(json.loads(j["algorithms"])),
                public_keys_pem=tuple(json.loads(j["public_keys"])),
                jwks_url=j["jwks_url"],
            )
        return Tenant(
            jwt=jwt_settings,
            id=tid,
            name=row["name"],
            tier=row["tier"],
            status=row["status"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            quota=Quota(
                requests_per_s=q["requests_per_s"],
                burst=q["burst"],
                max_concurrent=q["max_concurrent"],
                monthly_images=q["monthly_images"],
            ),
            policy=DetectionPolicy(
                conf=p["conf"],
                min_conf=p["min_conf"],
                iou=p["iou"],
                max_det=p["max_det"],
                allowed_classes=json.loads(p["allowed_classes"]) if p["allowed_classes"] else None,
                max_imgsz=p["max_imgsz"],
            ),
            resources=ResourceSpec(num_cpus=r["num_cpus"], num_gpus=r["num_gpus"]),
            autoscaling=AutoscalingSpec(
                min_replicas=r["min_replicas"],
                max_replicas=r["max_replicas"],
                target_ongoing_requests=r["target_ongoing_requests"],
            ),
            keys=tuple(ApiKey(**dict(k)) for k in key_rows),
            models=tuple(models),
        )
