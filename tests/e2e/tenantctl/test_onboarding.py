"""Onboarding through tenantctl against a real local cluster.

One flow, in order, as an operator would run it: apply an empty registry, onboard a
shared tenant (no replica restarts), onboard a dedicated tenant while another
tenant's traffic keeps flowing (no request dropped), then suspend, revoke and delete.
"""

from __future__ import annotations

import json
import threading
import time

import requests

from tenant_registry.cluster import serve_details
from tests.conftest import SAMPLES, wait_for

IMAGE = (SAMPLES / "shapes_03.png").read_bytes()


def _status(url: str, key: str) -> int:
    return requests.post(
        f"{url}/v1/detect", data=IMAGE, timeout=60, headers={"Authorization": f"Bearer {key}"}
    ).status_code


def _replicas(address: str) -> set[tuple[str, str, int]]:
    """(deployment, replica id, pid) of every running replica of the app."""
    app = serve_details(address)["applications"]["yolo"]
    return {
        (name, r["replica_id"], r["pid"])
        for name, dep in app["deployments"].items()
        for r in dep["replicas"]
        if r["state"] == "RUNNING"
    }


def _settled(address: str) -> bool:
    app = serve_details(address).get("applications", {}).get("yolo")
    if not app or app["status"] != "RUNNING":
        return False
    return all(r["state"] == "RUNNING" for d in app["deployments"].values() for r in d["replicas"])


def _issue_key(tenantctl, tenant: str) -> str:
    key = tenantctl("key", "issue", tenant).stdout.strip()
    assert key.startswith("yk_")
    return key


def _issue_key_with_id(tenantctl, tenant: str) -> tuple[str, str]:
    issued = json.loads(tenantctl("key", "issue", tenant, "--json").stdout)
    return issued["api_key"], issued["key_id"]


class TrafficLoop(threading.Thread):
    """Sequential requests for one tenant until stopped; records every outcome."""

    def __init__(self, url: str, key: str) -> None:
        super().__init__(daemon=True)
        self.url, self.key = url, key
        self.stop = threading.Event()
        self.outcomes: list[tuple[int | str, float]] = []

    def run(self) -> None:
        while not self.stop.is_set():
            started = time.perf_counter()
            try:
                status: int | str = _status(self.url, self.key)
            except requests.RequestException as exc:
                status = type(exc).__name__
            self.outcomes.append((status, time.perf_counter() - started))


def test_onboard_suspend_revoke_delete(registry):
    tenantctl, url, address = registry["tenantctl"], registry["url"], registry["dashboard"]

    # An empty registry deploys: router and shared pool, no tenants, every key refused.
    tenantctl("apply", "--address", address)
    wait_for(lambda: _settled(address), 300, "the empty app to be RUNNING")
    assert _status(url, "yk_nobody") == 401
    assert requests.get(f"{url}/readyz", timeout=30).status_code == 503

    # Shared tier: onboarding is a publish to the tenant directory; the Serve config is
    # unchanged, so it is not even submitted: no replica restarts.
    before = _replicas(address)
    deployed = serve_details(address)["applications"]["yolo"]["last_deployed_time_s"]
    tenantctl("tenant", "create", "acme", "--name", "Acme Corp", "--tier", "shared")
    acme_key = _issue_key(tenantctl, "acme")
    applied = tenantctl("apply", "--address", address, "--wait", "60")
    assert "1 changed tenants" in applied.stderr and "not redeployed" in applied.stderr
    # the first request loads acme's model on the pool; a router knows acme within 2 s
    wait_for(lambda: _status(url, acme_key) == 200, 120, "acme's first 200")
    assert _replicas(address) == before
    assert serve_details(address)["applications"]["yolo"]["last_deployed_time_s"] == deployed

    # Dedicated tier: a new deployment rolls every replica; acme's traffic keeps flowing.
    tenantctl("tenant", "create", "bigco", "--tier", "dedicated")
    (big_key_1, big_key_1_id), big_key_2 = (
        _issue_key_with_id(tenantctl, "bigco"),
        _issue_key(tenantctl, "bigco"),
    )
    loop = TrafficLoop(url, acme_key)
    loop.start()
    wait_for(lambda: len(loop.outcomes) >= 3, 60, "traffic before the apply")
    tenantctl("apply", "--address", address)
    wait_for(lambda: _status(url, big_key_1) == 200, 300, "bigco's first 200")
    wait_for(lambda: _settled(address), 300, "the rolling restart to finish")
    seen = len(loop.outcomes)
    wait_for(lambda: len(loop.outcomes) >= seen + 3, 60, "traffic after the apply")
    loop.stop.set()
    loop.join(timeout=120)
    failures = [o for o in loop.outcomes if o[0] != 200]
    assert not failures, f"{len(failures)} of {len(loop.outcomes)} requests failed: {failures[:5]}"
    details = serve_details(address)["applications"]["yolo"]["deployments"]
    assert "tenant-bigco" in details

    # Suspend a shared tenant: 403, others unaffected, still no replica restarts.
    before = _replicas(address)
    tenantctl("tenant", "suspend", "acme")
    tenantctl("apply", "--address", address)
    wait_for(lambda: _status(url, acme_key) == 403, 120, "acme to be suspended")
    assert _status(url, big_key_1) == 200
    assert _replicas(address) == before

    # Revoke one key: that key 401, the tenant's other key still works.
    listed = json.loads(tenantctl("key", "list", "bigco", "--json").stdout)
    assert big_key_1_id in {k["key_id"] for k in listed}
    tenantctl("key", "revoke", big_key_1_id)
    tenantctl("apply", "--address", address)
    wait_for(lambda: _status(url, big_key_1) == 401, 120, "the revoked key to be refused")
    assert _status(url, big_key_2) == 200

    # Delete: every key 401, the deployment and its models gone.
    tenantctl("tenant", "delete", "bigco", "--yes")
    tenantctl("apply", "--address", address)
    wait_for(lambda: _status(url, big_key_2) == 401, 300, "the deleted tenant's key to be refused")
    wait_for(
        lambda: "tenant-bigco" not in serve_details(address)["applications"]["yolo"]["deployments"],
        300,
        "tenant-bigco to be removed",
    )
    assert "bigco" not in tenantctl("tenant", "list").stdout
    assert _status(url, acme_key) == 403
