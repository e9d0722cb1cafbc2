"""Tenant weights from S3 (a real HTTP endpoint), hot-swapped with no restart.

The app is rendered from a registry whose model store is an S3 bucket on moto's
server, and deployed like `tenantctl apply`. Tenants are on the shared pool, whose
replicas keep at most two models (``max_models_per_replica: 2``).
"""

from __future__ import annotations

import json
import os
import pickle
import threading
from pathlib import Path

import pytest

from serve_app.client import DetectionClient
from serve_app.config import BatchSettings
from serve_app.constants import MAX_WEIGHTS_BYTES
from serve_app.errors import ModelUnavailable
from serve_app.models.load_status import BOARD_NAME, BOARD_NAMESPACE
from serve_app.models.manifest import build_manifest, sha256_hex
from serve_app.wire import utc_iso
from tenant_registry.cli import main
from tenant_registry.cluster import load_status
from tenant_registry.publish import published_config
from tenant_registry.push import push_version
from tenant_registry.records import ModelVersion
from tenant_registry.store import Registry
from tests.conftest import DEMO_MODEL, SAMPLES, export_demo_onnx, wait_for
from tests.integration.conftest import delete_app, deploy
from tests.onnx_bombs import CLASSES as BOMB_CLASSES
from tests.onnx_bombs import endless_loop, memory_bomb

BUCKET = "tenant-models"
IMAGE = (SAMPLES / "shapes_02.jpg").read_bytes()
WEIGHTS = (DEMO_MODEL / "model.safetensors").read_bytes()


def _names(prefix: str) -> list[str]:
    return [f"{prefix}-circle", f"{prefix}-square", f"{prefix}-triangle"]


class App:
    """A registry, its S3 store, and the app rendered from it."""

    def __init__(self, context, s3, db, http_port: int) -> None:
        self.context, self.s3 = context, s3
        self.reg = Registry(db)
        settings = self.reg.platform().model_copy(
            update={
                "http_port": http_port,
                "model_store_uri": f"s3://{BUCKET}/tenants",
                "store": self.reg.platform().store.model_copy(
                    update={"s3_endpoint_url": s3["url"]}
                ),
                "max_models_per_replica": 2,
                "ledger": self.reg.platform().ledger.model_copy(
                    update={"state_path": str(Path(db).parent / "ledger.db")}
                ),
                "shared_pool": self.reg.platform().shared_pool.model_copy(
                    update={
                        "resources": self.reg.platform().shared_pool.resources.model_copy(
                            update={"num_cpus": 0.1}
                        ),
                    }
                ),
            }
        )
        self.reg.set_platform(settings)
        self.keys: dict[str, str] = {}
        self.onnx = b""

    def onboard(self, tenant: str) -> None:
        self.reg.create_tenant(tenant, tenant.title(), "shared")
        self.keys[tenant] = self.reg.issue_key(tenant)[1]

    def push(self, tenant: str, model: str, class_names: list[str], activate: bool = True) -> int:
        """What `tenantctl model push` does, with the demo weights under new class names."""
        version, _ = push_version(
            self.reg,
            tenant,
            model,
            DEMO_MODEL / "model.safetensors",
            arch="yolov8n",
            class_names=class_names,
            imgsz=320,
            activate=activate,
        )
        return version.version

    def put_raw(self, tenant: str, model: str, manifest: dict, weights: bytes | None) -> int:
        """A version written straight into the bucket, bypassing push's checks."""
        number = self.reg.next_version(tenant, model)
        prefix = f"tenants/{tenant}/{model}/{number}"
        client = self.s3["client"]
        if weights is not None:
            weights_file = manifest.get("weights_file", "model.safetensors")
            client.put_object(Bucket=BUCKET, Key=f"{prefix}/{weights_file}", Body=weights)
            client.put_object(
                Bucket=BUCKET, Key=f"{prefix}/manifest.json", Body=json.dumps(manifest)
            )
        self.reg.add_model_version(
            tenant,
            model,
            ModelVersion(
                version=number,
                uri=f"s3://{BUCKET}/{prefix}",
                architecture="yolov8n",
                sha256=manifest.get("sha256", "0" * 64),
                created_at=utc_iso(),
            ),
        )
        return number

    def apply(self) -> None:
        deploy(self.context, published_config(self.reg))

    def client(self, tenant: str) -> DetectionClient:
        return DetectionClient(api_key=self.keys[tenant])


