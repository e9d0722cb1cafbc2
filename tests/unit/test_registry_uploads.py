"""The operator's side of tenants' own versions: ``tenantctl model list`` reads what the
data plane reports into the registry, ``model push`` numbers above the tenant's uploads,
and ``model pause`` reaches the routers' tenant entries."""

from __future__ import annotations

import json
import sqlite3

import pytest

from serve_app.models.rollout import Rollout
from serve_app.models.versions import INDEX_FILE, UploadIndex, VersionRecord
from tenant_registry.cli import main
from tenant_registry.render import tenant_entry
from tenant_registry.store import Registry
from tests.conftest import DEMO_MODEL

PROMOTED = Rollout(
    mode="shadow", percent=20, min_images=50, min_agreement=0.9, state="promoted", images=50,
    agreement=0.97, p95_ms={"incumbent": 30.0, "candidate": 31.0},
    reason="promoted: box agreement 0.970 over 50 images", started_at="2026-12-01T10:00:00Z",
)  # fmt: skip


@pytest.fixture
def setup(tmp_path):
    db, store = str(tmp_path / "r.db"), tmp_path / "store"
    assert main(["--db", db, "init"]) == 0
    assert main(["--db", db, "platform", "set", "--model-store-uri", f"file://{store}"]) == 0
    assert main(["--db", db, "tenant", "create", "acme"]) == 0
    assert main(["--db", db, "model", "push", "acme", "shapes", str(DEMO_MODEL), "--activate"]) == 0
    index = UploadIndex(versions=[
        VersionRecord(version=3, status="ready", sha256="a" * 64, size_bytes=10, rollout=PROMOTED),
        VersionRecord(version=4, status="rejected", reason="the weights are a pickled PyTorch "
                      "checkpoint (.pt), not safetensors", sha256="b" * 64, size_bytes=10),
    ])  # fmt: skip
    folder = store / "uploads" / "acme" / "shapes"
    folder.mkdir(parents=True)
    (folder / INDEX_FILE).write_text(index.model_dump_json())
    return db


def test_model_list_shows_and_records_the_tenants_uploads(setup, capsys):
    capsys.readouterr()
    assert main(["--db", setup, "model", "list", "acme"]) == 0
    text = capsys.readouterr().out
    assert "shadow 20% promoted agreement 0.970 over 50" in text
    assert "why: the weights are a pickled PyTorch checkpoint" in text
    assert main(["--db", setup, "model", "list", "acme", "--json"]) == 0
    [shapes] = json.loads(capsys.readouterr().out)
    assert [u["version"] for u in shapes["uploads"]] == [3, 4]
    assert shapes["uploads"][0]["rollout"]["state"] == "promoted"
    rows = (
        sqlite3.connect(setup)
        .execute(
            "SELECT version, json_extract(record, '$.status') FROM uploaded_versions "
            "WHERE tenant_id = 'acme' ORDER BY version"
        )
        .fetchall()
    )
    assert rows == [(3, "ready"), (4, "rejected")]


def test_a_push_numbers_above_the_tenants_uploads(setup, tmp_path):
    assert main(["--db", setup, "model", "push", "acme", "shapes", str(DEMO_MODEL)]) == 0
    with Registry(setup) as reg:
        assert [v.version for v in reg.model("acme", "shapes").versions] == [1, 2, 5]


def test_pausing_reaches_the_routers_entry_and_resuming_undoes_it(setup):
    assert main(["--db", setup, "model", "pause", "acme", "shapes"]) == 0
    with Registry(setup) as reg:
        assert tenant_entry(reg.tenant("acme")).model("shapes").rollouts_paused  # type: ignore[union-attr]
    assert main(["--db", setup, "model", "pause", "acme", "shapes", "--resume"]) == 0
    with Registry(setup) as reg:
        assert not tenant_entry(reg.tenant("acme")).model("shapes").rollouts_paused  # type: ignore[union-attr]
    assert main(["--db", setup, "model", "pause", "acme", "nope"]) != 0
