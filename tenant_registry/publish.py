"""Registry -> tenant directory (``serve_app.directory``), one changed tenant at a time.

``publish`` reads the directory's head from the store (the only state it keeps), asks
the registry which tenants changed since the registry change recorded there
(``Registry.changed_since``: triggers record every write), and writes one change file
per changed tenant, then the new head. A snapshot of every tenant is written instead on
the first publish, after a change to the platform settings (every record may differ),
or when more than ``SNAPSHOT_AFTER_CHANGES`` tenants changed at once (a bulk import):
readers then load one file rather than thousands.

So onboarding, a key issued or revoked, a suspension, a quota, policy or model change
costs O(1) store writes, whatever the number of tenants.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from serve_app.blobs import BlobStore, open_store
from serve_app.config import DirectorySpec, ModelSource
from serve_app.directory import (
    HEAD,
    MAX_HEAD_BYTES,
    DirectoryChange,
    DirectoryHead,
    TenantRecord,
    change_name,
    snapshot_lines,
    snapshot_name,
)
from serve_app.errors import ModelLoadError
from serve_app.wire import model_id
from tenant_registry.platform import directory_spec
from tenant_registry.records import Changes, Tenant
from tenant_registry.render import render_registry, servable, tenant_entry
from tenant_registry.store import Registry

SNAPSHOT_AFTER_CHANGES = 256


@dataclass(frozen=True)
class Published:
    """What one ``publish`` wrote."""

    seq: int
    changed: list[str]  # tenant ids written as changes
    snapshot: bool  # a full snapshot was written instead


def tenant_record(tenant: Tenant) -> TenantRecord | None:
    """What the data plane gets of ``tenant``; None if nothing of it can be served."""
    if not servable(tenant):
        return None
    sources = {
        model_id(tenant.id, m.name, v.version): ModelSource(uri=v.uri, sha256=v.sha256)
        for m in tenant.models
        for v in m.versions
    }
    return TenantRecord(entry=tenant_entry(tenant), sources=sources)


def platform_digest(reg: Registry) -> str:
    return hashlib.sha256(reg.platform().model_dump_json().encode()).hexdigest()


def read_head(store: BlobStore) -> DirectoryHead | None:
    """The published head, or None if nothing was published (or it is unreadable)."""
    try:
        return DirectoryHead.model_validate_json(store.read(HEAD, MAX_HEAD_BYTES))
    except (ModelLoadError, OSError, ValidationError):
        return None


def publish_registry(reg: Registry) -> tuple[DirectorySpec, Published] | None:
    """Publish to the platform's tenant directory (what ``apply`` does before it
    deploys); None when the directory is off."""
    spec = directory_spec(reg.platform())
    if spec is None:
        return None
    return spec, publish(reg, open_store(spec.uri, spec.store))


def published_config(reg: Registry) -> dict[str, Any]:
    """The tenants published, then the Serve config that no longer lists them: what
    ``tenantctl apply`` submits (for scripts and tests that deploy a registry)."""
    publish_registry(reg)
    return render_registry(reg)


def publish(reg: Registry, store: BlobStore) -> Published:
    """Bring the directory in ``store`` up to the registry."""
    head = read_head(store)
    digest = platform_digest(reg)
    changes = reg.changed_since(head.registry_seq if head else 0)
    ours = head is not None and head.registry == changes.registry
    if (
        head is None
        or not ours  # another registry (or a recreated file) published here
        or head.platform != digest
        or len(changes.tenants) > SNAPSHOT_AFTER_CHANGES
    ):
        done = _snapshot(reg, store, head, changes, digest)
    else:
        seq = head.seq
        for tenant_id in changes.tenants:
            found = reg.find_tenant(tenant_id)
            seq += 1
            change = DirectoryChange(
                seq=seq, tenant_id=tenant_id, record=tenant_record(found) if found else None
            )
            store.write(change_name(seq), change.model_dump_json().encode())
        new_head = head.model_copy(update={"seq": seq, "registry_seq": changes.seq})
        store.write(HEAD, new_head.model_dump_json().encode())
        done = Published(seq=seq, changed=changes.tenants, snapshot=False)
    reg.forget_changes(changes.seq)  # published: the registry need not keep them
    return done


def _snapshot(
    reg: Registry, store: BlobStore, head: DirectoryHead | None, changes: Changes, digest: str
) -> Published:
    seq = (head.seq if head else 0) + 1
    epoch = head.epoch if head else uuid.uuid4().hex  # no head: a new directory
    records = [r for r in (tenant_record(t) for t in reg.tenants()) if r is not None]
    store.write(snapshot_name(seq), snapshot_lines(seq, records))
    new_head = DirectoryHead(
        epoch=epoch,
        seq=seq,
        snapshot=seq,
        registry_seq=changes.seq,
        platform=digest,
        registry=changes.registry,
    )
    store.write(HEAD, new_head.model_dump_json().encode())
    return Published(seq=seq, changed=[r.entry.id for r in records], snapshot=True)
