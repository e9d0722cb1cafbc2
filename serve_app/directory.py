"""The tenant directory: each tenant's entry, published one tenant at a time.

Issue 18's design (docs/control-plane.md). The control plane (``tenantctl``, from the
registry) publishes what the data plane needs of each tenant — its ``TenantEntry`` (keys'
digests, JWT issuer, status, quota, policy, models) and the sources of its model
versions — to a folder of the model store the cluster already reads:

* ``change-<seq>.json``: one tenant's new record at directory sequence ``seq``, or its
  removal (``record: null``). A one-tenant change is one small file, whatever the number
  of tenants;
* ``snapshot-<seq>.jsonl``: every tenant's record as of ``seq``, one per line after a
  header line that counts them (written on the first publish, after a platform-wide
  change, and when changes pile up), so a new replica reads one file and the changes
  after it — and parses it a record at a time;
* ``head.json``: the latest ``seq`` and the latest snapshot's, written last: a reader
  never sees a change before its file exists.

``DirectoryView`` is a reader's copy, brought up to date by ``refresh`` (a router polls
``head.json`` about twice a second). If the store cannot be read, the view stays as it
was: known tenants keep being served, unknown credentials stay unknown. A view holds
one copy of each distinct quota, policy and model list (most tenants share the
platform's defaults), and a router's none of the model sources it never reads: 10,000
tenants are ~20 MiB of records (docs/onboarding.md).

Pure apart from the store it is given: unit-tested with a file store.
"""

from __future__ import annotations

import ctypes
import logging
from typing import Any

from pydantic import Field, ValidationError

from serve_app.blobs import BlobStore
from serve_app.config import ModelSource, TenantEntry
from serve_app.errors import ModelLoadError
from serve_app.wire import StrictModel

logger = logging.getLogger("ray.serve")

HEAD = "head.json"
MAX_HEAD_BYTES = 4096
MAX_CHANGE_BYTES = 1024 * 1024  # one tenant's record: keys, policy, a catalog
MAX_SNAPSHOT_BYTES = 512 * 1024 * 1024  # every tenant's: ~1.5 KB each at 10,000 tenants


def change_name(seq: int) -> str:
    return f"change-{seq:012d}.json"


def snapshot_name(seq: int) -> str:
    return f"snapshot-{seq:012d}.jsonl"


class TenantRecord(StrictModel):
    """What the data plane knows of one tenant."""

    entry: TenantEntry
    sources: dict[str, ModelSource] = Field(
        default_factory=dict, description="Model id -> where its weights are, and their digest."
    )


class DirectoryHead(StrictModel):
    epoch: str = Field(
        min_length=1,
        max_length=64,
        description="Made when the directory is (re)created: sequence numbers restart with "
        "it, so a reader that sees another epoch reloads everything.",
    )
    seq: int = Field(ge=0, description="The latest change's sequence number.")
    snapshot: int = Field(ge=0, description="The latest snapshot's sequence number.")
    registry_seq: int = Field(0, ge=0, description="The registry change the publish reached.")
    platform: str = Field("", description="Digest of the platform settings published.")
    registry: str = Field(
        "", max_length=64, description="The registry that published (``registry_seq`` is its)."
    )


class DirectoryChange(StrictModel):
    seq: int = Field(ge=1)
    tenant_id: str
    record: TenantRecord | None = Field(description="None: the tenant is gone (or unservable).")


class SnapshotHeader(StrictModel):
    """The first line of a snapshot; a record per line follows."""

    seq: int = Field(ge=0)
    tenants: int = Field(ge=0, description="How many record lines follow (a cut file is refused).")


def snapshot_lines(seq: int, records: list[TenantRecord]) -> bytes:
    """A snapshot file: its header line, then one record per line."""
    lines = [SnapshotHeader(seq=seq, tenants=len(records)).model_dump_json()]
    lines += [r.model_dump_json() for r in records]
    return ("\n".join(lines) + "\n").encode()


