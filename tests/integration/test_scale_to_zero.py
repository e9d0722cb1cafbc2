"""A dedicated tenant with min_replicas 0: no replica while idle, /readyz does not wake
it, and its first request waits through the cold start and gets a 200."""

from __future__ import annotations

import time

import pytest
import requests

from tests.conftest import SAMPLES, wait_for
from tests.integration.conftest import delete_app
from tests.platform_app import Platform

JPEG = (SAMPLES / "shapes_02.jpg").read_bytes()


def _running(deployment: str) -> int:
    from ray import serve

    app = serve.status().applications.get("yolo")
    if app is None or deployment not in app.deployments:
        return -1
    return app.deployments[deployment].replica_states.get("RUNNING", 0)


@pytest.fixture(scope="module")
def sleepy(ray_cluster, tmp_path_factory, http_port):
    delete_app()
    app = Platform(ray_cluster, tmp_path_factory.mktemp("zero") / "registry.db", http_port, 1)
    app.onboard("awake")
    app.onboard("sleepy", tier="dedicated")
    app.reg.set_resources("sleepy", min_replicas=0, max_replicas=1, upscale_delay_s=0)
    app.apply()
    wait_for(lambda: app.detect("awake").status_code == 200, 300, "the shared tenant to serve")
    yield app
    delete_app()


def test_an_idle_tenant_has_no_replica_and_readiness_does_not_wake_it(sleepy):
    assert _running("tenant-sleepy") == 0
    assert requests.get(f"{sleepy.url}/readyz", timeout=120).status_code == 200
    assert _running("tenant-sleepy") == 0


def test_the_first_request_waits_for_a_cold_start_and_succeeds(sleepy):
    started = time.perf_counter()
    response = sleepy.detect("sleepy", data=JPEG)
    cold_start_s = time.perf_counter() - started
    assert response.status_code == 200, response.text
    assert response.json()["detections"]
    assert _running("tenant-sleepy") == 1
    warm = sleepy.detect("sleepy", data=JPEG)
    assert warm.status_code == 200
    print(f"cold start {cold_start_s:.1f} s; warm {warm.elapsed.total_seconds() * 1e3:.0f} ms")
