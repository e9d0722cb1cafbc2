"""configs/serve.gpu.yaml on a cluster with one (pretend) GPU.

The three fractional tenants (0.5 + 0.25 + 0.25) fit on the one GPU; the whole-GPU
tenant cannot be placed and stays pending, exactly as Ray would leave it on a real
one-GPU node. Handles return real detections from the real demo model.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from serve_app.auth.keys import hash_api_key
from serve_app.client import DetectionClient
from serve_app.errors import BadParameter, Unauthenticated, UnknownModel, UnsupportedMediaType
from tests.conftest import SAMPLES, ground_truth, matched_shapes, wait_for
from tests.integration.conftest import deploy, tenant_key

FRACTIONAL = {"acme": 0.5, "globex": 0.25, "initech": 0.25}


def _placement(tenant: str) -> dict:
    from ray import serve

    return serve.get_deployment_handle(f"tenant-{tenant}", "yolo").placement.remote().result()


def test_fractional_tenants_share_the_one_gpu(gpu_app):
    import ray

    for tenant in FRACTIONAL:
        placement = _placement(tenant)
        assert placement["gpu_ids"] == ["0"], (tenant, placement)
        assert placement["device"] == "cpu"  # fake GPU: torch sees no CUDA and falls back
    # 0.5 + 0.25 + 0.25 reserved: nothing of the GPU is left.
    assert ray.available_resources().get("GPU", 0.0) == pytest.approx(0.0)
    assert ray.cluster_resources()["GPU"] == 1.0


def test_whole_gpu_tenant_waits_for_a_gpu(gpu_app):
    from ray import serve

    umbrella = serve.status().applications["yolo"].deployments["tenant-umbrella"]
    assert umbrella.status != "HEALTHY"
    assert umbrella.replica_states.get("RUNNING", 0) == 0
    # Its replica actor exists but waits for a whole GPU that this node cannot give.
    from ray.util.state import list_actors

    pending = [
        a
        for a in list_actors(filters=[("state", "=", "PENDING_CREATION")], detail=True)
        if "tenant-umbrella" in (a.class_name or "")
    ]
    assert len(pending) == 1, pending
    assert pending[0].required_resources.get("GPU") == 1.0


def test_handles_return_detections_matching_ground_truth(gpu_app):
    client = DetectionClient(api_key=tenant_key("acme"))
    truth = ground_truth()
    hits = total = 0
    for name in sorted(truth)[:4]:
        result = client.detect(SAMPLES / name)
        assert result.model == "shapes@1"
        dets = [d.model_dump() for d in result.detections]
        hits += matched_shapes(truth[name], dets)
        total += len(truth[name])
    assert hits >= 0.9 * total, (hits, total)


def test_requests_beyond_the_call_limit_go_together_and_are_answered_alike(gpu_app):
    """acme: one replica, target_ongoing_requests 2, so the router sends two calls at a
    time and coalesces the rest (detect_many over Ray, through the replica's batcher):
    every request gets the boxes it gets alone."""
    from concurrent.futures import ThreadPoolExecutor

    import requests
    from ray import serve

    handle = serve.get_deployment_handle("tenant-acme", "yolo")
    url = f"http://127.0.0.1:{gpu_app['config']['http_options']['port']}/v1/detect"
    names = sorted(ground_truth())[:4]

    def detect(name: str) -> dict:
        response = requests.post(
            url,
            data=(SAMPLES / name).read_bytes(),
            params={"imgsz": "1280"},  # a few hundred ms each: the requests overlap
            headers={"Authorization": f"Bearer {tenant_key('acme')}"},
            timeout=120,
        )
        assert response.status_code == 200, response.text
        return {"name": name, "detections": response.json()["detections"]}

    alone = {name: detect(name) for name in names}
    before = handle.batching.remote().result()["coalesced_images"]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(detect, names * 2))
    assert together == [alone[name] for name in names * 2]
    assert handle.batching.remote().result()["coalesced_images"] > before


def test_policy_allowlist_is_enforced_per_tenant(gpu_app):
    # globex may only see circles and squares; acme sees triangles in the same image.
    truth = ground_truth()

    def largest_triangle(name: str) -> float:
        sides = [s["bbox"][2] - s["bbox"][0] for s in truth[name] if s["class_name"] == "triangle"]
        return max(sides, default=0.0)

    name = max(sorted(truth), key=largest_triangle)
    assert largest_triangle(name) > 60
    acme = DetectionClient(api_key=tenant_key("acme")).detect(SAMPLES / name)
    globex = DetectionClient(api_key=tenant_key("globex")).detect(SAMPLES / name)
    assert "triangle" in {d.class_name for d in acme.detections}
    assert {d.class_name for d in globex.detections} <= {"circle", "square"}
    with pytest.raises(BadParameter, match="allowed: circle, square"):
        DetectionClient(api_key=tenant_key("globex")).detect(SAMPLES / name, classes="triangle")


def test_handle_errors_are_typed(gpu_app):
    with pytest.raises(Unauthenticated):
        DetectionClient(api_key="yk_not_a_key").detect(SAMPLES / "shapes_00.jpg")
    client = DetectionClient(api_key=tenant_key("initech"))
    with pytest.raises(UnsupportedMediaType):
        client.detect(b"definitely not an image")
    with pytest.raises(UnknownModel):
        client.detect(SAMPLES / "shapes_00.jpg", model="pcb")
    with pytest.raises(BadParameter, match="annotate is an HTTP option"):
        client.detect(SAMPLES / "shapes_00.jpg", annotate=True)
    assert client.models() == {
        "models": [{"name": "shapes", "versions": [1], "active_version": 1, "default": True}]
    }


def test_numpy_arrays_are_accepted(gpu_app):
    import cv2

    array = cv2.imread(str(SAMPLES / "shapes_01.png"))
    from_array = DetectionClient(api_key=tenant_key("acme")).detect(array)
    from_file = DetectionClient(api_key=tenant_key("acme")).detect(SAMPLES / "shapes_01.png")
    assert from_array.image == from_file.image
    assert [d.bbox for d in from_array.detections] == [d.bbox for d in from_file.detections]


def test_key_rotation_is_a_user_config_change_that_restarts_nothing(gpu_app):
    from ray import serve

    before = {t: _placement(t)["actor_id"] for t in FRACTIONAL}
    config = copy.deepcopy(gpu_app["config"])
    router = next(d for d in config["applications"][0]["deployments"] if d["name"] == "router")
    acme = next(t for t in router["user_config"]["tenants"] if t["id"] == "acme")
    acme["api_keys"] = [
        {"id": "key_acme_rotated", "sha256": hash_api_key("yk_integration_acme_rotated")}
    ]
    deploy(gpu_app["context"], config)

    def rotated():
        try:
            DetectionClient(api_key="yk_integration_acme_rotated").models()
            return True
        except Unauthenticated:
            return False

    wait_for(rotated, 120, "the rotated key to be accepted")
    with pytest.raises(Unauthenticated):
        DetectionClient(api_key=tenant_key("acme")).models()
    assert {t: _placement(t)["actor_id"] for t in FRACTIONAL} == before
    assert serve.status().applications["yolo"].deployments["tenant-acme"].status == "HEALTHY"
    deploy(gpu_app["context"], gpu_app["config"])  # restore for other tests
    wait_for(lambda: DetectionClient(api_key=tenant_key("acme")).models(), 120, "the original key")


def test_a_jwt_from_the_tenants_identity_provider_works_like_a_key(gpu_app, jwt_key):
    import time

    import jwt

    from tests.integration.conftest import JWT_ISSUER

    now = int(time.time())
    claims = {
        "iss": JWT_ISSUER,
        "aud": "yolo",
        "sub": "nightly-batch",
        "iat": now,
        "exp": now + 300,
    }
    token = jwt.encode(claims, jwt_key, algorithm="RS256")
    result = DetectionClient(api_key=token).detect(SAMPLES / "shapes_02.jpg")
    assert result.model == "shapes@1" and result.detections
    expired = jwt.encode({**claims, "exp": now - 600}, jwt_key, algorithm="RS256")
    with pytest.raises(Unauthenticated):
        DetectionClient(api_key=expired).detect(SAMPLES / "shapes_02.jpg")
    wrong_audience = jwt.encode({**claims, "aud": "other"}, jwt_key, algorithm="RS256")
    with pytest.raises(Unauthenticated):
        DetectionClient(api_key=wrong_audience).models()


def test_replica_threads_match_the_cpus_they_reserved(gpu_app):
    # Each tenant reserves 0.1 CPU here: one thread, not one per core of the machine.
    for tenant in FRACTIONAL:
        placement = _placement(tenant)
        assert (placement["threads"], placement["torch_threads"]) == (1, 1), placement


def test_the_shared_pool_yields_the_cpu_to_dedicated_replicas(gpu_app):
    """num_cpus enforces nothing at run time: the pool runs at a lower priority (nice),
    every thread of it; dedicated replicas keep the normal one."""
    from ray import serve

    from serve_app.constants import SHARED_POOL_NICE

    pool = serve.get_deployment_handle("shared-pool", "yolo").placement.remote().result()
    assert pool["nice"] >= SHARED_POOL_NICE > 0, pool
    assert _placement(next(iter(FRACTIONAL)))["nice"] == 0


def test_batch_settings_change_live_without_a_restart(gpu_app):
    from ray import serve

    def batching() -> dict:
        handle = serve.get_deployment_handle("tenant-globex", "yolo")
        return handle.batching.remote().result()

    before = _placement("globex")["actor_id"]
    assert batching()["max_batch_size"] == 8  # the default
    config = copy.deepcopy(gpu_app["config"])
    globex = next(
        d for d in config["applications"][0]["deployments"] if d["name"] == "tenant-globex"
    )
    globex["user_config"]["batching"] = {"max_batch_size": 3, "batch_wait_timeout_s": 0.05}
    globex["max_ongoing_requests"] = 16
    deploy(gpu_app["context"], config)
    wait_for(lambda: batching()["max_batch_size"] == 3, 120, "the new batch size")
    assert batching()["batch_wait_timeout_s"] == pytest.approx(0.05)
    assert _placement("globex")["actor_id"] == before  # reconfigure(), not a new replica
    client = DetectionClient(api_key=tenant_key("globex"))
    assert client.detect(SAMPLES / "shapes_02.jpg").detections  # still serving
    deploy(gpu_app["context"], gpu_app["config"])  # restore for other tests
    wait_for(lambda: batching()["max_batch_size"] == 8, 120, "the default batch size back")


def test_a_detector_killed_mid_request_is_sent_again_never_a_500(gpu_app, tmp_path):
    """A replica that dies with requests in flight is not the client's fault: the router
    sends them again (the replacement answers, 200) or, past the ride-through budget,
    answers 503 with Retry-After — never a 500 — and the platform serves afterwards."""
    import threading

    import numpy as np
    import ray
    import requests
    from PIL import Image
    from ray import serve
    from ray.util.state import get_actor

    handle = serve.get_deployment_handle("tenant-acme", "yolo")
    big = tmp_path / "big.png"  # big noisy images at a big size: a second or more of work
    rng = np.random.default_rng(7)
    Image.fromarray(rng.integers(0, 255, (1280, 1280, 3), dtype=np.uint8)).save(big)
    url = f"http://127.0.0.1:{gpu_app['config']['http_options']['port']}/v1/detect"
    responses: list[requests.Response] = []

    def post() -> None:
        responses.append(
            requests.post(
                url,
                data=big.read_bytes(),
                params={"imgsz": "1280", "conf": "0.01"},
                headers={"Authorization": f"Bearer {tenant_key('acme')}"},
                timeout=120,
            )
        )

    actor_id = handle.placement.remote().result()["actor_id"]
    replica = ray.get_actor(get_actor(actor_id).name, namespace="serve")
    clients = [threading.Thread(target=post) for _ in range(4)]
    for client in clients:
        client.start()
    wait_for(
        lambda: handle.batching.remote().result()["in_flight"] >= 2,
        60,
        "requests in flight in the replica",
        poll_s=0.02,
    )
    ray.kill(replica, no_restart=True)
    for client in clients:
        client.join(120)
    statuses = sorted(r.status_code for r in responses)
    assert len(statuses) == 4 and set(statuses) <= {200, 503}, statuses
    refused = [r for r in responses if r.status_code == 503]
    for response in refused:
        assert response.json()["error"]["code"] == "overloaded"
        assert int(response.headers["Retry-After"]) >= 1
    # The kill landed mid-request: the router saw the replica die and sent a call again.
    logs = Path(ray._private.worker._global_node.get_logs_dir_path()) / "serve"
    sent_again = [
        line
        for path in logs.glob("replica_yolo_router_*.log")
        for line in path.read_text(errors="replace").splitlines()
        if "router: detection failed" in line and "sending it again" in line
    ]
    assert sent_again or refused, "the kill landed after every request had finished"

    def serving_again() -> bool:
        try:
            return handle.placement.remote().result(timeout_s=10)["actor_id"] != actor_id
        except Exception:
            return False

    wait_for(serving_again, 180, "Serve to replace the killed replica")
    assert DetectionClient(api_key=tenant_key("acme")).detect(SAMPLES / "shapes_02.jpg").detections