def _pool_replicas(context) -> set[tuple[str, int]]:
    """(replica id, pid) of the shared pool's running replicas, as Serve reports them."""
    from serve_app.ray_compat import serve_submission_client

    details = serve_submission_client(f"http://{context.dashboard_url}").get_serve_details()
    replicas = details["applications"]["yolo"]["deployments"]["shared-pool"]["replicas"]
    return {(r["replica_id"], r["pid"]) for r in replicas}


@pytest.fixture(scope="module")
def app(ray_cluster, s3, tmp_path_factory, http_port):

    delete_app()  # start clean: no rollout of another module's app in flight
    s3["client"].create_bucket(Bucket=BUCKET)
    app = App(ray_cluster, s3, tmp_path_factory.mktemp("reg") / "registry.db", http_port)
    for tenant in ("acme", "globex"):
        app.onboard(tenant)
    app.push("acme", "pcb", _names("acme"))
    app.push("globex", "pcb", _names("globex"))
    app.onnx = export_demo_onnx(tmp_path_factory.mktemp("onnx"))
    app.apply()
    wait_for(
        lambda: app.client("acme").detect(IMAGE, model="pcb").model == "pcb@1",
        300,
        "acme's pcb@1 to answer",
    )
    return app


def test_same_model_name_and_version_never_cross_tenants(app):
    for _ in range(3):
        for tenant in ("acme", "globex"):
            result = app.client(tenant).detect(IMAGE, model="pcb")
            assert result.model == "pcb@1"
            assert result.detections
            assert {d.class_name for d in result.detections} <= set(_names(tenant))


def test_identical_weights_are_one_network_with_each_tenants_class_names(app):
    """acme and globex pushed the same weights under their own class names: the pool
    holds one network for both (its bytes once), and each still gets its own names."""
    from ray import serve

    from serve_app.inference.pool_share import estimated_bytes
    from serve_app.models.manifest import parse_manifest

    for tenant in ("acme", "globex"):
        found = {d.class_name for d in app.client(tenant).detect(IMAGE, model="pcb").detections}
        assert found and found <= set(_names(tenant))
    held = serve.get_deployment_handle("shared-pool", "yolo").loaded_models.remote().result()
    assert {"acme/pcb@1", "globex/pcb@1"} <= set(held["models"])
    shared = [ids for ids in held["networks"].values() if "acme/pcb@1" in ids]
    assert len(shared) == 1 and "globex/pcb@1" in shared[0], held["networks"]
    one = estimated_bytes(parse_manifest((DEMO_MODEL / "manifest.json").read_bytes()), False)
    assert 0 < held["bytes"] <= one * len(held["networks"])  # the shared one counted once


def _set_pool_batching(app: App, pool, wait_s: float) -> None:
    batching = BatchSettings(max_batch_size=8, batch_wait_timeout_s=wait_s)
    app.reg.set_platform(app.reg.platform().model_copy(update={"batching": batching}))
    app.apply()
    wait_for(
        lambda: pool.batching.remote().result()["batch_wait_timeout_s"] == wait_s,
        60,
        f"the pool's batch wait to become {wait_s} s",
    )


