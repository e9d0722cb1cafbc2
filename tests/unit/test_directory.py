"""The tenant directory (``serve_app.directory``, ``tenant_registry.publish``): a real
registry file published to a real file store, read back by views as a router would.
A one-tenant change is one small file whatever the number of tenants; readers follow
changes, reload from a snapshot when behind, and keep their view when the store fails."""

from __future__ import annotations

import dataclasses
import os

import pytest

from serve_app.blobs import FileStore
from serve_app.directory import HEAD, DirectoryView, change_name
from tenant_registry import publish as publisher
from tenant_registry.records import ModelVersion
from tenant_registry.store import Registry

V1 = ModelVersion(
    version=1, uri="file://models/demo/shapes/1", architecture="yolov8n", sha256="ab" * 32,
    created_at="t",
)  # fmt: skip


@pytest.fixture
def reg(tmp_path):
    with Registry(tmp_path / "r.db") as registry:
        yield registry


@pytest.fixture
def store(tmp_path):
    (tmp_path / "dir").mkdir()
    return FileStore(tmp_path / "dir")


def _files(store: FileStore, kind: str) -> list[str]:
    return sorted(n for n in os.listdir(store.root) if n.startswith(kind))


def _keys(view: DirectoryView, tenant: str) -> set[str]:
    return {k.sha256 for k in view.records[tenant].entry.api_keys}


def test_the_first_publish_is_a_snapshot_a_reader_loads(reg, store):
    reg.create_tenant("acme", "Acme", "shared", ("shapes", V1))
    reg.create_tenant("bare", "Bare", "shared")  # no model: nothing to serve
    done = publisher.publish(reg, store)
    assert done.snapshot and done.changed == ["acme"]
    view = DirectoryView()
    assert view.refresh(store) is None  # replaced whole, from the snapshot
    assert sorted(view.records) == ["acme"] and view.seq == done.seq
    assert view.source("acme/shapes@1").sha256 == V1.sha256
    assert view.source("other/shapes@1") is None
    assert view.refresh(store) == []  # up to date: one small read


def test_one_tenants_change_is_one_file_whatever_the_number_of_tenants(reg, store):
    for i in range(300):
        reg.create_tenant(f"t{i:03d}", f"T{i}", "shared", ("shapes", V1))
    publisher.publish(reg, store)
    view = DirectoryView()
    view.refresh(store)
    assert len(view.records) == 300
    reg.issue_key("t123")
    done = publisher.publish(reg, store)
    assert (done.snapshot, done.changed) == (False, ["t123"])
    assert _files(store, "change-") == [change_name(done.seq)]
    assert view.refresh(store) == ["t123"]
    assert len(_keys(view, "t123")) == 1
    assert publisher.publish(reg, store).changed == []  # nothing new: nothing written
    assert len(_files(store, "change-")) == 1


def test_revocation_suspension_and_removal_reach_a_following_reader(reg, store):
    reg.create_tenant("acme", "Acme", "shared", ("shapes", V1))
    reg.create_tenant("beta", "Beta", "shared", ("shapes", V1))
    record, _ = reg.issue_key("acme")
    publisher.publish(reg, store)
    view = DirectoryView()
    view.refresh(store)
    assert _keys(view, "acme") == {record.sha256}
    reg.revoke_key(record.key_id)
    reg.set_status("beta", "suspended")
    publisher.publish(reg, store)
    assert sorted(view.refresh(store) or []) == ["acme", "beta"]
    assert _keys(view, "acme") == set()
    assert view.records["beta"].entry.status == "suspended"
    reg.delete_tenant("beta")
    publisher.publish(reg, store)
    assert view.refresh(store) == ["beta"] and "beta" not in view.records


def test_a_model_activation_changes_the_record_and_its_sources(reg, store):
    reg.create_tenant("acme", "Acme", "shared", ("shapes", V1))
    publisher.publish(reg, store)
    view = DirectoryView()
    view.refresh(store)
    v2 = dataclasses.replace(V1, version=2, sha256="cd" * 32)
    reg.add_model_version("acme", "shapes", v2, activate=True)
    publisher.publish(reg, store)
    assert view.refresh(store) == ["acme"]
    assert view.records["acme"].entry.models[0].active_version == 2
    assert view.source("acme/shapes@2").sha256 == "cd" * 32


