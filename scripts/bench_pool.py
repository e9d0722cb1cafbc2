"""The shared pool at scale: hundreds of tenants' own models on two pool replicas.

``--tenants`` (200) shared-tier tenants, each with weights of its own: the demo model with
one class-score weight nudged by a few units in its last place (same architecture, a
distinct sha256 each, so nothing is deduplicated). Each is compiled into the node's cache
once, as a replica's first load would (``load_model``; the cache persists in
``var/bench-pool`` between runs), so the run measures loads from the node cache: what a
pool replica pays when a model comes back after an eviction or lands on a second replica.

In one platform run, on the same machine, one after the other:

* **single**: a dedicated tenant (``solo``) with two replicas of the pool's size, one
  model: ``--requests`` from ``--connections`` closed-loop connections;
* **pool, warm-up**: ``--warmup`` requests, each from a tenant drawn by Zipf(``--zipf``)
  over the tenants (rank 1 the hottest): the pool meets each model for the first time
  (figures printed, not compared);
* **pool**: ``--requests`` more from the same distribution, measured.

It prints, for the pool: hit rate (requests whose model a replica held), model loads per
second, the models and bytes each replica holds, p50/p99 of the hottest tenant and of the
cold ones (rank above 20), and images/s against the single-model deployment's. Targets
(docs/benchmarks.md#shared-pool-at-scale): pool images/s >= 0.8x single; the hottest
tenant's p99 <= 1.5x its p99 as a single-model deployment. The last line is
``pool/single images/s ratio: X``.

    .venv/bin/python scripts/bench_pool.py                  # ~10 min, 5 more on a first run
    .venv/bin/python scripts/bench_pool.py --tenants 40 --requests 600 --warmup 300
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
WORK = ROOT / "var" / "bench-pool"

import numpy as np  # noqa: E402
from bench import IMAGES, PlatformRun, _registry, post, replace_section  # noqa: E402

DEMO = ROOT / "models" / "demo" / "shapes" / "1"
NUDGED = "model.22.cv3.2.2.weight"  # one head's class-score weights: boxes barely move
REPLICA_CPUS = 0.4  # two pool and two solo replicas, router, ledgers: within 2 CPUs
COLD_RANK = 20  # tenants ranked past this are "cold"


def use_work_folder(work: Path) -> None:
    """Models and the node cache (this process's, its workers' and the replicas') there."""
    global WORK
    WORK = work
    os.environ["YOLOSERVE_CACHE_DIR"] = str(work / "cache")
    os.environ.setdefault("YOLOSERVE_CACHE_MAX_BYTES", str(16 * 1024**3))


def make_models(count: int) -> list[Path]:
    """``count`` model versions (folders with manifest and safetensors), made once."""
    from safetensors.numpy import load_file, save

    from serve_app.models.manifest import build_manifest, parse_manifest

    demo = parse_manifest((DEMO / "manifest.json").read_bytes())
    tensors = load_file(str(DEMO / "model.safetensors"))
    folders = []
    for i in range(count):
        folder = WORK / "models" / f"t{i:03d}"
        folders.append(folder)
        if (folder / "manifest.json").is_file():
            continue
        nudged = dict(tensors)
        bits = tensors[NUDGED].copy().reshape(-1).view(np.uint16)
        bits[i % bits.size] += 1 + i // bits.size  # a few units in the last place: distinct
        nudged[NUDGED] = bits.view(np.float16).reshape(tensors[NUDGED].shape)
        weights = save(nudged)
        manifest = build_manifest(
            architecture=demo.architecture,
            class_names=list(demo.class_names),
            imgsz=demo.imgsz,
            weights=weights,
        )
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "model.safetensors").write_bytes(weights)
        (folder / "manifest.json").write_text(manifest.model_dump_json(indent=2))
    return folders


def _compile(folder: Path) -> float:
    """Load one version as a replica would, filling the node cache; seconds it took."""
    from serve_app.inference.loaded_model import load_model

    started = time.perf_counter()
    load_model(f"t{folder.name[1:]}/m@1", f"file://{folder}", threads=1, burst=False)
    return time.perf_counter() - started


def fill_cache(folders: list[Path]) -> list[float]:
    with ProcessPoolExecutor(max_workers=2) as pool:
        return list(pool.map(_compile, folders))


def cold_loads(folders: list[Path], n: int = 10) -> list[float]:
    """ms to build and warm a model that the node cache holds (a pool replica's load), in
    a process that has loaded one before (imports paid, as in a running replica)."""
    _compile(folders[-1])
    return [_compile(folder) * 1e3 for folder in folders[:n]]


@dataclass
class Run:
    latencies: dict[str, list[float]]  # tenant -> seconds
    elapsed_s: float
    count: int

    def images_s(self) -> float:
        return self.count / self.elapsed_s