def test_concurrent_tenants_on_the_pool_get_their_own_results_batched_or_not(app):
    from ray import serve

    pool = serve.get_deployment_handle("shared-pool", "yolo")
    images = [p.read_bytes() for p in sorted(SAMPLES.glob("shapes_*"))[:6]]
    calls = [(tenant, image) for tenant in ("acme", "globex") for image in images]
    alone = [app.client(t).detect(image, model="pcb", version=1) for t, image in calls]
    _set_pool_batching(app, pool, 0.5)  # long enough for concurrent calls to meet
    try:
        before = pool.batching.remote().result()
        barrier = threading.Barrier(len(calls))
        together: list = [None] * len(calls)

        def call(i: int) -> None:
            tenant, image = calls[i]
            client = app.client(tenant)
            barrier.wait()
            together[i] = client.detect(image, model="pcb", version=1)

        threads = [threading.Thread(target=call, args=(i,)) for i in range(len(calls))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        after = pool.batching.remote().result()
    finally:
        _set_pool_batching(app, pool, 0.0)
    assert after["images"] - before["images"] == len(calls)
    limits = set(after["engine_limits"].values())
    if limits == {1}:
        # A one-thread ONNX Runtime pool replica (this 2-CPU test cluster) runs single
        # images, its engine's best: no batch formed, not even with a 0.5 s wait.
        assert after["batches"] - before["batches"] == len(calls)
    else:
        assert after["batches"] - before["batches"] < len(calls)  # some calls shared one
        assert after["largest_batch"] > 1
    for (tenant, _), got, want in zip(calls, together, alone, strict=True):
        assert got is not None and got.model == "pcb@1"
        assert {d.class_name for d in got.detections} <= set(_names(tenant))
        assert [d.class_name for d in got.detections] == [d.class_name for d in want.detections]
        for g, w in zip(got.detections, want.detections, strict=True):
            assert g.bbox == pytest.approx(w.bbox, abs=0.11)
            assert g.confidence == pytest.approx(w.confidence, abs=2e-4)


def test_a_burst_on_the_pool_does_not_queue_ahead_of_another_tenant(app):
    """acme sends 40 calls at once (no quota); once the pool is busy with them, globex
    sends one. Turns go round the tenants (the router's share of the pool's slots and
    the pool's batcher), so globex is answered within a few of acme's answers, not
    after every acme call still queued (first come, first served made it the last)."""
    from ray import serve

    burst_size = 40
    pool = serve.get_deployment_handle("shared-pool", "yolo")
    done: list[str] = []
    lock = threading.Lock()
    # Every client made and used once first: a new handle's first call is slow, and
    # globex's must not start after acme's burst is over.
    clients = [app.client("acme") for _ in range(burst_size)] + [app.client("globex")]
    for client in clients:
        assert client.detect(IMAGE, model="pcb").model == "pcb@1"
    start = threading.Barrier(burst_size)

    def call(client: DetectionClient, tenant: str, barrier: threading.Barrier | None) -> None:
        if barrier is not None:
            barrier.wait()
        result = client.detect(IMAGE, model="pcb")
        assert result.model == "pcb@1"
        with lock:
            done.append(tenant)

    burst = [threading.Thread(target=call, args=(c, "acme", start)) for c in clients[:-1]]
    for t in burst:
        t.start()
    wait_for(lambda: pool.batching.remote().result()["in_flight"] >= 8, 60,
             "the pool to be busy with acme's burst", poll_s=0.01)  # fmt: skip
    with lock:
        answered_before = len(done)
    behind = threading.Thread(target=call, args=(clients[-1], "globex", None))
    behind.start()
    for t in [*burst, behind]:
        t.join(120)
    assert sorted(done) == ["acme"] * burst_size + ["globex"]
    # the scene was set: most of acme's burst was still to be answered when globex sent
    assert burst_size - answered_before >= 20, answered_before
    waited_for = done.index("globex") - answered_before  # acme answers before globex's
    assert waited_for <= 8, (answered_before, done)


def test_hot_swap_under_traffic_with_no_restart(app):
    replicas = _pool_replicas(app.context)
    assert replicas
    stop, outcomes = threading.Event(), []

    def loop():
        client = app.client("acme")
        while not stop.is_set():
            try:
                outcomes.append(client.detect(IMAGE, model="pcb").model)
            except Exception as exc:
                outcomes.append(f"error: {type(exc).__name__}: {exc}")

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    wait_for(lambda: len(outcomes) >= 3, 60, "traffic on pcb@1")
    app.push("acme", "pcb", _names("acme-v2"))  # activates v2
    app.apply()
    wait_for(lambda: outcomes[-1] == "pcb@2", 30, "responses to switch to pcb@2")
    seen = len(outcomes)
    wait_for(lambda: len(outcomes) >= seen + 3, 60, "traffic on pcb@2")
    stop.set()
    thread.join(timeout=60)
    errors = [o for o in outcomes if o.startswith("error")]
    assert not errors, errors[:3]
    switch = outcomes.index("pcb@2")
    assert set(outcomes[:switch]) == {"pcb@1"} and set(outcomes[switch:]) == {"pcb@2"}
    v2 = app.client("acme").detect(IMAGE, model="pcb")
    assert {d.class_name for d in v2.detections} <= set(_names("acme-v2"))
    assert _pool_replicas(app.context) == replicas  # no replica restarted


def test_lru_of_two_serves_three_versions_in_rotation(app):
    v3 = app.push("acme", "pcb", _names("acme-v3"), activate=False)
    app.apply()
    client = app.client("acme")
    wait_for(
        lambda: client.detect(IMAGE, model="pcb", version=v3).model == f"pcb@{v3}",
        60,
        "v3 to be routable",
    )
    for _ in range(2):
        for version, prefix in ((1, "acme"), (2, "acme-v2"), (v3, "acme-v3")):
            result = client.detect(IMAGE, model="pcb", version=version)
            assert result.model == f"pcb@{version}"
            assert result.detections and {d.class_name for d in result.detections} <= set(
                _names(prefix)
            )


def test_lru_size_changes_through_user_config_without_restart(app):
    from ray import serve

    pool = serve.get_deployment_handle("shared-pool", "yolo")
    client = app.client("acme")
    for version in (1, 2, 3):
        client.detect(IMAGE, model="pcb", version=version)
    held = pool.loaded_models.remote().result()
    assert held["max_models"] == 2 and len(held["models"]) == 2
    replicas = _pool_replicas(app.context)
    app.reg.set_platform(app.reg.platform().model_copy(update={"max_models_per_replica": 3}))
    app.apply()
    wait_for(lambda: pool.loaded_models.remote().result()["max_models"] == 3, 60, "LRU size 3")
    for version in (1, 2, 3):
        client.detect(IMAGE, model="pcb", version=version)
    assert len(pool.loaded_models.remote().result()["models"]) == 3
    assert _pool_replicas(app.context) == replicas
    app.reg.set_platform(app.reg.platform().model_copy(update={"max_models_per_replica": 2}))
    app.apply()
    wait_for(lambda: pool.loaded_models.remote().result()["max_models"] == 2, 60, "LRU size 2")


def _evil_bytes(sentinel: str) -> bytes:
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {sentinel}",))

    return pickle.dumps(Evil())


def test_broken_versions_fail_cleanly_and_the_previous_one_keeps_serving(app, tmp_path, capsys):
    sentinel = tmp_path / "PWNED"
    good = json.loads((DEMO_MODEL / "manifest.json").read_text())
    evil = _evil_bytes(str(sentinel))
    padded = WEIGHTS + b"\x00" * 4096  # new digest: not in any cache, must be downloaded
    corrupt_onnx = app.onnx[: len(app.onnx) // 3]
    evil_manifest = build_manifest(
        architecture="yolov8n", class_names=["x"], imgsz=320, weights=evil
    ).model_dump()
    broken = {
        "download error": (good, None),
        "sha256 mismatch": ({**good, "sha256": "f" * 64}, WEIGHTS),
        "wrong shapes": ({**good, "architecture": "yolov8s"}, WEIGHTS),
        "over the platform limit": ({**good, "size_bytes": MAX_WEIGHTS_BYTES + 1}, WEIGHTS),
        "bigger than declared": ({**good, "sha256": sha256_hex(padded)}, padded),
        "pickle as safetensors": (evil_manifest, evil),
        "corrupt onnx": (
            build_manifest(
                architecture=None, class_names=["x"], imgsz=320, weights=corrupt_onnx, format="onnx"
            ).model_dump(),
            corrupt_onnx,
        ),
        # Valid graphs that would take the replica's memory or cores: the sandbox child
        # refuses them, the replica never builds their session (models/sandbox.py).
        **{
            why: (
                build_manifest(
                    architecture=None, class_names=BOMB_CLASSES, imgsz=64, weights=g, format="onnx"
                ).model_dump(),
                g,
            )
            for why, g in (
                ("onnx memory bomb", memory_bomb()),
                ("onnx endless loop", endless_loop()),
            )
        },
    }
    versions = {
        why: app.put_raw("globex", "pcb", manifest, weights)
        for why, (manifest, weights) in broken.items()
    }
    app.apply()
    client = app.client("globex")
    for why, version in versions.items():
        wait_for(lambda v=version: _raises_unavailable(client, v), 60, f"{why} to be refused")
    # Activate a broken version: the router falls back to the previous (v1), no error.
    app.reg.activate("globex", "pcb", versions["sha256 mismatch"])
    app.apply()
    wait_for(lambda: _raises_unavailable(client, versions["sha256 mismatch"]), 60, "the new table")
    for _ in range(3):
        result = client.detect(IMAGE, model="pcb")
        assert result.model == "pcb@1" and result.detections
    assert not sentinel.exists()
    status = load_status("auto", "globex/pcb@")
    for why, version in versions.items():
        entry = status[f"globex/pcb@{version}"]
        assert entry["outcome"] == "failed", (why, entry)
    reasons = {why: status[f"globex/pcb@{v}"]["reason"] for why, v in versions.items()}
    assert "not found" in reasons["download error"]
    assert "sha256" in reasons["sha256 mismatch"]
    assert "do not fit architecture yolov8s" in reasons["wrong shapes"]
    assert "less than or equal to" in reasons["over the platform limit"]
    assert (
        "over the" in reasons["bigger than declared"]
        and "byte limit" in reasons["bigger than declared"]
    )
    assert "not a valid safetensors" in reasons["pickle as safetensors"]
    assert "ONNX model could not be loaded" in reasons["corrupt onnx"]
    assert "needed more than 1024 MiB of memory" in reasons["onnx memory bomb"]
    assert "took more than 8 s" in reasons["onnx endless loop"]
    assert status["globex/pcb@1"]["outcome"] == "loaded"
    # What the operator sees: tenantctl model list --cluster
    assert (
        main(["--db", str(app.reg.path), "model", "list", "globex", "--cluster", "auto", "--json"])
        == 0
    )
    listed = json.loads(capsys.readouterr().out)
    loads = {v["version"]: v["load"] for m in listed if m["name"] == "pcb" for v in m["versions"]}
    assert loads[1]["outcome"] == "loaded"
    assert loads[versions["wrong shapes"]]["outcome"] == "failed"
    assert "yolov8s" in loads[versions["wrong shapes"]]["reason"]


def _raises_unavailable(client: DetectionClient, version: int) -> bool:
    try:
        client.detect(IMAGE, model="pcb", version=version)
    except ModelUnavailable:
        return True
    return False


def test_board_is_a_named_actor_operators_can_find(app):
    import ray

    board = ray.get_actor(BOARD_NAME, namespace=BOARD_NAMESPACE)
    assert "acme/pcb@1" in ray.get(board.get.remote("acme/"))


def test_an_onnx_upload_is_served_by_onnxruntime(app, tmp_path):
    onnx_file = tmp_path / "pcb.onnx"
    onnx_file.write_bytes(app.onnx)
    push_version(app.reg, "globex", "onnx", onnx_file, class_names=_names("onnx"), imgsz=320)
    app.apply()
    client = app.client("globex")
    result = wait_for(lambda: _detect_or_none(client, "onnx"), 60, "the ONNX model to answer")
    assert result.model == "onnx@1"
    assert result.detections and {d.class_name for d in result.detections} <= set(_names("onnx"))


def _detect_or_none(client: DetectionClient, model: str):
    try:
        return client.detect(IMAGE, model=model)
    except Exception:
        return None


def _holdings(pool, replicas: int) -> dict[str, list[str]]:
    """Model ids by pool replica, once ``replicas`` of them answered (a call naming no
    model goes to a replica at random)."""
    seen: dict[str, list[str]] = {}

    def answered() -> bool:
        held = pool.loaded_models.remote().result()
        seen[held["replica"]] = held["models"]
        return len(seen) >= replicas

    wait_for(answered, 60, f"{replicas} pool replicas to answer", poll_s=0.05)
    return seen


def _scale_pool(app: App, replicas: int) -> None:
    pool = app.reg.platform().shared_pool
    autoscaling = pool.autoscaling.model_copy(
        update={"min_replicas": replicas, "max_replicas": replicas}
    )
    app.reg.set_platform(app.reg.platform().model_copy(
        update={"shared_pool": pool.model_copy(update={"autoscaling": autoscaling})}
    ))  # fmt: skip
    app.apply()

    def running() -> bool:
        details = _pool_details(app.context)
        return sum(r["state"] == "RUNNING" for r in details) == replicas == len(details)

    wait_for(running, 180, f"the pool at {replicas} replicas")


def _pool_details(context) -> list[dict]:
    from serve_app.ray_compat import serve_submission_client

    details = serve_submission_client(f"http://{context.dashboard_url}").get_serve_details()
    return details["applications"]["yolo"]["deployments"]["shared-pool"]["replicas"]


def test_a_new_pool_replica_warms_the_hot_models_and_a_stopping_one_hands_its_over(app):
    """The pool grows to two replicas: the new ones load the running one's hottest model
    before their first call. New tenants' models nobody holds go to the replica with the
    fewest models, until each replica holds one the other does not. The pool shrinks to
    one: whichever replicas Serve stops, the one left holds every model either served,
    because a stopping replica has the others load what it served lately. (Changing the
    pool's replica counts through the registry rolls every replica over here: new ones
    start beside the old, which stop; the models travel all the same.)"""
    from ray import serve

    pool = serve.get_deployment_handle("shared-pool", "yolo")
    app.reg.set_platform(app.reg.platform().model_copy(update={"max_models_per_replica": 32}))
    newcomers = [f"new{i}" for i in range(8)]
    for tenant in newcomers:
        app.onboard(tenant)
        app.push(tenant, "pcb", _names(tenant))
    app.apply()
    hot = "acme/" + app.client("acme").detect(IMAGE, model="pcb").model  # its active version
    for _ in range(3):
        assert "acme/" + app.client("acme").detect(IMAGE, model="pcb").model == hot
    assert len(_pool_details(app.context)) == 1
    _scale_pool(app, 2)
    held = _holdings(pool, 2)
    assert all(hot in models for models in held.values()), held  # pre-warmed
    served: list[str] = []
    for tenant in newcomers:
        found = app.client(tenant).detect(IMAGE, model="pcb")
        assert {d.class_name for d in found.detections} <= set(_names(tenant))
        served.append(f"{tenant}/pcb@1")
        held = _holdings(pool, 2)
        only = [{m for m in served if m in mine and all(m not in theirs for r, theirs in
                 held.items() if r != replica)} for replica, mine in held.items()]  # fmt: skip
        if all(only):
            break
    assert all(only), held  # each replica holds a served model the other does not
    _scale_pool(app, 1)
    (survivor,) = _holdings(pool, 1).values()
    assert set(served) | {hot} <= set(survivor), (served, survivor)
    app.reg.set_platform(app.reg.platform().model_copy(update={"max_models_per_replica": 2}))
    app.apply()
