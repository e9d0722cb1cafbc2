from __future__ import annotations

import multiprocessing
import sqlite3

import pytest

from tenant_registry import store
from tenant_registry.errors import Conflict, InvalidInput, NotFound
from tenant_registry.migrations import LATEST_VERSION, MIGRATIONS, migrate, schema_version
from tenant_registry.records import ModelVersion
from tenant_registry.store import Registry

SHA = "ab" * 32


def _version(n: int, uri: str = "file://models/demo/shapes/1") -> ModelVersion:
    return ModelVersion(version=n, uri=uri, architecture="yolov8n", sha256=SHA, created_at="t")


@pytest.fixture
def reg(tmp_path):
    with Registry(tmp_path / "r.db") as registry:
        yield registry


def test_fresh_file_is_migrated_to_the_latest_schema(tmp_path):
    Registry(tmp_path / "r.db").close()
    conn = sqlite3.connect(tmp_path / "r.db")
    assert schema_version(conn) == LATEST_VERSION == len(MIGRATIONS)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {
        "tenants",
        "api_keys",
        "quotas",
        "policies",
        "resources",
        "models",
        "model_versions",
        "platform",
    } <= tables


def test_upgrade_from_v1_keeps_the_data(tmp_path):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    assert migrate(conn, target=1) == 1
    conn.execute("INSERT INTO tenants VALUES ('acme', 'Acme', 'shared', 'active', 't', 't')")
    conn.execute("INSERT INTO quotas VALUES ('acme', 5, 10, NULL, 1000)")
    conn.execute("INSERT INTO policies VALUES ('acme', 0.3, 0.01, 0.7, 100, NULL, 640)")
    conn.execute("INSERT INTO resources VALUES ('acme', 0.5, 0, 1, 2, 4)")
    conn.close()
    with Registry(path) as reg:
        acme = reg.tenant("acme")
        assert reg.platform().http_port == 8000  # the v2 table exists and is empty
    assert (acme.name, acme.quota.burst, acme.policy.max_imgsz, acme.autoscaling.max_replicas) == (
        "Acme",
        10,
        640,
        2,
    )
    assert schema_version(sqlite3.connect(path)) == LATEST_VERSION


