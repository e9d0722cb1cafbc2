"""The control plane at N tenants (issue 18), measured without a cluster so far.

    .venv/bin/python scripts/measure_scale.py --tenants 1000 10000

For each N: a registry filled with N shared tenants (one key each, the demo model), then
with the tenant directory on: the first publish (a snapshot), one tenant onboarded and
published (files written, seconds), one key revoked and published, a router's view and
tenant table built from the directory (seconds, and the memory it holds, by
tracemalloc), and ``render`` of the Serve config (seconds, bytes of YAML).

Not yet here (next): the cluster side — time from publish to the first 200 / the first
401 on every router, and router RSS (docs/control-plane.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")

from serve_app.errors import Unauthenticated  # after the offline switches


def _fill(reg: Any, n: int, version: Any) -> None:
    """N shared tenants with one key each (a bulk import)."""
    for i in range(n):
        tenant = f"t{i:05d}"
        reg.create_tenant(tenant, f"Tenant {i}", "shared", ("shapes", version))
        reg.issue_key(tenant)


def measure(n: int, folder: Path) -> dict[str, float]:
    from serve_app.auth.followed_table import FollowedTable
    from serve_app.auth.jwks import JwksPool
    from serve_app.blobs import FileStore
    from serve_app.config import RouterConfig
    from serve_app.directory import DirectoryView
    from tenant_registry.publish import publish
    from tenant_registry.records import ModelVersion
    from tenant_registry.render import render_config, to_yaml
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
        config = render_config(reg.tenants(), reg.platform())
        text = to_yaml(config)
        out["render_s"] = time.perf_counter() - started
        out["config_bytes"] = len(text)
    gc.collect()
    tracemalloc.start()
    started = time.perf_counter()
    view = DirectoryView()
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenants", type=int, nargs="+", default=[1, 1000])
    args = parser.parse_args()
    keys = [
        "tenants", "fill_s", "first_publish_s", "onboard_publish_s", "onboard_files",
        "revoke_publish_s", "render_s", "config_bytes", "router_build_s", "router_mib",
        "lookup_us",
    ]  # fmt: skip
    print(" | ".join(keys))
    for n in args.tenants:
        with tempfile.TemporaryDirectory() as tmp:
            row = measure(n, Path(tmp))
        print(" | ".join(f"{row[k]:.3g}" for k in keys), flush=True)


if __name__ == "__main__":
    main()
