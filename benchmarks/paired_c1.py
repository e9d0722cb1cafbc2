"""Concurrency 1, raw and platform in the same minutes: paired short blocks.

`scripts/bench.py` measures each system's cells minutes apart, and on this VM the speed of
a minute moves either system's p50 by 20-30 %, so a ratio follows whichever got the faster
minute. Here, with the platform up (`bench.PlatformRun`, the shipped settings):

* every platform process (Ray, `serve run`, HAProxy) is paused with SIGSTOP and raw ONNX
  Runtime runs a block in this process on a quiet machine — the square the issue's bar
  uses and each image's rectangle (the pixels the platform runs);
* the platform is resumed and serves a block over HTTP (`bench.post`);
* raw runs a block beside the idle, running platform (what the platform's background
  costs the engine);

``--rounds`` times, and prints the medians and the ratios. A pause is a fraction of a
second, far inside every health check's timeout; the script checks `/readyz` at the end.

    .venv/bin/python benchmarks/paired_c1.py [--rounds 10] [--block 16] [--imgsz 320]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import bench  # noqa: E402  (and YOLO_OFFLINE before ultralytics)

SETTLE_S = 0.3  # after a resume, before the platform's block: its loops catch up first


def raw_runner(imgsz: int) -> Callable[[bytes, int], None]:
    """Raw ONNX Runtime as `bench.raw_cells` runs it at concurrency 1 (two threads: its
    faster batch-1 setting here), letterboxing with the given stride."""
    import cv2
    import numpy as np
    import torch

    from serve_app.inference.letterbox import letterbox
    from serve_app.models import engine
    from serve_app.models.cache import WeightsCache
    from serve_app.models.runner import OnnxRunner, Thresholds
    from serve_app.models.store import fetch_version

    torch.set_num_threads(1)  # NMS only
    fetched = fetch_version("file://models/demo/shapes/1")
    cache_dir = Path(tempfile.mkdtemp())
    engine.build(fetched.manifest, fetched.weights, "cpu", WeightsCache(cache_dir), threads=1)
    [graph] = cache_dir.glob("*.onnx")
    runner = OnnxRunner(engine.onnx_session(graph, os.cpu_count() or 1))
    thresholds = Thresholds(conf=0.25, iou=0.7, max_det=300, classes=None)

    def run(image: bytes, stride: int) -> None:
        decoded = cv2.imdecode(np.frombuffer(image, np.uint8), cv2.IMREAD_COLOR)
        assert decoded is not None  # the bench's own sample images
        runner.predict([letterbox(decoded[..., ::-1], imgsz, stride)[0]], imgsz, thresholds)

    return run


def platform_pids() -> list[int]:
    import psutil

    me = os.getpid()
    keys = ("ray", "serve ", "haproxy")
    return [
        p.pid
        for p in psutil.process_iter(["pid", "cmdline"])
        if p.pid != me and any(k in " ".join(p.info["cmdline"] or []) for k in keys)
    ]


@contextlib.contextmanager
def paused(pids: list[int]) -> Iterator[None]:
    """Every platform process stopped for the block, resumed whatever happens."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--block", type=int, default=16, help="calls per block")
    parser.add_argument("--imgsz", type=int, default=320)
    args = parser.parse_args()
    from serve_app.constants import IMGSZ_STRIDE_PX

    images = [p.read_bytes() for p in bench.IMAGES]
    raw = raw_runner(args.imgsz)
    square, rectangle = args.imgsz, IMGSZ_STRIDE_PX
    found: dict[str, list[float]] = {}

    def block(name: str, call: Callable[[bytes], Any]) -> None:
        for i in range(args.block):
            image = images[i % len(images)]
            started = time.perf_counter()
            call(image)
            found.setdefault(name, []).append((time.perf_counter() - started) * 1e3)

    with bench.PlatformRun(driver=False) as run:
        local = threading.local()
        url = f"{run.url}?imgsz={args.imgsz}"
        headers = {"Authorization": f"Bearer {bench.DEMO_KEY}"}

        def platform(image: bytes) -> None:
            bench.post(local, url, image, headers)

        for image in images:  # warm-up, not counted
            platform(image)
            raw(image, square)
        pids = platform_pids()
        for _ in range(args.rounds):
            with paused(pids):
                block("raw square, platform paused", lambda b: raw(b, square))
                block("raw rectangle, platform paused", lambda b: raw(b, rectangle))
            time.sleep(SETTLE_S)
            block("platform HTTP", platform)
            block("raw square, beside the idle platform", lambda b: raw(b, square))
        ready = bench.requests.get(run.url.replace("/v1/detect", "/readyz"), timeout=30)
    p50 = {name: statistics.median(times) for name, times in found.items()}
    print(f"imgsz {args.imgsz}, {args.rounds} rounds of {args.block} calls, "
          f"{len(pids)} platform processes paused during raw's blocks")  # fmt: skip
    for name, value in p50.items():
        print(f"  p50 {name}: {value:.2f} ms")
    platform_p50 = p50["platform HTTP"]
    print(f"  platform / raw square: {platform_p50 / p50['raw square, platform paused']:.2f} "
          f"(issue 15's bar: <= 1.5)")  # fmt: skip
    print(f"  platform / raw rectangle: {platform_p50 / p50['raw rectangle, platform paused']:.2f}")
    print(f"  /readyz after the pauses: {ready.status_code}")
    return 0 if ready.status_code == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
