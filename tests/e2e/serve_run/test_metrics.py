"""Prometheus metrics of `make run`, scraped from 127.0.0.1:8080 and checked by promtool."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import DEMO_KEY, SAMPLES, wait_for

METRICS_URL = "http://127.0.0.1:8080/metrics"
AUTH = {"Authorization": f"Bearer {DEMO_KEY}"}


def scrape() -> str:
    return requests.get(METRICS_URL, timeout=10).text


def samples(text: str, name: str, **labels: str) -> list[float]:
    """Values of the samples of ``name`` whose labels include ``labels``, read by
    prometheus_client's own exposition parser (which also fails on a malformed scrape)."""
    return [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    ]


def value(text: str, name: str, **labels: str) -> float:
    return sum(samples(text, name, **labels))


def settled_scrape(quiet_s: float = 15.0) -> str:
    """A scrape taken once the demo tenant's counters stopped moving for ``quiet_s``
    (longer than Ray's metrics report interval): earlier tests' requests are then all
    exported, and a delta from here counts only this test's requests."""
    state = {"text": "", "key": None, "since": time.monotonic()}

    def quiet() -> str | None:
        text = scrape()
        key = (
            value(text, "ray_yoloserve_requests_total", tenant="demo"),
            value(text, "ray_yoloserve_images_total", tenant="demo"),
        )
        if key != state["key"]:
            state.update(key=key, since=time.monotonic())
            return None
        return text if time.monotonic() - state["since"] >= quiet_s else None

    return wait_for(quiet, 120, "the demo tenant's counters to settle")


def test_per_tenant_series_count_exactly_what_was_sent(served):
    base = settled_scrape()
    before_ok = value(base, "ray_yoloserve_requests_total", tenant="demo", status="200")
    before_images = value(base, "ray_yoloserve_images_total", tenant="demo", model="shapes@1")
    image = (SAMPLES / "shapes_02.jpg").read_bytes()
    sent = 5
    for _ in range(sent):
        resp = requests.post(f"{served['url']}/v1/detect", data=image, headers=AUTH, timeout=60)
        assert resp.status_code == 200
    bad = requests.post(f"{served['url']}/v1/detect", data=b"\x00" * 64, headers=AUTH, timeout=60)
    assert bad.status_code == 415

    def counted() -> str | None:
        text = scrape()
        ok = value(text, "ray_yoloserve_requests_total", tenant="demo", status="200")
        loads = value(text, "ray_yoloserve_model_loads_total", tenant="demo", outcome="loaded")
        batches = value(text, "ray_yoloserve_batch_size_count")
        # The gauge is exported on its own schedule: wait for it as for the counters.
        depth = samples(text, "ray_yoloserve_queue_depth", scope="demo")
        done = ok == before_ok + sent and loads >= 1 and batches >= sent and depth
        return text if done else None

    text = wait_for(counted, 90, "the metrics agent to export the new counts")
    images = value(text, "ray_yoloserve_images_total", tenant="demo", model="shapes@1")
    assert images == before_images + sent
    assert value(text, "ray_yoloserve_requests_total", tenant="demo", status="415") >= 1
    assert value(text, "ray_yoloserve_compute_seconds_total", tenant="demo") > 0
    assert value(text, "ray_yoloserve_request_latency_seconds_count", tenant="demo") >= sent
    assert value(text, "ray_yoloserve_inference_latency_seconds_count", tenant="demo") >= sent
    assert value(text, "ray_yoloserve_model_load_seconds_count", tenant="demo") >= 1
    assert all(d >= 0 for d in samples(text, "ray_yoloserve_queue_depth", scope="demo"))
    assert DEMO_KEY not in text


def test_the_exposition_passes_promtool(served):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: `make tools` installs Debian's prometheus package")
    text = scrape()
    assert "ray_yoloserve_requests_total" in text
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    # Exit 0: clean; 3: lint findings only; 1: the exposition does not parse.
    findings = (result.stdout + result.stderr).splitlines()
    assert result.returncode in (0, 3), findings[-20:]
    for finding in findings:
        if "yoloserve" in finding:
            # Ray adds its own camelCase labels (NodeAddress, WorkerId…) to every series;
            # anything else about our series is ours to fix.
            assert "camelCase" in finding, finding
