"""Router overhead: auth + admission (ledger) + forwarding, with a no-op detector.

Deploys the real ``Router`` and ``QuotaLedger`` with a detector that returns a fixed
result without decoding or inferring, then measures per-request latency:

* ``detector only``: a handle call straight to the no-op detector (one Serve hop);
* ``bare forwarder``: a deployment that only forwards to the detector (two hops, no
  auth, no admission): what any ingress in front of the detector costs in Ray Serve;
* ``router (handle)``: ``DetectionClient`` → router → (allowance or ledger) → detector;
* ``router (HTTP)``: the same through Serve's HTTP proxy (keep-alive connection).

Router overhead = router - detector only, split into Serve's extra hop (bare
forwarder - detector only) and the router's own work (router - bare forwarder).
All measured side by side in one run, for a small JPEG and a large PNG (payloads over
100 KB travel through Ray's object store), at concurrency 1 and 16, p50 and p99.

    .venv/bin/python benchmarks/router_overhead.py [--requests 300]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import requests  # noqa: E402
from ray import serve  # noqa: E402

from serve_app.auth.keys import hash_api_key  # noqa: E402
from serve_app.http.router import Router  # noqa: E402
from serve_app.inference.results import DetectionResult, ImageSize  # noqa: E402
from serve_app.quota.ledger import QuotaLedger  # noqa: E402

KEY = "yk_benchmark_key"
IMAGES = {
    "small JPEG (11 KB)": (ROOT / "samples" / "shapes_00.jpg").read_bytes(),
    "large PNG (715 KB)": (ROOT / "samples" / "shapes_03.png").read_bytes(),
}


@serve.deployment(max_ongoing_requests=64, ray_actor_options={"num_cpus": 0.1})
class NoopDetector:
    """Answers like a Detector, instantly."""

    async def detect(self, image: bytes, params: Any) -> DetectionResult:
        return DetectionResult(
            model="noop@1", image=ImageSize(width=1, height=1), detections=[], timing_ms={}
        )

    async def ready(self) -> bool:
        return True


@serve.deployment(max_ongoing_requests=64, ray_actor_options={"num_cpus": 0.1})
class Forwarder:
    """An ingress that does nothing but forward: the floor for any router."""

    def __init__(self, detector: Any) -> None:
        self._detector = detector.options(multiplexed_model_id="bench/noop@1")

    async def detect_image(self, api_key: str, image: bytes, params: Any = None) -> Any:
        return await self._detector.detect.remote(image, None)


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1e3, ordered[int(0.99 * (len(ordered) - 1))] * 1e3


def run(call, requests_n: int, concurrency: int) -> tuple[float, float, float]:  # type: ignore[no-untyped-def]
    latencies: list[float] = []
    lock = threading.Lock()

    def one(_: int) -> None:
        t = time.perf_counter()
        call()
        with lock:
            latencies.append(time.perf_counter() - t)

    for _ in range(20):  # warm-up
        call()
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(one, range(requests_n)))
    elapsed = time.perf_counter() - started
    p50, p99 = percentiles(latencies)
    return p50, p99, requests_n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400)
    args = parser.parse_args()
    import ray

    from serve_app.client import DetectionClient
    from tests.conftest import free_port

    port = free_port()
    ray.init(num_cpus=2, logging_level="ERROR", log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    noop = NoopDetector.options(name="tenant-bench").bind()  # type: ignore[attr-defined]
    pool = NoopDetector.options(name="shared-pool").bind()  # type: ignore[attr-defined]
    ledger = QuotaLedger.options(name="quota-ledger").bind(  # type: ignore[attr-defined]
        str(Path(tempfile.mkdtemp()) / "ledger.db")
    )
    tenant = {
        "id": "bench",
        "name": "Bench",
        "tier": "dedicated",
        "api_keys": [{"id": "key_bench", "sha256": hash_api_key(KEY)}],
        "models": [{"name": "noop", "versions": [1], "active_version": 1}],
        "default_model": "noop",
    }
    router = Router.options(  # type: ignore[attr-defined]
        name="router",
        user_config={"tenants": [tenant]},
        max_ongoing_requests=128,
        ray_actor_options={"num_cpus": 0.1},
    ).bind({"bench": noop}, pool, ledger)
    serve.run(router, name="yolo", route_prefix="/")
    forwarder = serve.run(
        Forwarder.bind(NoopDetector.options(name="fwd-noop").bind()),  # type: ignore[attr-defined]
        name="forwarder",
        route_prefix=None,
    )
    detector = serve.get_deployment_handle("tenant-bench", "yolo").options(
        multiplexed_model_id="bench/noop@1"
    )
    client = DetectionClient(api_key=KEY)
    session = requests.Session()
    headers = {"Authorization": f"Bearer {KEY}"}
    url = f"http://127.0.0.1:{port}/v1/detect"

    print(f"{args.requests} requests per cell, no-op detector, {os.cpu_count()} CPUs\n")
    for label, image in IMAGES.items():
        assert session.post(url, data=image, headers=headers, timeout=30).status_code == 200
        rows = {
            "detector only (handle)": lambda i=image: detector.detect.remote(i, None).result(),
            "bare forwarder (handle)": lambda i=image: forwarder.detect_image.remote(
                KEY, i
            ).result(),
            "router (handle)": lambda i=image: client.detect(i),
            "router (HTTP)": lambda i=image: session.post(url, data=i, headers=headers, timeout=30),
        }
        print(f"## {label}\n")
        print("| path | concurrency | p50 ms | p99 ms | req/s |")
        print("| --- | --- | --- | --- | --- |")
        p50s = {}
        for concurrency in (1, 16):
            for name, call in rows.items():
                p50, p99, rps = run(call, args.requests, concurrency)
                p50s[(name, concurrency)] = p50
                print(f"| {name} | {concurrency} | {p50:.2f} | {p99:.2f} | {rps:.0f} |")
        print()
        for concurrency in (1, 16):
            router = p50s[("router (handle)", concurrency)]
            bare = p50s[("bare forwarder (handle)", concurrency)]
            alone = p50s[("detector only (handle)", concurrency)]
            print(
                f"- concurrency {concurrency}: router overhead {router - alone:.2f} ms p50 = "
                f"Serve's extra hop {bare - alone:.2f} ms + "
                f"router's own work {router - bare:.2f} ms"
            )
        print()
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
