"""Measure onboarding: registry change -> first 200 OK, and what other tenants feel.

Against a running local cluster (``ray start --head``), with a fresh registry of its
own, this runs the real commands an operator runs and prints:

* shared tier: ``tenantctl tenant create acme --tier shared`` + ``key issue`` +
  ``apply`` until the first ``200`` from ``/v1/detect`` with the new key;
* dedicated tier: the same with ``--tier dedicated`` (a rolling restart);
* during each apply, an existing tenant's request loop: requests, failures, and
  worst and median latency.

    ray start --head --num-cpus=4 --dashboard-host=127.0.0.1
    .venv/bin/python scripts/measure_onboarding.py --http-port 8011

The app it deploys is deleted at the end unless ``--keep``.
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

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tenant_registry.cluster import (  # noqa: E402
    default_address,
    delete_applications,
    serve_details,
)

BIN = Path(sys.executable).parent
IMAGE = (ROOT / "samples" / "shapes_03.png").read_bytes()
POLL_S = 0.1
TIMEOUT_S = 600.0


class Loop(threading.Thread):
    """One tenant's sequential traffic; latencies of every request while running."""

    def __init__(self, url: str, key: str) -> None:
        super().__init__(daemon=True)
        self.url, self.key = url, key
        self.stop = threading.Event()
        self.samples: list[tuple[float, int | str]] = []

    def run(self) -> None:
        while not self.stop.is_set():
            t = time.perf_counter()
            try:
                status: int | str = detect_status(self.url, self.key)
            except requests.RequestException as exc:
                status = type(exc).__name__
            self.samples.append((time.perf_counter() - t, status))


def detect_status(url: str, key: str) -> int:
    return requests.post(
        f"{url}/v1/detect", data=IMAGE, headers={"Authorization": f"Bearer {key}"}, timeout=120
    ).status_code


def until(condition, what: str) -> float:  # type: ignore[no-untyped-def]
    """Seconds until ``condition()`` holds, polling every POLL_S."""
    started = time.perf_counter()
    tick = threading.Event()
    while time.perf_counter() - started < TIMEOUT_S:
        try:
            if condition():
                return time.perf_counter() - started
        except (requests.RequestException, KeyError):
            pass
        tick.wait(POLL_S)
    raise SystemExit(f"timed out waiting for {what}")


def settled(address: str) -> bool:
    app = serve_details(address).get("applications", {}).get("yolo")
    return (
        bool(app)
        and app["status"] == "RUNNING"
        and all(r["state"] == "RUNNING" for d in app["deployments"].values() for r in d["replicas"])
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", default=default_address(), help="Ray dashboard URL")
    parser.add_argument("--http-port", type=int, default=8011)
    parser.add_argument("--keep", action="store_true", help="leave the app deployed")
    args = parser.parse_args()
    url = f"http://127.0.0.1:{args.http_port}"
    db = Path(tempfile.mkdtemp(prefix="onboarding-")) / "registry.db"
    env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "false"}

    def ctl(*cmd: str) -> str:
        out = subprocess.run(
            [str(BIN / "tenantctl"), "--db", str(db), *cmd],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode:
            raise SystemExit(f"tenantctl {' '.join(cmd)} failed: {out.stderr}")
        return out.stdout.strip()

    ctl("init", "--http-port", str(args.http_port))
    ctl("platform", "set", "--ledger-state-path", str(db.parent / "ledger.db"))
    ctl("tenant", "create", "base", "--tier", "shared")
    base_key = ctl("key", "issue", "base")
    ctl("apply", "--address", args.address)
    until(lambda: detect_status(url, base_key) == 200 and settled(args.address), "the baseline app")
    print(f"cluster {args.address}, app on {url}; baseline tenant 'base' (shared) serving\n")

    rows = []
    for tenant, tier in (("acme", "shared"), ("bigco", "dedicated")):
        loop = Loop(url, base_key)
        loop.start()
        until(lambda: len(loop.samples) >= 5, "baseline traffic")  # noqa: B023
        quiet = [s for s, _ in loop.samples]
        started = time.perf_counter()
        ctl("tenant", "create", tenant, "--tier", tier)
        key = ctl("key", "issue", tenant)
        ctl("apply", "--address", args.address)
        first_ok = (
            time.perf_counter()
            - started
            + until(
                lambda: detect_status(url, key) == 200,  # noqa: B023
                f"{tenant}'s first 200",
            )
        )
        until(lambda: settled(args.address), "the rollout to settle")
        loop.stop.set()
        loop.join()
        during = loop.samples[len(quiet) :]
        failures = [s for _, s in during if s != 200]
        latencies = [s for s, _ in during]
        rows.append(
            (
                tier,
                first_ok,
                len(during),
                len(failures),
                statistics.median(quiet),
                statistics.median(latencies),
                max(latencies),
            )
        )

    print(
        f"{'tier':<10} {'to first 200':>13} {'other tenant: requests':>23} {'failed':>7} "
        f"{'p50 before':>11} {'p50 during':>11} {'worst':>8}"
    )
    for tier, first, n, failed, p50q, p50, worst in rows:
        print(
            f"{tier:<10} {first:>12.1f}s {n:>23} {failed:>7} {p50q * 1e3:>9.0f}ms "
            f"{p50 * 1e3:>9.0f}ms {worst * 1e3:>6.0f}ms"
        )
    if not args.keep:
        delete_applications(args.address)


if __name__ == "__main__":
    main()
