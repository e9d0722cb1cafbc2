"""Quotas enforced cluster-wide by the QuotaLedger, over real HTTP, two router replicas."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tenant_registry.render import render_config
from tenant_registry.store import Registry
from tests.conftest import SAMPLES, wait_for
from tests.integration.conftest import delete_app, deploy

IMAGE = (SAMPLES / "shapes_03.png").read_bytes()


class QuotaApp:
    def __init__(self, context, db: Path, http_port: int) -> None:
        self.context = context
        self.reg = Registry(db)
        platform = self.reg.platform()
        router = platform.router.model_copy(
            update={
                "resources": platform.router.resources.model_copy(update={"num_cpus": 0.1}),
                "autoscaling": platform.router.autoscaling.model_copy(
                    update={"min_replicas": 2, "max_replicas": 2}
                ),
            }
        )
        pool = platform.shared_pool.model_copy(
            update={
                "resources": platform.shared_pool.resources.model_copy(update={"num_cpus": 0.1}),
            }
        )
        self.reg.set_platform(
            platform.model_copy(
                update={
                    "http_port": http_port,
                    "router": router,
                    "shared_pool": pool,
                    "ledger": platform.ledger.model_copy(
                        update={"state_path": str(db.parent / "l.db")}
                    ),
                }
            )
        )
        self.url = f"http://127.0.0.1:{self.reg.platform().http_port}"
        self.keys: dict[str, str] = {}

    def onboard(self, tenant: str, **quota) -> None:
        self.reg.create_tenant(tenant, tenant.title(), "shared", _default_model())
        self.reg.set_quota(tenant, **quota)
        self.keys[tenant] = self.reg.issue_key(tenant)[1]

    def apply(self) -> None:
        deploy(self.context, render_config(self.reg.tenants(), self.reg.platform()))

    def post(self, tenant: str) -> requests.Response:
        return requests.post(
            f"{self.url}/v1/detect",
            data=IMAGE,
            timeout=60,
            headers={"Authorization": f"Bearer {self.keys[tenant]}"},
        )


def _default_model():
    from serve_app.model_store import fetch_version
    from tenant_registry.store import ModelVersion, now_iso

    uri = "file://models/demo/shapes/1"
    manifest = fetch_version(uri).manifest
    return "shapes", ModelVersion(
        version=1, uri=uri, architecture="yolov8n", sha256=manifest.sha256, created_at=now_iso()
    )


@pytest.fixture(scope="module")
def quota_app(ray_cluster, tmp_path_factory, http_port):
    delete_app()
    app = QuotaApp(ray_cluster, tmp_path_factory.mktemp("quota") / "registry.db", http_port)
    app.onboard("rated", requests_per_s=5, burst=5)
    app.onboard("capped", max_concurrent=1)
    app.onboard("monthly", monthly_images=3)
    app.onboard("free")
    app.apply()
    wait_for(lambda: app.post("free").status_code == 200, 300, "the quota app to serve")
    return app


def _router_replicas(context) -> int:
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

    details = ServeSubmissionClient(f"http://{context.dashboard_url}").get_serve_details()
    replicas = details["applications"]["yolo"]["deployments"]["router"]["replicas"]
    return sum(r["state"] == "RUNNING" for r in replicas)


def test_rate_limit_holds_across_two_router_replicas(quota_app):
    wait_for(lambda: _router_replicas(quota_app.context) == 2, 120, "two router replicas")
    duration_s, rate, burst = 4.0, 5, 5
    stop_at = time.monotonic() + duration_s
    statuses: list[int] = []
    lock = threading.Lock()

    def hammer() -> None:
        with requests.Session() as session:  # its own connection: spread over the replicas
            while time.monotonic() < stop_at:
                resp = session.post(
                    f"{quota_app.url}/v1/detect",
                    data=IMAGE,
                    timeout=60,
                    headers={"Authorization": f"Bearer {quota_app.keys['rated']}"},
                )
                with lock:
                    statuses.append(resp.status_code)
                if resp.status_code == 429:
                    body = resp.json()
                    assert body["error"]["code"] == "quota_exceeded"
                    assert int(resp.headers["Retry-After"]) >= 1
                    assert resp.headers["RateLimit-Limit"] == str(burst)
                    assert resp.headers["RateLimit-Remaining"] == "0"
                    assert "RateLimit-Reset" in resp.headers
                    for other in ("capped", "monthly", "free"):
                        assert other not in resp.text and other not in str(resp.headers)

    with ThreadPoolExecutor(max_workers=12) as pool:
        for f in [pool.submit(hammer) for _ in range(12)]:
            f.result()
    admitted, refused = statuses.count(200), statuses.count(429)
    expected = rate * duration_s + burst
    assert set(statuses) <= {200, 429}
    assert refused > admitted  # the flood really was several times the rate
    assert abs(admitted - expected) <= 0.1 * expected + 1, (admitted, refused, expected)


def test_concurrency_cap(quota_app):
    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(lambda _: quota_app.post("capped"), range(8)))
    codes = [r.status_code for r in responses]
    assert 200 in codes and 429 in codes, codes
    refused = next(r for r in responses if r.status_code == 429)
    assert "in flight" in refused.json()["error"]["message"]
    assert quota_app.post("capped").status_code == 200  # leases were released


def test_monthly_quota_survives_a_ledger_restart(quota_app):
    import ray
    from ray import serve

    assert [quota_app.post("monthly").status_code for _ in range(4)] == [200, 200, 200, 429]
    ledger = serve.get_deployment_handle("quota-ledger", "yolo")
    ledger.flush.remote().result()  # what the 1 s flush loop does
    from ray.util.state import list_actors

    [actor] = [
        a
        for a in list_actors(filters=[("state", "=", "ALIVE")])
        if "quota-ledger" in (a.class_name or "")
    ]
    ray.kill(ray.get_actor(actor.name, namespace="serve"), no_restart=True)

    def restarted_and_enforcing() -> bool:
        return (
            quota_app.post("monthly").status_code == 429
            and quota_app.post("free").status_code == 200
        )

    wait_for(restarted_and_enforcing, 120, "a new ledger that remembers the month's usage")
    usage = ledger.usage.remote("monthly").result()
    assert sum(usage["monthly_images"].values()) == 3


def test_router_fails_closed_without_a_ledger(quota_app):
    platform = quota_app.reg.platform()
    quota_app.reg.set_platform(
        platform.model_copy(
            update={
                "ledger": platform.ledger.model_copy(
                    update={
                        "resources": platform.ledger.resources.model_copy(update={"num_cpus": 64})
                    }
                ),
            }
        )
    )
    delete_app()  # the old ledger must not keep answering during the rollout
    quota_app.apply()

    def refused_closed() -> bool:
        resp = quota_app.post("free")
        return resp.status_code == 503 and resp.json()["error"]["code"] == "overloaded"

    wait_for(refused_closed, 180, "the router to refuse with 503 while no ledger can run")
    resp = quota_app.post("free")
    assert int(resp.headers["Retry-After"]) >= 1
    delete_app()
