"""Detect objects in a folder of images through Serve handles (or HTTP); write JSONL.

Runs inside the Ray cluster (no HTTP): connects to the running cluster, calls the
``yolo`` app's router with the tenant's API key through ``DetectionClient``, keeps
a bounded number of requests in flight, and writes one JSON line per image
(``{"file", "result"}`` or ``{"file", "error"}``), in the folder's sorted order.
With ``--url`` it runs anywhere instead, over HTTP (``HttpDetectionClient``: kept-alive
connections, 429/503 tried again after their Retry-After), with no Ray at all.

    YOLOSERVE_API_KEY=yk_... python scripts/batch_detect.py samples/ -o var/out.jsonl
    ... --in-task   # run the whole job as a Ray task on the cluster instead of here
    ... --url http://127.0.0.1:8000   # over HTTP, from outside the cluster
    python scripts/batch_detect.py s3://bucket/in/ -o s3://bucket/out/run.jsonl \
        --api-key-file /etc/yoloserve/batch/api-key   # what the RayJob runs

Input and output may be S3 locations; boto3 takes credentials (and an endpoint, through
``AWS_ENDPOINT_URL``) from the environment, as on the cluster's pods.

The key is read from ``YOLOSERVE_API_KEY`` (or ``--api-key-file``), never from argv,
so it does not show up in ``ps`` or shell history.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
DEFAULT_IN_FLIGHT = 8


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def _s3() -> Any:
    import boto3

    return boto3.client("s3")


def list_inputs(location: str) -> list[tuple[str, Callable[[], bytes]]]:
    """(name, reader) for every image in a folder or under an s3:// prefix, sorted."""
    if not location.startswith("s3://"):
        return [(p.name, p.read_bytes) for p in list_images(Path(location))]
    client = _s3()
    bucket, prefix = _split_s3(location)
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]

    def reader(key: str) -> Callable[[], bytes]:
        return lambda: bytes(client.get_object(Bucket=bucket, Key=key)["Body"].read())

    return [
        (key[len(prefix) :], reader(key))
        for key in sorted(keys)
        if Path(key).suffix.lower() in IMAGE_SUFFIXES and "/" not in key[len(prefix) :]
    ]


def run_batch(
    folder: str,
    out_path: str,
    api_key: str,
    max_in_flight: int = DEFAULT_IN_FLIGHT,
    params: dict[str, Any] | None = None,
    progress: bool = True,
    url: str | None = None,
) -> dict[str, float]:
    """Detect every image in ``folder`` and write JSONL to ``out_path``.

    Callable from a driver or from inside a Ray task or actor; with ``url``, over HTTP
    from anywhere. Returns counts and throughput.
    """
    from tqdm import tqdm

    from serve_app.client import DetectionClient, HttpDetectionClient
    from serve_app.errors import unwrap_error

    client: Any = (
        HttpDetectionClient(url, api_key, max_in_flight=max_in_flight)
        if url
        else DetectionClient(api_key=api_key)
    )
    files = list_inputs(folder)
    pending: deque[tuple[str, Any]] = deque()
    ok = failed = 0
    started = time.perf_counter()
    to_s3 = out_path.startswith("s3://")
    out = Path(out_path)
    if to_s3:  # written here, uploaded once complete
        fd, staged = tempfile.mkstemp(suffix=".jsonl")
        os.close(fd)
        out = Path(staged)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as sink, tqdm(total=len(files), unit="img", disable=not progress) as bar:

        def drain_one() -> None:
            nonlocal ok, failed
            name, response = pending.popleft()
            try:
                result = response.result()
                line: dict[str, Any] = {"file": name, "result": result.model_dump(mode="json")}
                ok += 1
            except Exception as exc:
                api_error = unwrap_error(exc)
                if api_error is None:
                    raise
                line = {
                    "file": name,
                    "error": {"code": api_error.code, "message": api_error.message},
                }
                failed += 1
            sink.write(json.dumps(line) + "\n")
            bar.update(1)

        for name, read in files:
            if len(pending) >= max_in_flight:
                drain_one()
            pending.append((name, client.submit(read(), **(params or {}))))
        while pending:
            drain_one()
    if url:
        client.close()
    if to_s3:
        bucket, key = _split_s3(out_path)
        _s3().upload_file(str(out), bucket, key)
        out.unlink()
    elapsed = time.perf_counter() - started
    return {
        "images": len(files),
        "ok": ok,
        "failed": failed,
        "seconds": elapsed,
        "images_per_s": len(files) / elapsed if elapsed > 0 else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="a folder of images, or s3://bucket/prefix/")
    parser.add_argument("-o", "--out", default="var/batch.jsonl", help="a file or s3://bucket/key")
    parser.add_argument(
        "--api-key-file", type=Path, help="file holding the key (else $YOLOSERVE_API_KEY)"
    )
    parser.add_argument("--max-in-flight", type=int, default=DEFAULT_IN_FLIGHT)
    parser.add_argument("--address", default="auto", help="Ray cluster address (default: auto)")
    parser.add_argument("--in-task", action="store_true", help="run the job as a Ray task")
    parser.add_argument("--url", help="over HTTP to this address instead (no Ray needed)")
    parser.add_argument("--conf", type=float)
    args = parser.parse_args()

    key = (
        args.api_key_file.read_text().strip()
        if args.api_key_file
        else os.environ.get("YOLOSERVE_API_KEY")
    )
    if not key:
        parser.error("set YOLOSERVE_API_KEY or pass --api-key-file")
    remote = args.folder.startswith("s3://")
    if not remote and not Path(args.folder).is_dir():
        parser.error(f"{args.folder} is not a folder (nor an s3:// location)")
    if args.max_in_flight < 1:
        parser.error("--max-in-flight must be at least 1")
    params = {"conf": args.conf} if args.conf is not None else {}
    if args.url and args.in_task:
        parser.error("--in-task runs on the Ray cluster; --url runs here over HTTP: pick one")
    folder = args.folder if remote else str(Path(args.folder).resolve())
    out = args.out if args.out.startswith("s3://") else str(Path(args.out).resolve())
    if args.url:
        stats = run_batch(folder, out, key, args.max_in_flight, params, url=args.url)
        _report(stats, out)
        return

    import ray

    ray.init(address=args.address, logging_level="ERROR", log_to_driver=False)
    if args.in_task:
        task = ray.remote(num_cpus=0.1)(run_batch)
        stats = ray.get(task.remote(folder, out, key, args.max_in_flight, params, False))
    else:
        stats = run_batch(folder, out, key, args.max_in_flight, params)
    _report(stats, out)


def _report(stats: dict[str, float], out: str) -> None:
    print(
        f"{stats['images']} images ({stats['ok']} ok, {stats['failed']} failed) in "
        f"{stats['seconds']:.1f} s: {stats['images_per_s']:.2f} images/s -> {out}"
    )


if __name__ == "__main__":
    main()