def closed_loop(calls: list[tuple[str, str]], url: str, connections: int) -> Run:
    """Each call ``(tenant, key)`` once, from ``connections`` closed-loop connections."""
    images = [p.read_bytes() for p in IMAGES]
    latencies: dict[str, list[float]] = {}
    lock = threading.Lock()
    queue = iter(range(len(calls)))
    local = threading.local()

    def worker(_: int) -> None:
        while True:
            with lock:
                i = next(queue, None)
            if i is None:
                return
            tenant, key = calls[i]
            started = time.perf_counter()
            post(local, url, images[i % len(images)], {"Authorization": f"Bearer {key}"})
            with lock:
                latencies.setdefault(tenant, []).append(time.perf_counter() - started)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=connections) as pool:
        list(pool.map(worker, range(connections)))
    return Run(latencies, time.perf_counter() - started, len(calls))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e3


def zipf_ranks(count: int, tenants: int, exponent: float, rng: np.random.Generator) -> list[int]:
    weights = np.arange(1, tenants + 1, dtype=float) ** -exponent
    return [int(r) for r in rng.choice(tenants, size=count, p=weights / weights.sum())]


def pool_replicas(pool: Any) -> dict[str, dict[str, Any]]:
    """What each pool replica holds, by replica (asks until both answered)."""
    seen: dict[str, dict[str, Any]] = {}
    for _ in range(60):
        held = pool.loaded_models.remote().result()
        seen[held["replica"]] = held
        if len(seen) >= 2:
            break
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenants", type=int, default=200)
    parser.add_argument("--zipf", type=float, default=1.1)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--model-bytes", type=int, default=2 * 1024**3, help="model_bytes_per_replica of the pool"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--placement",
        choices=("model-aware", "serve"),
        default="model-aware",
        help="the pool's request router: the platform's or Serve's own",
    )
    parser.add_argument("--work", type=Path, default=WORK, help="models and node cache")
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        default=ROOT / "docs" / "benchmarks.md",
        help="the report's section is replaced there ('-': not written)",
    )
    args = parser.parse_args()
    use_work_folder(args.work.resolve())
    os.environ["YOLOSERVE_POOL_PLACEMENT"] = args.placement  # read by build_app

    from ray import serve

    from serve_app.models.manifest import parse_manifest
    from serve_app.ray_compat import handle_for_blocking_callers
    from serve_app.wire import utc_iso
    from tenant_registry.platform import PlatformSettings
    from tenant_registry.publish import published_config
    from tenant_registry.records import ModelVersion

    folders = make_models(args.tenants)
    started = time.perf_counter()
    compile_s = fill_cache(folders)
    print(
        f"node cache filled in {time.perf_counter() - started:.0f} s "
        f"(first load of a new model, median {statistics.median(compile_s):.2f} s)",
        flush=True,
    )
    loads_ms = cold_loads(folders)
    print(
        f"load from the node cache, built and warm: median {statistics.median(loads_ms):.0f} ms, "
        f"max {max(loads_ms):.0f} ms",
        flush=True,
    )

    pool = PlatformSettings().shared_pool
    reg = _registry(
        model_bytes_per_replica=args.model_bytes,
        shared_pool=pool.model_copy(
            update={
                "resources": pool.resources.model_copy(update={"num_cpus": REPLICA_CPUS}),
                "autoscaling": pool.autoscaling.model_copy(
                    update={"min_replicas": 2, "max_replicas": 2}
                ),
            }
        ),
    )
    keys: list[str] = []
    for i, folder in enumerate(folders):
        manifest = parse_manifest((folder / "manifest.json").read_bytes())
        version = ModelVersion(
            1, f"file://{folder}", manifest.architecture or "", manifest.sha256, utc_iso()
        )
        reg.create_tenant(f"t{i:03d}", f"Tenant {i}", "shared", ("m", version))
        keys.append(reg.issue_key(f"t{i:03d}")[1])
    solo_manifest = parse_manifest((folders[0] / "manifest.json").read_bytes())
    solo_version = ModelVersion(
        1, f"file://{folders[0]}", solo_manifest.architecture or "", solo_manifest.sha256, utc_iso()
    )
    reg.create_tenant("solo", "Solo", "dedicated", ("m", solo_version))
    reg.set_resources("solo", num_cpus=REPLICA_CPUS, min_replicas=2, max_replicas=2)
    solo_key = reg.issue_key("solo")[1]

    rng = np.random.default_rng(args.seed)
    with PlatformRun(published_config(reg)) as run:
        handle = handle_for_blocking_callers(serve.get_deployment_handle("shared-pool", "yolo"))
        single = closed_loop([("solo", solo_key)] * args.requests, run.url, args.connections)
        print(f"single: {single.images_s():.1f} images/s", flush=True)

        def calls(n: int) -> list[tuple[str, str]]:
            return [(f"t{r:03d}", keys[r]) for r in zipf_ranks(n, args.tenants, args.zipf, rng)]

        loads_before = sum(r["loads"] for r in pool_replicas(handle).values())
        warm = closed_loop(calls(args.warmup), run.url, args.connections)
        middle = pool_replicas(handle)
        loads_middle = sum(r["loads"] for r in middle.values())
        print(
            f"pool warm-up: {warm.images_s():.1f} images/s, {loads_middle - loads_before} loads",
            flush=True,
        )
        measured = closed_loop(calls(args.requests), run.url, args.connections)
        after = pool_replicas(handle)
        loads = sum(r["loads"] for r in after.values()) - loads_middle

    hot = "t000"
    cold = [v for t, vs in measured.latencies.items() if int(t[1:]) >= COLD_RANK for v in vs]
    ratio = measured.images_s() / single.images_s()
    figures = {
        "tenants": args.tenants,
        "placement": args.placement,
        "zipf": args.zipf,
        "connections": args.connections,
        "first_load_s_median": statistics.median(compile_s),
        "cache_load_ms_median": statistics.median(loads_ms),
        "cache_load_ms_max": max(loads_ms),
        "single_images_s": single.images_s(),
        "single_p50_ms": pct(single.latencies["solo"], 0.5),
        "single_p99_ms": pct(single.latencies["solo"], 0.99),
        "warmup_images_s": warm.images_s(),
        "warmup_loads": loads_middle - loads_before,
        "pool_images_s": measured.images_s(),
        "pool_loads": loads,
        "pool_loads_s": loads / measured.elapsed_s,
        "pool_hit_rate": 1 - loads / measured.count,
        "hot_p50_ms": pct(measured.latencies[hot], 0.5),
        "hot_p99_ms": pct(measured.latencies[hot], 0.99),
        "hot_share": len(measured.latencies[hot]) / measured.count,
        "cold_p50_ms": pct(cold, 0.5) if cold else None,
        "cold_p99_ms": pct(cold, 0.99) if cold else None,
        "tenants_served": len(measured.latencies),
        "replicas": {
            r: {
                "models": len(h["models"]),
                "networks": len(h["networks"]),
                "bytes": h["bytes"],
                "max_bytes": h["max_bytes"],
                "hot_held": any(m.startswith(f"{hot}/") for m in h["models"]),
            }
            for r, h in after.items()
        },
        "ratio": ratio,
        "hot_p99_ratio": pct(measured.latencies[hot], 0.99) / pct(single.latencies["solo"], 0.99),
    }
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    command = "python scripts/bench_pool.py " + " ".join(sys.argv[1:])
    text = report(figures, command.strip())
    if str(args.output) != "-":
        section = SECTION if args.placement == "model-aware" else f"{SECTION}, serve placement"
        replace_section(args.output, section, text)
    print(text)
    print(f"pool/single images/s ratio: {ratio:.2f}")