class DirectoryView:
    """A reader's copy of the directory at ``seq``: records by tenant id.

    Args:
        keep_sources: Keep each record's model sources (a detector's view); a router's
            never reads them.
    """

    def __init__(self, keep_sources: bool = True) -> None:
        self.epoch = ""
        self.seq = -1  # nothing read yet
        self.records: dict[str, TenantRecord] = {}
        self._keep_sources = keep_sources
        self._shared: dict[str, Any] = {}  # one instance per distinct value, by its JSON

    def refresh(self, store: BlobStore) -> list[str] | None:
        """Bring the view up to the store's head.

        Returns:
            The ids of the tenants whose record changed (``[]`` when up to date), or None
            when the whole view was replaced from a snapshot. On any read or parse error
            the view is left as it was and ``[]`` is returned (fail static).
        """
        try:
            head = DirectoryHead.model_validate_json(store.read(HEAD, MAX_HEAD_BYTES))
            if head.epoch == self.epoch and head.seq == self.seq:
                return []
            if head.epoch != self.epoch or self.seq < head.snapshot or head.seq < self.seq:
                self._load_snapshot(store, head)  # new, too far behind, or recreated
                changed: list[str] | None = None
            else:
                changed = []
            changes = [
                DirectoryChange.model_validate_json(store.read(change_name(seq), MAX_CHANGE_BYTES))
                for seq in range(self.seq + 1, head.seq + 1)
            ]
        except (ModelLoadError, OSError, ValidationError, ValueError) as exc:
            logger.warning("tenant directory: kept the view at %d (%s)", self.seq, exc)
            return []
        for change in changes:
            self.apply(change)
            if changed is not None:
                changed.append(change.tenant_id)
        return changed

    def _load_snapshot(self, store: BlobStore, head: DirectoryHead) -> None:
        raw = store.read(snapshot_name(head.snapshot), MAX_SNAPSHOT_BYTES)
        first, _, rest = raw.partition(b"\n")
        header = SnapshotHeader.model_validate_json(first)
        self._shared = {}
        records = {}
        for line in rest.splitlines():
            record = self._held(TenantRecord.model_validate_json(line))
            records[record.entry.id] = record
        if len(records) != header.tenants:
            raise ValueError(f"snapshot {header.seq} has {len(records)} of {header.tenants}")
        self.records = records
        self.epoch, self.seq = head.epoch, header.seq

    def apply(self, change: DirectoryChange) -> None:
        if change.seq != self.seq + 1:
            raise ValueError(f"change {change.seq} does not follow {self.seq}")
        if change.record is None:
            self.records.pop(change.tenant_id, None)
        else:
            self.records[change.tenant_id] = self._held(change.record)
        self.seq = change.seq

    def _held(self, record: TenantRecord) -> TenantRecord:
        """``record`` as the view keeps it: equal parts shared, sources only if kept."""
        entry = record.entry
        shared = {
            "quota": self._share(entry.quota.model_dump_json(), entry.quota),
            "policy": self._share(entry.policy.model_dump_json(), entry.policy),
            "models": self._share(
                "\n".join(m.model_dump_json() for m in entry.models), entry.models
            ),
        }
        return TenantRecord.model_construct(
            entry=entry.model_copy(update=shared),
            sources=record.sources if self._keep_sources else {},
        )

    def _share(self, key: str, value: Any) -> Any:
        return self._shared.setdefault(f"{type(value).__name__}:{key}", value)

    def source(self, model_id: str) -> ModelSource | None:
        """Where model ``<tenant>/<model>@<version>`` is, if the directory lists it."""
        record = self.records.get(model_id.partition("/")[0])
        return record.sources.get(model_id) if record else None


def return_freed_memory() -> None:
    """Hand the heap pages freed after a snapshot load back to the OS (glibc's
    ``malloc_trim``; elsewhere nothing): parsing 10,000 records frees tens of MB that
    glibc would otherwise keep in the process's RSS."""
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)  # the process's own libc
    if trim is not None:
        trim(0)
