"""Tenants' own model versions, as the operator sees and steers them.

Tenants upload versions over the API; the data plane's quota ledger keeps them and
writes each model's index (``versions.json``: every live uploaded version with its
status, reason, metrics and rollout) to ``<model_store_uri>/uploads/<tenant>/<model>/``.
``sync`` reads the tenant's indexes into the registry (``uploaded_versions``: what the
data plane last reported), so ``tenantctl model list`` shows uploads, rollouts and the
gate's decisions beside the operator's versions, and ``tenantctl model push`` numbers a
new version above the tenant's uploads. ``pause`` is the operator's brake: a model whose
rollouts are paused (published by ``tenantctl apply``) sends its rollouts no traffic.
"""

from __future__ import annotations

import sqlite3

from pydantic import ValidationError

from serve_app.blobs import open_store
from serve_app.errors import ModelLoadError
from serve_app.models.versions import INDEX_FILE, UploadIndex, VersionRecord
from serve_app.wire import utc_iso
from tenant_registry.errors import InvalidInput
from tenant_registry.store import Registry

MAX_INDEX_BYTES = 4 * 1024 * 1024


def read_index(reg: Registry, tenant_id: str, model: str) -> list[VersionRecord]:
    """What the data plane reports of the tenant's uploads of ``model`` (none: [])."""
    platform = reg.platform()
    folder = f"{platform.model_store_uri.rstrip('/')}/uploads/{tenant_id}/{model}"
    store = open_store(folder, platform.store)
    try:
        if INDEX_FILE not in store.names():
            return []
        raw = store.read(INDEX_FILE, MAX_INDEX_BYTES)
        return UploadIndex.model_validate_json(raw).versions
    except (ModelLoadError, ValidationError) as exc:
        raise InvalidInput(f"cannot read the uploads of {tenant_id}/{model}: {exc}") from None


def sync(reg: Registry, tenant_id: str) -> dict[str, list[VersionRecord]]:
    """Read every model's uploads into the registry; the records by model."""
    found = {m.name: read_index(reg, tenant_id, m.name) for m in reg.tenant(tenant_id).models}

    def write(db: sqlite3.Connection) -> None:
        db.execute("DELETE FROM uploaded_versions WHERE tenant_id = ?", (tenant_id,))
        db.executemany(
            "INSERT INTO uploaded_versions(tenant_id, model, version, record, synced_at) "
            "VALUES (?, ?, ?, ?, ?)",
            [
                (tenant_id, model, r.version, r.model_dump_json(), utc_iso())
                for model, records in found.items()
                for r in records
            ],
        )

    reg.change(tenant_id, write)
    return found


def highest(reg: Registry, tenant_id: str, model: str) -> int:
    """The highest version number the tenant uploaded of ``model`` (0: none)."""
    return max((r.version for r in read_index(reg, tenant_id, model)), default=0)


def pause(reg: Registry, tenant_id: str, model: str, paused: bool) -> None:
    reg.model(tenant_id, model)  # NotFound with the hint

    def write(db: sqlite3.Connection) -> None:
        db.execute(
            "UPDATE models SET rollouts_paused = ? WHERE tenant_id = ? AND name = ?",
            (int(paused), tenant_id, model),
        )

    reg.change(tenant_id, write)
