"""The ledger is not a choke point one tenant can squeeze: a tenant polling its usage and
policy as fast as it can gets 429s from its router (no ledger call), while another
tenant's detections all succeed (http/control.py)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from tests.platform_app import IMAGE
from tests.security.conftest import assert_no_leak, error_code

FLOOD_S = 4.0


def test_one_tenant_flooding_usage_and_policy_never_fails_anothers_detection(platform):
    stop = threading.Event()
    flood: list[requests.Response] = []
    headers = {"Authorization": f"Bearer {platform.keys['poller']}"}

    def poll(path: str) -> None:
        with requests.Session() as session:
            while not stop.is_set():
                flood.append(session.get(f"{platform.url}{path}", headers=headers, timeout=30))

    with ThreadPoolExecutor(8) as pool:
        for i in range(8):
            pool.submit(poll, "/v1/usage" if i % 2 else "/v1/policy")
        deadline = time.monotonic() + FLOOD_S
        detections = []
        while time.monotonic() < deadline:
            detections.append(platform.detect("free", data=IMAGE).status_code)
        stop.set()
    assert detections and set(detections) == {200}, detections
    statuses = {r.status_code for r in flood}
    assert statuses <= {200, 429} and 429 in statuses, statuses
    refused = next(r for r in flood if r.status_code == 429)
    assert error_code(refused, 429) == "quota_exceeded"
    assert "per second" in refused.json()["error"]["message"]
    assert int(refused.headers["Retry-After"]) >= 1
    assert_no_leak(refused)
    # two routers at 5/s with bursts of 20: far fewer answers than the flood's requests
    answered = sum(r.status_code == 200 for r in flood)
    assert answered <= 2 * (20 + 5 * (FLOOD_S + 5)), answered
