"""Records to SQLite rows and back: the registry's only SQL outside ``store.py``'s
transactions and ``migrations.py``'s schema."""

from __future__ import annotations

import json
import sqlite3

from serve_app.config import AutoscalingSpec, DetectionPolicy, Quota, ResourceSpec
from serve_app.wire import JwtSettings
from tenant_registry.errors import Conflict
from tenant_registry.records import ApiKey, ModelVersion, Tenant, TenantModel


def write_policy(db: sqlite3.Connection, tenant_id: str, policy: DetectionPolicy) -> None:
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


def write_resources(
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


def insert_version(
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


def read_tenant(conn: sqlite3.Connection, row: sqlite3.Row) -> Tenant:
    """One tenant with its quota, policy, reservation, keys, models and JWT settings."""
    tid = row["id"]
    q = conn.execute("SELECT * FROM quotas WHERE tenant_id = ?", (tid,)).fetchone()
    p = conn.execute("SELECT * FROM policies WHERE tenant_id = ?", (tid,)).fetchone()
    r = conn.execute("SELECT * FROM resources WHERE tenant_id = ?", (tid,)).fetchone()
    key_rows = conn.execute(
        "SELECT * FROM api_keys WHERE tenant_id = ? ORDER BY created_at, key_id", (tid,)
    ).fetchall()
    models = []
    for m in conn.execute(
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
            for v in conn.execute(
                "SELECT * FROM model_versions WHERE tenant_id = ? AND model = ? ORDER BY version",
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
                rollouts_paused=bool(m["rollouts_paused"]),
            )
        )
    j = conn.execute("SELECT * FROM jwt_settings WHERE tenant_id = ?", (tid,)).fetchone()
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


def next_version_number(db: sqlite3.Connection, tenant_id: str, model: str) -> int:
    """The number after every recorded and reserved version of the model."""
    row = db.execute(
        "SELECT MAX(v) AS v FROM (SELECT version AS v FROM model_versions "
        "WHERE tenant_id = ? AND model = ? UNION ALL SELECT version FROM "
        "model_version_reservations WHERE tenant_id = ? AND model = ?)",
        (tenant_id, model, tenant_id, model),
    ).fetchone()
    return int(row["v"] or 0) + 1


def end_reservation(db: sqlite3.Connection, tenant_id: str, model: str, version: int) -> None:
    db.execute(
        "DELETE FROM model_version_reservations WHERE tenant_id = ? AND model = ? AND version = ?",
        (tenant_id, model, version),
    )