SECTION = "shared pool at scale"


def report(f: dict[str, Any], command: str) -> str:
    replicas = "; ".join(
        f"{r['models']} models / {r['networks']} networks, {r['bytes'] / 2**20:.0f} of "
        f"{r['max_bytes'] / 2**20:.0f} MiB{', holds the hottest' if r['hot_held'] else ''}"
        for r in f["replicas"].values()
    )
    cold = (
        f"{f['cold_p50_ms']:.0f} / {f['cold_p99_ms']:.0f}" if f["cold_p50_ms"] is not None else "-"
    )
    title = f"{f['tenants']} tenants, Zipf({f['zipf']}), {f['connections']} connections"
    if f["placement"] != "model-aware":
        title += f", {f['placement']} placement"
    return "\n".join(
        [
            "## Shared pool at scale"
            if f["placement"] == "model-aware"
            else "### For comparison: Serve's own multiplex routing on the pool",
            "",
            f"Command: `{command}`. {f['tenants']} shared tenants, each its own weights (a "
            "distinct sha256), Zipf traffic over them from closed-loop connections, two pool "
            f"replicas of {REPLICA_CPUS} CPU; the single-model deployment is a dedicated tenant "
            "with two replicas of the same size, measured in the same run "
            "(scripts/bench_pool.py; targets: pool images/s >= 0.8x single, the hottest "
            "tenant's p99 <= 1.5x its single-model p99).",
            "",
            f"| {title} | |",
            "| --- | --- |",
            f"| single-model deployment: images/s, p50 / p99 ms | {f['single_images_s']:.1f}, "
            f"{f['single_p50_ms']:.0f} / {f['single_p99_ms']:.0f} |",
            f"| pool warm-up (first sight of each model): images/s, loads | "
            f"{f['warmup_images_s']:.1f}, {f['warmup_loads']} |",
            f"| pool: images/s | **{f['pool_images_s']:.1f}** |",
            f"| pool / single images/s | **{f['ratio']:.2f}** |",
            f"| pool: hit rate, loads/s | {f['pool_hit_rate']:.3f}, {f['pool_loads_s']:.2f} |",
            f"| hottest tenant ({f['hot_share']:.0%} of requests): p50 / p99 ms | "
            f"{f['hot_p50_ms']:.0f} / {f['hot_p99_ms']:.0f} "
            f"(p99 {f['hot_p99_ratio']:.2f}x single) |",
            f"| cold tenants (rank > {COLD_RANK}): p50 / p99 ms | {cold} |",
            f"| tenants served in the measured phase | {f['tenants_served']} |",
            f"| load from the node cache (built and warm), median / max ms | "
            f"{f['cache_load_ms_median']:.0f} / {f['cache_load_ms_max']:.0f} |",
            f"| replicas at the end | {replicas} |",
            "",
        ]
    )


if __name__ == "__main__":
    main()
