"""Shared test helpers: paths, sample truth, box matching."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# A request body must arrive whole within this (30 s in production): the clusters tests
# start inherit it, and tests/security/test_parsing.py waits for the 408.
os.environ.setdefault("YOLOSERVE_BODY_READ_TIMEOUT_S", "5")
# An ONNX graph's sandboxed load (models/sandbox.py): an endless graph is cut at 8 s, not 60.
os.environ.setdefault("YOLOSERVE_ONNX_LOAD_TIMEOUT_S", "8")

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
DEMO_MODEL = ROOT / "models" / "demo" / "shapes" / "1"
DEMO_KEY = "yk_demo_localonly"
# make run's three tenants (configs/serve.local.yaml, docs/tour.md): local demo keys only.
DEMO_KEYS = {"demo": DEMO_KEY, "acme": "yk_acme_localonly", "globex": "yk_globex_localonly"}


def ground_truth() -> dict[str, list[dict[str, object]]]:
    return json.loads((SAMPLES / "ground_truth.json").read_text())


def iou(a: list[float], b: list[float]) -> float:
    ix1, iy1, ix2, iy2 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, ix2 - ix1) * max(0.0, iy2 - iy1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def matched_shapes(truth: list[dict], detections: list[dict]) -> int:
    """Greedy one-to-one matching: a truth shape counts if an unused detection of the
    same class overlaps it with IoU >= 0.5."""
    used: set[int] = set()
    hits = 0
    for shape in truth:
        best, best_iou = None, 0.5
        for i, det in enumerate(detections):
            if i in used or det["class_name"] != shape["class_name"]:
                continue
            overlap = iou(shape["bbox"], det["bbox"])
            if overlap >= best_iou:
                best, best_iou = i, overlap
        if best is not None:
            used.add(best)
            hits += 1
    return hits


def wait_for(condition, timeout_s: float, what: str, poll_s: float = 0.25):
    """Poll ``condition`` until it returns a truthy value or ``timeout_s`` passes.

    Returns that value. Waiting on a condition, not for a fixed time: the poll
    interval only bounds how soon after the condition holds we notice.
    """
    import threading
    import time

    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    tick = threading.Event()
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except Exception as exc:  # the service may not be up yet
            last_error = exc
        tick.wait(poll_s)
    raise TimeoutError(
        f"timed out after {timeout_s:.0f} s waiting for {what}; last error: {last_error!r}"
    )


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listening_sockets(port: int) -> dict[str, set[int]]:
    """The listening TCP sockets on ``port`` (by inode), each with the PIDs holding it
    (/proc: several processes can hold one socket, which psutil reports once)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].split(":")[1], 16) == port and fields[3] == "0A":  # LISTEN
                inodes.add(fields[9])
    held: dict[str, set[int]] = {inode: set() for inode in inodes}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:[") and target[8:-1] in held:
                    held[target[8:-1]].add(int(pid))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return held


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG whose header claims ``width`` x ``height`` but holds almost no data:
    a decompression bomb's calling card."""
    import struct
    import zlib

    out = b"\x89PNG\r\n\x1a\n"
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    for kind, data in ((b"IHDR", ihdr), (b"IDAT", zlib.compress(b"\x00" * 64)), (b"IEND", b"")):
        out += (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )
    return out


def start_s3_server(tmp_dir) -> tuple[object, str]:
    """moto's standalone S3 server as a separate process on a free loopback port.

    boto3 talks to it over real HTTP with signed requests, exactly as to AWS.
    Returns (process, endpoint URL).
    """
    import subprocess
    import sys

    import requests

    port = free_port()
    log = open(Path(tmp_dir) / "moto.log", "w")  # noqa: SIM115  (closed with the process)
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    wait_for(
        lambda: requests.get(f"{url}/moto-api/", timeout=2).status_code < 500,
        60,
        "the S3 test server",
    )
    return proc, url


S3_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing-key-id",
    "AWS_SECRET_ACCESS_KEY": "testing-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def export_demo_onnx(out_dir) -> bytes:
    """The demo model exported to ONNX by ultralytics (what a tenant would upload)."""
    import os

    from serve_app.models.loader import build_yolo
    from serve_app.models.store import fetch_version

    demo = fetch_version("file://models/demo/shapes/1")
    yolo = build_yolo(demo.manifest, demo.weights)
    cwd = os.getcwd()
    os.chdir(out_dir)  # ultralytics writes the export beside the model's (YAML) name
    try:
        path = yolo.export(format="onnx", imgsz=demo.manifest.imgsz, simplify=False)
    finally:
        os.chdir(cwd)
    return (Path(out_dir) / path).read_bytes()


def start_local_ray(num_gpus: int = 1):
    """One local Ray for a test tier (2 CPUs, ``num_gpus`` pretend GPUs, a dashboard for
    Serve config submission). Returns the ``ray.init`` context; ``stop_local_ray`` ends it."""
    import ray

    os.environ.pop("CUDA_VISIBLE_DEVICES", None)  # raylet start fails with it set
    return ray.init(
        num_cpus=2,
        num_gpus=num_gpus,
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        dashboard_port=free_port(),
        logging_level="ERROR",
        log_to_driver=False,
    )


def stop_local_ray() -> None:
    import ray
    from ray import serve

    serve.shutdown()
    ray.shutdown()


def deploy_config(context, config: dict) -> None:
    """Submit a Serve config to the cluster the way ``serve deploy`` does."""
    from serve_app.ray_compat import serve_submission_client

    serve_submission_client(f"http://{context.dashboard_url}").deploy_applications(config)


def delete_yolo_app() -> None:
    """Delete the yolo app (and wait until it is gone), if Serve is running at all."""
    import contextlib

    from ray import serve
    from ray.serve.exceptions import RayServeException

    with contextlib.suppress(RayServeException):  # no Serve instance yet: nothing to delete
        serve.delete("yolo")
    # The next app gets a fresh ledger file: journals its predecessor's routers left
    # unsettled (their ledger went first) belong to the old ledger, not to the next test's.
    import shutil

    from serve_app.constants import JOURNAL_FOLDER
    from serve_app.ray_compat import node_session_folder

    shutil.rmtree(node_session_folder() / JOURNAL_FOLDER, ignore_errors=True)


def ledger_call(method: str, *args):
    """A quota ledger method's answer from whichever replica leads (after the primary
    was killed, the standby), as ``tenantctl`` asks it."""
    from ray import serve

    from serve_app.constants import APP_NAME, LEDGER_DEPLOYMENT, LEDGER_STANDBY_DEPLOYMENT
    from serve_app.quota.failover import ask_leader_blocking

    handles = [
        serve.get_deployment_handle(name, APP_NAME)
        for name in (LEDGER_DEPLOYMENT, LEDGER_STANDBY_DEPLOYMENT)
    ]
    return ask_leader_blocking(handles, method, *args, timeout_s=30)


def kill_primary_ledger() -> None:
    """Kill the primary ledger replica's actor outright (no shutdown hook, no final
    export), as a crash would; the routers have made it the leader."""
    import ray
    from ray.util.state import list_actors

    [actor] = [
        a
        for a in list_actors(filters=[("state", "=", "ALIVE")])
        if a.class_name == "ServeReplica:yolo:quota-ledger"
    ]
    ray.kill(ray.get_actor(actor.name, namespace="serve"), no_restart=True)
