"""The control plane at N tenants (issue 18): what a one-tenant change costs.

    .venv/bin/python scripts/measure_scale.py --tenants 1 1000 10000
    ray start --head --num-cpus=4 --dashboard-host=127.0.0.1
    .venv/bin/python scripts/measure_scale.py --tenants 1 1000 10000 --cluster

Offline, for each N: a registry filled with N shared tenants (one key each, the demo
model; a bulk import through ``Registry``), the first publish of the tenant directory
(a snapshot), one tenant onboarded and published (files written, seconds), one key
revoked and published, a router's view and tenant table built from the directory
(seconds, and the memory it holds, by tracemalloc), and ``render`` (seconds, bytes).

With ``--cluster``, against a running local cluster, the same registry is applied with
``tenantctl apply`` (two router replicas), then the operator's own commands are timed
as they are typed — each a ``tenantctl`` process — to their effect over HTTP:

* onboarding: ``tenant create`` + ``key issue`` + ``apply`` → the new key's first 200,
  and → 200 on every router (``EVERY_ROUTER`` answers in a row);
* revocation: ``key revoke`` + ``apply`` → 401 on every router;
* suspension: ``tenant suspend`` + ``apply`` → 403 on every router;
* ``tenantctl render`` and ``apply`` seconds; each router replica's RSS (psutil), once
  its table holds the N tenants.

The app it deploys is deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import requests

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")

from serve_app.errors import Unauthenticated  # after the offline switches


def _fill(reg: Any, n: int, version: Any) -> None:
    """N shared tenants with one key each (a bulk import)."""
    for i in range(n):
        tenant = f"t{i:05d}"
        reg.create_tenant(tenant, f"Tenant {i}", "shared", ("shapes", version))
        reg.issue_key(tenant)


def offline(n: int, folder: Path) -> dict[str, float]:
    from serve_app.auth.followed_table import FollowedTable
    from serve_app.auth.jwks import JwksPool
    from serve_app.blobs import FileStore
    from serve_app.config import RouterConfig
    from serve_app.directory import DirectoryView
    from tenant_registry.publish import publish
    from tenant_registry.records import ModelVersion
    from tenant_registry.render import render_registry, to_yaml
    from tenant_registry.store import Registry

    version = ModelVersion(
        version=1, uri="file://models/demo/shapes/1", architecture="yolov8n",
        sha256="ab" * 32, created_at="t",
    )  # fmt: skip
    out: dict[str, float] = {"tenants": n}
    (folder / "dir").mkdir()
    store = FileStore(folder / "dir")
    with Registry(folder / "r.db") as reg:
        reg.set_platform(reg.platform().model_copy(update={"tenant_directory": True}))
        started = time.perf_counter()
        _fill(reg, n, version)
        out["fill_s"] = time.perf_counter() - started
        started = time.perf_counter()
        publish(reg, store)
        out["first_publish_s"] = time.perf_counter() - started
        reg.create_tenant("newco", "NewCo", "shared", ("shapes", version))
        record, _ = reg.issue_key("newco")
        started = time.perf_counter()
        done = publish(reg, store)
        out["onboard_publish_s"] = time.perf_counter() - started
        out["onboard_files"] = len(done.changed)
        reg.revoke_key(record.key_id)
        started = time.perf_counter()
        publish(reg, store)
        out["revoke_publish_s"] = time.perf_counter() - started
        started = time.perf_counter()
        config = render_registry(reg)
        text = to_yaml(config)
        out["render_s"] = time.perf_counter() - started
        out["config_bytes"] = len(text)
    gc.collect()
    tracemalloc.start()
    started = time.perf_counter()
    view = DirectoryView(keep_sources=False)  # a router's
    view.refresh(store)
    followed = FollowedTable(JwksPool())
    followed._view = view  # the router's: the view it followed, then its table
    followed._config = RouterConfig()
    followed.apply(None)
    out["router_build_s"] = time.perf_counter() - started
    out["router_mib"] = tracemalloc.get_traced_memory()[0] / 2**20
    tracemalloc.stop()
    out["lookup_us"] = asyncio.run(_lookups(followed.table)) * 1e6
    return out


async def _lookups(table: Any, n: int = 2000) -> float:
    """Seconds per authentication of an unknown key (hash, bucket, compare)."""
    started = time.perf_counter()
    for _ in range(n):
        with contextlib.suppress(Unauthenticated):  # unknown: a 401
            await table.authenticate("yk_" + "Q" * 43)
    return (time.perf_counter() - started) / n


EVERY_ROUTER = 12  # answers in a row: each of 2 routers answered some (1 - 2**-11)
POLL_S = 0.02
TIMEOUT_S = 300.0
ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
IMAGE = (ROOT / "samples" / "shapes_03.png").read_bytes()


class Cluster:
    """One registry applied to the running cluster; operator commands and HTTP probes."""

    def __init__(self, folder: Path, address: str, http_port: int) -> None:
        self.db, self.address = folder / "registry.db", address
        self.url = f"http://127.0.0.1:{http_port}/v1/detect"
        self.session = requests.Session()
        self.first = 0.0  # the last change's seconds to its first answer

    def ctl(self, *args: str) -> tuple[float, str]:
        """One ``tenantctl`` command as an operator runs it: seconds, stdout."""
        started = time.perf_counter()
        done = subprocess.run(
            [str(BIN / "tenantctl"), "--db", str(self.db), *args],
            cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        if done.returncode:
            raise SystemExit(f"tenantctl {' '.join(args)} failed: {done.stderr[-2000:]}")
        return time.perf_counter() - started, done.stdout.strip()

    def status(self, key: str) -> int:
        headers = {"Authorization": f"Bearer {key}"}
        try:
            return self.session.post(self.url, data=IMAGE, headers=headers, timeout=60).status_code
        except requests.RequestException:
            return 0

    def until(self, key: str, want: int, started: float) -> tuple[float, float]:
        """Seconds from ``started`` (perf_counter) to the first ``want`` answer, and to the
        first of ``EVERY_ROUTER`` in a row (every router answers so)."""
        first = run_start = None
        run = 0
        while time.perf_counter() - started < TIMEOUT_S:
            at = time.perf_counter() - started
            if self.status(key) == want:
                first = at if first is None else first
                run_start = at if run == 0 else run_start
                run += 1
                if run == EVERY_ROUTER:
                    assert first is not None and run_start is not None
                    return first, run_start
            else:
                run = 0
                time.sleep(POLL_S)
        raise SystemExit(f"no {want} x{EVERY_ROUTER} within {TIMEOUT_S:g} s")

    def change(self, key: str, want: int, apply: tuple[str, ...], started: float) -> float:
        """Run ``apply`` while probing ``key`` (an effect before it returns is seen):
        seconds from ``started`` to ``want`` on every router."""
        with ThreadPoolExecutor(1) as pool:
            probe = pool.submit(self.until, key, want, started)
            self.ctl(*apply)
            first, every = probe.result()
        self.first = first
        return every

    def router_rss_mib(self) -> list[float]:
        from tenant_registry.cluster import serve_details

        app = serve_details(self.address)["applications"]["yolo"]
        pids = [r["pid"] for r in app["deployments"]["router"]["replicas"]]
        return sorted(psutil.Process(pid).memory_info().rss / 2**20 for pid in pids)


def prepare(n: int, folder: Path, http_port: int) -> dict[str, str]:
    """A registry of N shared tenants on the cluster's sizes; two tenants' keys."""
    from tenant_registry.store import Registry

    with Registry(folder / "registry.db") as reg:
        p = reg.platform()
        two = {"min_replicas": 2, "max_replicas": 2}
        one = {"min_replicas": 1, "max_replicas": 1}
        reg.set_platform(
            p.model_copy(
                update={
                    "http_port": http_port,
                    "model_store_uri": f"file://{folder}/models",
                    "router": p.router.model_copy(
                        update={"autoscaling": p.router.autoscaling.model_copy(update=two)}
                    ),
                    "shared_pool": p.shared_pool.model_copy(
                        update={"autoscaling": p.shared_pool.autoscaling.model_copy(update=one)}
                    ),
                    "ledger": p.ledger.model_copy(
                        update={"state_path": str(folder.parent / "ledger.db")}
                    ),
                }
            )
        )
        version = _demo_version()
        keys = {}
        for i in range(n):
            tenant = f"t{i:05d}"
            reg.create_tenant(tenant, f"Tenant {i}", "shared", ("shapes", version))
            record, key = reg.issue_key(tenant)
            if i < 2:
                keys[tenant], keys[f"{tenant}:id"] = key, record.key_id
    return keys


def _demo_version() -> Any:
    from serve_app.models.store import fetch_version
    from serve_app.wire import utc_iso
    from tenant_registry.records import ModelVersion

    uri = "file://models/demo/shapes/1"
    sha = fetch_version(uri).manifest.sha256
    return ModelVersion(
        version=1, uri=uri, architecture="yolov8n", sha256=sha, created_at=utc_iso()
    )


def on_cluster(n: int, folder: Path, address: str, http_port: int) -> dict[str, float]:
    out: dict[str, float] = {"tenants": n}
    keys = prepare(max(n, 2), folder, http_port)  # two to revoke and suspend
    out["tenants"] = max(n, 2)
    cl = Cluster(folder, address, http_port)
    out["apply_all_s"], _ = cl.ctl("apply", "--address", address, "--wait", "600")
    cl.until(keys["t00000"], 200, time.perf_counter())  # every router holds the N tenants
    rss = cl.router_rss_mib()
    out["router_rss_mib"] = max(rss)
    out["render_s"], _ = cl.ctl("render", "-o", os.devnull)
    apply = ("apply", "--address", address)
    started = time.perf_counter()
    cl.ctl("tenant", "create", "newco", "--tier", "shared")
    _, key = cl.ctl("key", "issue", "newco")
    out["onboard_every_router_s"] = cl.change(key, 200, apply, started)
    out["onboard_first_200_s"] = cl.first
    started = time.perf_counter()
    cl.ctl("key", "revoke", keys["t00000:id"])
    out["revoke_every_router_s"] = cl.change(keys["t00000"], 401, apply, started)
    started = time.perf_counter()
    cl.ctl("tenant", "suspend", "t00001")
    out["suspend_every_router_s"] = cl.change(keys["t00001"], 403, apply, started)
    out["apply_unchanged_s"], _ = cl.ctl(*apply)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenants", type=int, nargs="+", default=[1, 1000])
    parser.add_argument("--cluster", action="store_true", help="also on a running cluster")
    parser.add_argument("--address", default="http://127.0.0.1:8265", help="Ray dashboard")
    parser.add_argument("--http-port", type=int, default=8012)
    args = parser.parse_args()
    offline_keys = [
        "tenants", "fill_s", "first_publish_s", "onboard_publish_s", "onboard_files",
        "revoke_publish_s", "render_s", "config_bytes", "router_build_s", "router_mib",
        "lookup_us",
    ]  # fmt: skip
    print(" | ".join(offline_keys))
    for n in args.tenants:
        with tempfile.TemporaryDirectory() as tmp:
            row = offline(n, Path(tmp))
        print(" | ".join(f"{row[k]:.3g}" for k in offline_keys), flush=True)
    if not args.cluster:
        return
    from tenant_registry.cluster import delete_applications

    cluster_keys = [
        "tenants", "apply_all_s", "render_s", "apply_unchanged_s", "router_rss_mib",
        "onboard_first_200_s", "onboard_every_router_s", "revoke_every_router_s",
        "suspend_every_router_s",
    ]  # fmt: skip
    print("\n" + " | ".join(cluster_keys))
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for n in args.tenants:
                folder = Path(tmp) / f"n{n}"
                folder.mkdir()
                row = on_cluster(n, folder, args.address, args.http_port)
                print(" | ".join(f"{row[k]:.3g}" for k in cluster_keys), flush=True)
        finally:
            delete_applications(args.address)


if __name__ == "__main__":
    main()
