"""Measure model loading from S3 and hot-swap latency, on this machine.

Starts moto's S3 server (a real HTTP endpoint) and a local Ray, then prints:

* load from S3: download + verify (sha256) + build (safetensors onto the YAML) +
  warm-up, for the demo yolov8n, with a cold and a warm node-local cache;
* swap latency: ``model activate`` + render + submit (what ``tenantctl apply`` does)
  until the first response that comes from the new version, under a request loop.

    .venv/bin/python scripts/measure_model_swap.py [--swaps 5] [--loads 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "measure",
        "AWS_SECRET_ACCESS_KEY": "measure",
        "AWS_DEFAULT_REGION": "us-east-1",
        "YOLO_OFFLINE": "1",
        "YOLO_AUTOINSTALL": "false",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
)

from serve_app.config import StoreSettings  # noqa: E402
from serve_app.models.cache import WeightsCache  # noqa: E402
from serve_app.models.loader import build_yolo  # noqa: E402
from serve_app.models.store import fetch_version  # noqa: E402
from tenant_registry.publish import published_config  # noqa: E402
from tenant_registry.push import prepare, push_version, upload  # noqa: E402
from tenant_registry.store import Registry  # noqa: E402

DEMO = ROOT / "models" / "demo" / "shapes" / "1"
IMAGE = (ROOT / "samples" / "shapes_02.jpg").read_bytes()
BUCKET = "measure"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_s3() -> tuple[subprocess.Popen[bytes], str]:
    import requests

    port = free_port()
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            requests.get(f"{url}/moto-api/", timeout=1)
            return proc, url
        except requests.RequestException:
            threading.Event().wait(0.2)
    raise SystemExit("moto server did not start")


def push(reg: Registry, tenant: str, names: list[str], activate: bool) -> int:
    version, _ = push_version(
        reg,
        tenant,
        "pcb",
        DEMO / "model.safetensors",
        arch="yolov8n",
        class_names=names,
        imgsz=320,
        activate=activate,
    )
    return version.version


def measure_loads(settings: StoreSettings, uri: str, loads: int) -> None:
    rows = []
    for i in range(loads):
        cache = WeightsCache(Path(tempfile.mkdtemp(prefix="cache-")))
        for label in ("cold cache", "warm cache"):
            t0 = time.perf_counter()
            fetched = fetch_version(uri, settings, cache)
            t1 = time.perf_counter()
            yolo = build_yolo(fetched.manifest, fetched.weights)
            t2 = time.perf_counter()
            yolo.predict(__import__("numpy").zeros((64, 64, 3), "uint8"), imgsz=320, verbose=False)
            t3 = time.perf_counter()
            rows.append((label, i, t1 - t0, t2 - t1, t3 - t2))
    print(f"load of yolov8n (6.1 MB) from S3 over HTTP, per step (median of {loads} runs, ms):")
    print(f"  {'':<11} {'download+verify':>16} {'build':>7} {'warm-up':>8} {'total':>7}")
    for label in ("cold cache", "warm cache"):
        sel = [r for r in rows if r[0] == label]
        fetch = statistics.median(r[2] for r in sel) * 1e3
        build = statistics.median(r[3] for r in sel) * 1e3
        warm = statistics.median(r[4] for r in sel) * 1e3
        print(
            f"  {label:<11} {fetch:>16.0f} {build:>7.0f} {warm:>8.0f} {fetch + build + warm:>7.0f}"
        )


def measure_swaps(s3_url: str, swaps: int) -> None:
    import ray
    from ray import serve

    from serve_app.client import DetectionClient
    from serve_app.ray_compat import serve_submission_client

    ctx = ray.init(
        num_cpus=2,
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        dashboard_port=free_port(),
        logging_level="ERROR",
        log_to_driver=False,
    )
    sdk = serve_submission_client(f"http://{ctx.dashboard_url}")
    reg = Registry(Path(tempfile.mkdtemp(prefix="reg-")) / "registry.db")
    base = reg.platform()
    reg.set_platform(
        base.model_copy(
            update={
                "http_port": free_port(),
                "model_store_uri": f"s3://{BUCKET}/tenants",
                "store": StoreSettings(s3_endpoint_url=s3_url),
                "max_models_per_replica": 2,
                "ledger": base.ledger.model_copy(
                    update={"state_path": str(Path(tempfile.mkdtemp()) / "ledger.db")}
                ),
            }
        )
    )
    reg.create_tenant("acme", "Acme", "shared")
    key = reg.issue_key("acme")[1]
    push(reg, "acme", ["v1-circle", "v1-square", "v1-triangle"], activate=True)
    sdk.deploy_applications(published_config(reg))
    deadline = time.monotonic() + 300
    while True:
        try:
            client = DetectionClient(api_key=key)
            client.detect(IMAGE, model="pcb")
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            threading.Event().wait(0.5)
    latest: list[str] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                latest.append(client.detect(IMAGE, model="pcb").model)
            except Exception as exc:
                latest.append(f"error {type(exc).__name__}")

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    results = []
    for _ in range(swaps):
        number = push(reg, "acme", [f"v{n}" for n in ("a", "b", "c")], activate=False)
        sdk.deploy_applications(published_config(reg))  # upload, no switch
        threading.Event().wait(2)  # let the catalog land: we time the switch, not the upload
        started = time.perf_counter()
        reg.activate("acme", "pcb", number)
        sdk.deploy_applications(published_config(reg))
        while latest[-1:] != [f"pcb@{number}"]:
            threading.Event().wait(0.02)
        results.append(time.perf_counter() - started)
    stop.set()
    thread.join(timeout=60)
    errors = [r for r in latest if r.startswith("error")]
    print(
        f"\nswap latency (activate -> first response from the new version), {swaps} swaps, "
        f"request loop running: median {statistics.median(results):.2f} s, "
        f"max {max(results):.2f} s; {len(latest)} requests, {len(errors)} failed"
    )
    serve.shutdown()
    ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loads", type=int, default=5)
    parser.add_argument("--swaps", type=int, default=5)
    args = parser.parse_args()
    proc, url = start_s3()
    try:
        import boto3

        boto3.client("s3", endpoint_url=url).create_bucket(Bucket=BUCKET)
        settings = StoreSettings(s3_endpoint_url=url)
        manifest, weights = prepare(DEMO)
        uri = upload(f"s3://{BUCKET}/bench", settings, "t", "m", 1, manifest, weights)
        measure_loads(settings, uri, args.loads)
        measure_swaps(url, args.swaps)
    finally:
        proc.terminate()


if __name__ == "__main__":
    main()