def test_a_newer_schema_is_refused_with_the_fix(tmp_path):
    path = tmp_path / "new.db"
    Registry(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {LATEST_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(RuntimeError, match="upgrade tenantctl"):
        Registry(path)


@pytest.mark.parametrize(
    "tenant_id",
    [
        "a",
        "Acme",
        "../etc",
        "acme/x",
        "acme\nfoo: bar",
        "acme;drop",
        "-acme",
        "a" * 33,
        "",
        "acme.eu",
    ],
)
def test_unsafe_tenant_ids_are_refused(reg, tenant_id):
    with pytest.raises(InvalidInput, match="lowercase letters"):
        reg.create_tenant(tenant_id, "Name", "shared")
    assert reg.tenants() == []


@pytest.mark.parametrize("name", ["", "   ", "two\nlines", "tab\there", "x" * 129])
def test_unsafe_names_are_refused(reg, name):
    with pytest.raises(InvalidInput, match="printable"):
        reg.create_tenant("acme", name, "shared")


def test_create_show_and_duplicate(reg):
    tenant = reg.create_tenant("acme", "Acme: {evil}", "shared", ("shapes", _version(1)))
    assert (tenant.id, tenant.name, tenant.tier, tenant.status) == (
        "acme",
        "Acme: {evil}",
        "shared",
        "active",
    )
    assert tenant.models[0].name == "shapes" and tenant.models[0].active_version == 1
    assert tenant.models[0].is_default
    assert tenant.resources == reg.platform().dedicated_resources
    with pytest.raises(Conflict, match="already exists"):
        reg.create_tenant("acme", "Again", "dedicated")


def test_keys_are_stored_as_hashes_only(reg, tmp_path):
    reg.create_tenant("acme", "Acme", "shared")
    record, key = reg.issue_key("acme")
    assert key.startswith("yk_") and record.prefix == key[:8] + "…"
    assert reg.tenant("acme").active_keys() == [record]
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("r.db*"))
    assert key.encode() not in raw and key[3:].encode() not in raw
    revoked = reg.revoke_key(record.key_id)
    assert revoked.revoked_at is not None
    assert reg.tenant("acme").active_keys() == []
    with pytest.raises(NotFound, match="key list"):
        reg.revoke_key("key_nope")


def test_quota_policy_and_resources_are_validated(reg):
    reg.create_tenant("acme", "Acme", "dedicated")
    assert reg.set_quota("acme", requests_per_s=5, burst=10).burst == 10
    assert reg.set_quota("acme", burst=None).requests_per_s == 5  # others kept
    with pytest.raises(InvalidInput, match="requests_per_s"):
        reg.set_quota("acme", requests_per_s=-1)
    policy = reg.set_policy("acme", conf=0.4, allowed_classes=["circle"])
    assert reg.tenant("acme").policy == policy and policy.allowed_classes == ["circle"]
    with pytest.raises(InvalidInput, match="min_conf"):
        reg.set_policy("acme", conf=0.001)
    tenant = reg.set_resources("acme", num_gpus=0.25, min_replicas=0, max_replicas=3)
    assert tenant.resources.num_gpus == 0.25 and tenant.autoscaling.min_replicas == 0
    with pytest.raises(InvalidInput, match="whole number"):
        reg.set_resources("acme", num_gpus=1.5)
    with pytest.raises(InvalidInput, match="min_replicas"):
        reg.set_resources("acme", min_replicas=5)
    with pytest.raises(NotFound):
        reg.set_quota("ghost", burst=1)


def test_versions_activate_and_roll_back(reg):
    reg.create_tenant("acme", "Acme", "shared", ("shapes", _version(1)))
    reg.add_model_version("acme", "shapes", _version(2))
    assert reg.model("acme", "shapes").active_version == 1  # added, not activated
    assert reg.activate("acme", "shapes", 2).active_version == 2
    assert reg.rollback("acme", "shapes").active_version == 1
    with pytest.raises(NotFound, match="versions: 1, 2"):
        reg.activate("acme", "shapes", 9)
    with pytest.raises(Conflict, match="already has version 2"):
        reg.add_model_version("acme", "shapes", _version(2))
    assert reg.next_version("acme", "shapes") == 3
    reg.add_model_version("acme", "pcb", _version(1), activate=True)
    fresh = reg.add_model_version("acme", "other", _version(1))
    assert fresh.active_version == 1 and not fresh.is_default  # first version active; default kept
    with pytest.raises(Conflict, match="model activate"):
        reg.rollback("acme", "pcb")


def test_delete_removes_keys_and_models(reg):
    reg.create_tenant("acme", "Acme", "shared", ("shapes", _version(1)))
    reg.issue_key("acme")
    reg.delete_tenant("acme")
    with pytest.raises(NotFound):
        reg.tenant("acme")
    conn = reg._conn
    for table in ("api_keys", "models", "model_versions", "quotas", "policies", "resources"):
        assert conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] == 0, table


def test_a_failed_write_leaves_nothing_behind(reg, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(store, "write_resources", boom)  # mid-transaction, after the tenant row
    with pytest.raises(RuntimeError):
        reg.create_tenant("acme", "Acme", "dedicated")
    assert reg._conn.execute("SELECT COUNT(*) FROM tenants").fetchone()[0] == 0
    assert reg._conn.execute("SELECT COUNT(*) FROM quotas").fetchone()[0] == 0


def _create_many(path: str, prefix: str, count: int) -> None:
    with Registry(path) as reg:
        for i in range(count):
            reg.create_tenant(f"{prefix}-{i:02d}", f"{prefix} {i}", "shared")
            reg.issue_key(f"{prefix}-{i:02d}")


def test_concurrent_processes_lose_nothing(tmp_path):
    path = str(tmp_path / "r.db")
    Registry(path).close()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_create_many, args=(path, p, 15)) for p in ("aa", "bb", "cc")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    with Registry(path) as reg:
        tenants = reg.tenants()
    assert len(tenants) == 45
    assert all(len(t.active_keys()) == 1 for t in tenants)