def test_a_platform_change_or_a_bulk_import_is_a_snapshot(reg, store):
    reg.create_tenant("acme", "Acme", "shared", ("shapes", V1))
    publisher.publish(reg, store)
    view = DirectoryView()
    view.refresh(store)
    reg.set_platform(reg.platform().model_copy(update={"http_port": 8001}))
    assert publisher.publish(reg, store).snapshot
    for i in range(publisher.SNAPSHOT_AFTER_CHANGES + 1):
        reg.create_tenant(f"n{i:03d}", "N", "shared", ("shapes", V1))
    done = publisher.publish(reg, store)
    assert done.snapshot and len(done.changed) == publisher.SNAPSHOT_AFTER_CHANGES + 2
    assert view.refresh(store) is None and len(view.records) == len(done.changed)


def test_a_reader_keeps_its_view_when_the_store_fails_and_catches_up_after(reg, store):
    reg.create_tenant("acme", "Acme", "shared", ("shapes", V1))
    publisher.publish(reg, store)
    view = DirectoryView()
    view.refresh(store)
    before = view.seq
    reg.issue_key("acme")
    done = publisher.publish(reg, store)
    change = store.root / change_name(done.seq)
    kept = change.read_bytes()
    change.write_bytes(b"{not json")  # torn or corrupted
    assert view.refresh(store) == [] and view.seq == before  # fail static
    change.unlink()  # missing
    assert view.refresh(store) == [] and view.seq == before
    (store.root / HEAD).unlink()  # the store is gone
    assert view.refresh(store) == [] and "acme" in view.records
    change.write_bytes(kept)
    publisher.publish(reg, store)  # no head: a fresh snapshot
    assert view.refresh(store) is None and len(_keys(view, "acme")) == 1


def test_another_registry_publishing_to_the_directory_replaces_it_whole(reg, store, tmp_path):
    """A recreated registry file counts its changes from 1 again: the directory must not
    take them as changes after the first registry's (a tenant would be missed)."""
    for i in range(5):
        reg.create_tenant(f"t{i}", "T", "shared", ("shapes", V1))
    publisher.publish(reg, store)
    view = DirectoryView()
    view.refresh(store)
    with Registry(tmp_path / "recreated.db") as other:
        other.create_tenant("only", "Only", "shared", ("shapes", V1))
        done = publisher.publish(other, store)
    assert done.snapshot and done.changed == ["only"]
    assert view.refresh(store) is None and sorted(view.records) == ["only"]


def test_published_change_records_are_pruned_keeping_the_count(reg, store):
    for i in range(20):
        reg.create_tenant(f"t{i:02d}", "T", "shared", ("shapes", V1))
    publisher.publish(reg, store)
    latest = reg.changed_since(0).seq
    assert latest > 20 and reg.changed_since(0).tenants == ["t19"]  # the latest row only
    reg.issue_key("t03")
    done = publisher.publish(reg, store)
    assert (done.snapshot, done.changed) == (False, ["t03"])
    assert reg.changed_since(0).seq > latest  # numbers never go back


def test_a_cut_snapshot_is_refused_and_the_view_kept(reg, store):
    for i in range(3):
        reg.create_tenant(f"t{i}", "T", "shared", ("shapes", V1))
    publisher.publish(reg, store)
    view = DirectoryView()
    view.refresh(store)
    reg.set_platform(reg.platform().model_copy(update={"http_port": 8001}))
    done = publisher.publish(reg, store)  # a platform change: a new snapshot
    path = store.root / _files(store, "snapshot-")[-1]
    lines = path.read_bytes().splitlines(keepends=True)
    assert len(lines) == 4 and b'"tenants":3' in lines[0]  # a header, a line per tenant
    path.write_bytes(b"".join(lines[:-1]))  # an upload cut short
    assert view.refresh(store) == [] and view.seq < done.seq and len(view.records) == 3
    path.write_bytes(b"".join(lines))
    assert view.refresh(store) is None and view.seq == done.seq


def test_a_view_shares_equal_parts_and_a_routers_holds_no_sources(reg, store):
    """Most tenants have the platform's default quota, policy and model: one copy each."""
    for i in range(3):
        reg.create_tenant(f"t{i}", "T", "shared", ("shapes", V1))
    reg.set_quota("t2", requests_per_s=5)
    publisher.publish(reg, store)
    detector, router = DirectoryView(), DirectoryView(keep_sources=False)
    detector.refresh(store)
    router.refresh(store)
    t0, t1, t2 = (detector.records[f"t{i}"].entry for i in range(3))
    assert t0.quota is t1.quota and t0.policy is t2.policy and t0.models is t1.models
    assert t2.quota is not t0.quota and t2.quota.requests_per_s == 5
    assert detector.source("t1/shapes@1").sha256 == V1.sha256
    assert router.source("t1/shapes@1") is None and router.records["t1"].entry == t1
    reg.issue_key("t1")  # a change read later is shared the same way
    publisher.publish(reg, store)
    detector.refresh(store)
    assert detector.records["t1"].entry.quota is t0.quota
