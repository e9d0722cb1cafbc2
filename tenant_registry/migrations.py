"""Versioned schema migrations of the registry database.

``PRAGMA user_version`` holds the number of migrations applied. Each migration
runs once, in order, inside the same ``BEGIN IMMEDIATE`` transaction as the
version bump, so a crash or a concurrent ``tenantctl`` never leaves a half-
migrated file. Append new migrations; never edit an applied one.
"""

from __future__ import annotations

import sqlite3

MIGRATIONS: tuple[str, ...] = (
    # 1: tenants, keys, quotas, policies, resources, models.
    """
    CREATE TABLE tenants (
        id          TEXT PRIMARY KEY,
        name        TEXT NOT NULL,
        tier        TEXT NOT NULL CHECK (tier IN ('shared', 'dedicated')),
        status      TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
        created_at  TEXT NOT NULL,
        updated_at  TEXT NOT NULL
    );
    CREATE TABLE api_keys (
        key_id      TEXT PRIMARY KEY,
        tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        prefix      TEXT NOT NULL,
        sha256      TEXT NOT NULL UNIQUE,
        created_at  TEXT NOT NULL,
        revoked_at  TEXT
    );
    CREATE INDEX api_keys_tenant ON api_keys(tenant_id);
    CREATE TABLE quotas (
        tenant_id       TEXT PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
        requests_per_s  REAL,
        burst           INTEGER,
        max_concurrent  INTEGER,
        monthly_images  INTEGER
    );
    CREATE TABLE policies (
        tenant_id        TEXT PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
        conf             REAL NOT NULL,
        min_conf         REAL NOT NULL,
        iou              REAL NOT NULL,
        max_det          INTEGER NOT NULL,
        allowed_classes  TEXT,
        max_imgsz        INTEGER NOT NULL
    );
    CREATE TABLE resources (
        tenant_id                TEXT PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
        num_cpus                 REAL NOT NULL,
        num_gpus                 REAL NOT NULL,
        min_replicas             INTEGER NOT NULL,
        max_replicas             INTEGER NOT NULL,
        target_ongoing_requests  REAL NOT NULL
    );
    CREATE TABLE models (
        tenant_id         TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        name              TEXT NOT NULL,
        active_version    INTEGER,
        previous_version  INTEGER,
        is_default        INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (tenant_id, name)
    );
    CREATE TABLE model_versions (
        tenant_id     TEXT NOT NULL,
        model         TEXT NOT NULL,
        version       INTEGER NOT NULL,
        uri           TEXT NOT NULL,
        architecture  TEXT NOT NULL,
        sha256        TEXT NOT NULL,
        created_at    TEXT NOT NULL,
        PRIMARY KEY (tenant_id, model, version),
        FOREIGN KEY (tenant_id, model) REFERENCES models(tenant_id, name) ON DELETE CASCADE
    );
    """,
    # 2: platform settings (HTTP options, router and shared-pool sizing, default model).
    """
    CREATE TABLE platform (
        key    TEXT PRIMARY KEY,
        value  TEXT NOT NULL
    );
    """,
    # 3: per-tenant JWT identity provider (public keys only; no secret is stored).
    """
    CREATE TABLE jwt_settings (
        tenant_id    TEXT PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
        issuer       TEXT NOT NULL UNIQUE,
        audience     TEXT NOT NULL,
        algorithms   TEXT NOT NULL,
        public_keys  TEXT NOT NULL
    );
    """,
    # 4: the identity provider's keys may come from a JWKS URL instead of (or beside) PEMs.
    """
    ALTER TABLE jwt_settings ADD COLUMN jwks_url TEXT;
    """,
    # 5: version numbers reserved by a push in progress (taken before the upload, so two
    # concurrent pushes never upload under the same number).
    """
    CREATE TABLE model_version_reservations (
        tenant_id    TEXT NOT NULL,
        model        TEXT NOT NULL,
        version      INTEGER NOT NULL,
        reserved_at  TEXT NOT NULL,
        PRIMARY KEY (tenant_id, model, version)
    );
    """,
    # 6: which tenants changed, in order, for the tenant directory (tenant_registry/
    # publish.py): triggers on every table a tenant's directory record is read from, so
    # no code path can change a tenant without it being published.
    """
    CREATE TABLE tenant_changes (
        seq        INTEGER PRIMARY KEY AUTOINCREMENT,
        tenant_id  TEXT NOT NULL
    );
    CREATE TRIGGER tenants_insert_changes AFTER INSERT ON tenants
    BEGIN INSERT INTO tenant_changes(tenant_id) VALUES (NEW.id); END;
    CREATE TRIGGER tenants_update_changes AFTER UPDATE ON tenants
    BEGIN INSERT INTO tenant_changes(tenant_id) VALUES (NEW.id); END;
    CREATE TRIGGER tenants_delete_changes AFTER DELETE ON tenants
    BEGIN INSERT INTO tenant_changes(tenant_id) VALUES (OLD.id); END;
    CREATE TRIGGER api_keys_insert_changes AFTER INSERT ON api_keys
    BEGIN INSERT INTO tenant_changes(tenant_id) VALUES (NEW.tenant_id); END;
    CREATE TRIGGER api_keys_update_changes AFTER UPDATE ON api_keys
    BEGIN INSERT INTO tenant_changes(tenant_id) VALUES (NEW.tenant_id); END;
    CREATE TRIGGER api_keys_delete_changes AFTER DELETE ON api_keys
    BEGIN INSERT INTO tenant_changes(tenant_id) VALUES (OLD.tenant_id); END;
    CREATE TRIGGER quotas_insert_changes AFTER INSERT ON quotas
    BEGIN INSERT INTO tenant_changes(tenant_id) VALUES (NEW.tenant_id); END;
    CREATE TRIGGER quotas_update_changes AFTER UPDATE ON quotas
    BEGIN INSERT INTO tenant_changes(tenant_id) VALUES (NEW.tenant_id); END;
    CREATE TRIGGER quotas_delete_changes AFTER DELETE ON quotas
    BEGIN INSERT INTO tenant_changes(tenant_id) VALUES (OLD.tenant_id); END;
    CREATE TRIGGER policies_insert_changes AFTER INSERT ON policies
    BEGIN INSERT INTO tenant_changes(tenant_id) VALUES (NEW.tenant_id); END;
    CREATE TRIGGER policies_update_changes AFTER UPDATE ON policies
    BEGIN INSERT INTO tenant_changes(tenant_id) VALUES (NEW.tenant_id); END;
    CREATE TRIGGER policies_delete_changes AFTER DELETE ON policies
    BEGIN INSERT INTO tenant_changes(tenant_id) VALUES (OLD.tenant_id); END;
    CREATE TRIGGER resources_insert_changes AFTER INSERT ON resources
    BEGIN INSERT INTO tenant_changes(tenant_id) VALUES (NEW.tenant_id); END;
    CREATE TRIGGER resources_update_changes AFTER UPDATE ON resources
    BEGIN INSERT INTO tenant_changes(tenant_id) VALUES (NEW.tenant_id); END;
    CREATE TRIGGER resources_delete_changes AFTER DELETE ON resources
    BEGIN INSERT INTO tenant_changes(tenant_id) VALUES (OLD.tenant_id); END;
    CREATE TRIGGER models_insert_changes AFTER INSERT ON models
    BEGIN INSERT INTO tenant_changes(tenant_id) VALUES (NEW.tenant_id); END;
    CREATE TRIGGER models_update_changes AFTER UPDATE ON models
    BEGIN INSERT INTO tenant_changes(tenant_id) VALUES (NEW.tenant_id); END;
    CREATE TRIGGER models_delete_changes AFTER DELETE ON models
    BEGIN INSERT INTO tenant_changes(tenant_id) VALUES (OLD.tenant_id); END;
    CREATE TRIGGER model_versions_insert_changes AFTER INSERT ON model_versions
    BEGIN INSERT INTO tenant_changes(tenant_id) VALUES (NEW.tenant_id); END;
    CREATE TRIGGER model_versions_update_changes AFTER UPDATE ON model_versions
    BEGIN INSERT INTO tenant_changes(tenant_id) VALUES (NEW.tenant_id); END;
    CREATE TRIGGER model_versions_delete_changes AFTER DELETE ON model_versions
    BEGIN INSERT INTO tenant_changes(tenant_id) VALUES (OLD.tenant_id); END;
    CREATE TRIGGER jwt_settings_insert_changes AFTER INSERT ON jwt_settings
    BEGIN INSERT INTO tenant_changes(tenant_id) VALUES (NEW.tenant_id); END;
    CREATE TRIGGER jwt_settings_update_changes AFTER UPDATE ON jwt_settings
    BEGIN INSERT INTO tenant_changes(tenant_id) VALUES (NEW.tenant_id); END;
    CREATE TRIGGER jwt_settings_delete_changes AFTER DELETE ON jwt_settings
    BEGIN INSERT INTO tenant_changes(tenant_id) VALUES (OLD.tenant_id); END;
    """,
    # 7: who this registry is, kept in the tenant directory's head: a directory another
    # registry (or a recreated file) published to gets a snapshot, not changes counted
    # from that registry's numbers.
    """
    CREATE TABLE registry_identity (id TEXT NOT NULL);
    INSERT INTO registry_identity(id) VALUES (lower(hex(randomblob(16))));
    """,
    # 8: tenants' own versions (issue 21): an operator can pause a model's rollouts, and
    # the registry keeps what the data plane last reported of each uploaded version.
    """
    ALTER TABLE models ADD COLUMN rollouts_paused INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE uploaded_versions (
        tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        model TEXT NOT NULL,
        version INTEGER NOT NULL,
        record TEXT NOT NULL,
        synced_at TEXT NOT NULL,
        PRIMARY KEY (tenant_id, model, version)
    );
    """,
)

LATEST_VERSION = len(MIGRATIONS)


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, target: int = LATEST_VERSION) -> int:
    """Apply pending migrations up to ``target``; returns the version reached.

    Raises:
        RuntimeError: The file was written by a newer tenantctl.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        current = schema_version(conn)
        if current > LATEST_VERSION:
            raise RuntimeError(
                f"registry schema is v{current} but this tenantctl knows v{LATEST_VERSION}: "
                "upgrade tenantctl"
            )
        for index in range(current, target):
            for statement in _statements(MIGRATIONS[index]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {index + 1}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return schema_version(conn)


def _statements(script: str) -> list[str]:
    """The statements of ``script``, a trigger's ``BEGIN ...; END`` kept whole."""
    out, pending = [], ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                out.append(pending)
            pending = ""
    return out
