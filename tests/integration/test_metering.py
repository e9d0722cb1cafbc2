"""Billing-grade metering end to end: two tenants on the shared pool, a ledger killed in
the middle, usage exported to S3 (moto's server over HTTP), totals read back by
`tenantctl usage` exactly."""

from __future__ import annotations

import json

import pytest

from serve_app.config import StoreSettings
from tests.conftest import SAMPLES, kill_primary_ledger, ledger_call, wait_for
from tests.integration.conftest import delete_app
from tests.platform_app import Platform

JPEG = (SAMPLES / "shapes_00.jpg").read_bytes()


@pytest.fixture(scope="module")
def metered(ray_cluster, s3, tmp_path_factory, http_port):
    delete_app()
    s3["client"].create_bucket(Bucket="usage")
    app = Platform(
        ray_cluster,
        tmp_path_factory.mktemp("metering") / "registry.db",
        http_port,
        routers=1,
        usage_uri="s3://usage/metered",
    )
    app.reg.set_platform(
        app.reg.platform().model_copy(update={"store": StoreSettings(s3_endpoint_url=s3["url"])})
    )
    app.onboard("acme")
    app.onboard("globex", monthly_images=5)
    app.onboard("probe")
    app.apply()
    wait_for(lambda: app.detect("probe").status_code == 200, 300, "the metered app to serve")
    yield app
    delete_app()


def _settled(tenant: str, requests: int) -> bool:
    report = ledger_call("usage_report", tenant, _quota())
    return sum(h["requests"] for h in report["hours"]) == requests


def _quota():
    from serve_app.config import Quota

    return Quota()


def test_usage_is_exact_across_a_ledger_restart(metered, capsys):
    from tenant_registry.cli import main

    def send(tenant: str, data: bytes, n: int) -> list[int]:
        return [metered.detect(tenant, data=data).status_code for _ in range(n)]

    # First half: acme 4 ok + 1 empty body (refused once admitted: the body is read only
    # then, so its model is known); globex 3 ok.
    assert send("acme", JPEG, 4) + send("acme", b"", 1) == [200] * 4 + [400]
    assert send("globex", JPEG, 3) == [200] * 3
    wait_for(lambda: _settled("acme", 5) and _settled("globex", 3), 30, "the first half settled")

    kill_primary_ledger()  # hard: no shutdown hook, no final export
    wait_for(lambda: metered.detect("probe").status_code == 200, 120, "a new ledger")

    # Second half: acme 3 ok + 1 garbage (refused for model shapes@1); globex 2 ok, then
    # over its monthly 5: the new ledger remembers the first half's 3.
    assert send("acme", JPEG, 3) + send("acme", b"\x00" * 64, 1) == [200] * 3 + [415]
    assert send("globex", JPEG, 3) == [200, 200, 429]
    wait_for(lambda: _settled("acme", 9) and _settled("globex", 6), 30, "the second half")
    assert ledger_call("export_usage") > 0  # what the 30 s loop does

    db = str(metered.reg.path)
    capsys.readouterr()
    assert main(["--db", db, "usage", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    totals: dict[str, dict[str, float]] = {}
    for row in rows:
        t = totals.setdefault(row["tenant"], {"requests": 0, "images": 0, "rejected": 0,
                                              "errors": 0, "compute_s": 0.0})  # fmt: skip
        for field in t:
            t[field] += row[field]
    acme, globex = totals["acme"], totals["globex"]
    assert (acme["requests"], acme["images"], acme["errors"], acme["rejected"]) == (9, 7, 2, 0)
    assert (globex["requests"], globex["images"], globex["rejected"]) == (6, 5, 1)
    assert acme["compute_s"] > 0 and globex["compute_s"] > 0
    assert {r["model"] for r in rows if r["tenant"] == "acme"} == {"shapes@1"}

    # The caller's own view: this month's images and the quota left.
    from serve_app.client import DetectionClient

    mine = DetectionClient(api_key=metered.keys["globex"]).usage()
    assert (mine["images_this_month"], mine["monthly_quota"], mine["remaining"]) == (5, 5, 0)
    assert sum(h["images"] for h in mine["hours"]) == 5
