"""Tenants' own model versions over real HTTP (issue 21): upload, sandboxed validation,
shadow and canary rollouts decided by box agreement, activation, rollback, deletion —
and what a tenant may not do: upload what cannot be served, or touch another tenant's
versions (the same 404 as a version that exists nowhere)."""

from __future__ import annotations

import base64
import http.client
import json
import pickle
from typing import Any

import pytest
import requests

from serve_app.inference.catalog import NO_SUCH_MODEL
from tests import onnx_bombs
from tests.conftest import ROOT, SAMPLES, wait_for
from tests.security.test_audit_log import audit_lines

DEMO = ROOT / "models" / "demo" / "shapes" / "1"
DEMO_MANIFEST = json.loads((DEMO / "manifest.json").read_text())
NAMES = DEMO_MANIFEST["class_names"]
IMAGES = [
    (SAMPLES / f"shapes_{i:02d}.{'jpg' if i % 2 == 0 else 'png'}").read_bytes() for i in range(6)
]
VALIDATED_WITHIN_S = 240


def _upload(app, tenant: str, weights: bytes, manifest: dict[str, Any], model: str = "shapes",
            samples: bytes | None = None) -> requests.Response:  # fmt: skip
    files = {"weights": ("model.bin", weights), "manifest": (None, json.dumps(manifest))}
    if samples is not None:
        files["samples"] = (None, samples)
    return requests.post(
        f"{app.url}/v1/models/{model}/versions",
        files=files,
        headers={"Authorization": f"Bearer {app.keys[tenant]}"},
        timeout=120,
    )


def _call(app, tenant: str, method: str, path: str, body: Any = None) -> requests.Response:
    return requests.request(
        method, f"{app.url}{path}", json=body, timeout=30,
        headers={"Authorization": f"Bearer {app.keys[tenant]}"},
    )  # fmt: skip


def _settled(app, tenant: str, version: int) -> dict[str, Any]:
    """The version's record once validation has decided."""
    path = f"/v1/models/shapes/versions/{version}"
    wait_for(
        lambda: _call(app, tenant, "GET", path).json()["status"] != "validating",
        VALIDATED_WITHIN_S, f"version {version} to be validated",
    )  # fmt: skip
    return _call(app, tenant, "GET", path).json()


def _demo_manifest(names: list[str] = NAMES) -> dict[str, Any]:
    return {"architecture": "yolov8n", "class_names": names, "imgsz": DEMO_MANIFEST["imgsz"]}


@pytest.fixture(scope="module")
def uploaded(platform):
    """The demo weights uploaded again by ``uploader``: version 2, validated."""
    answer = _upload(
        platform, "uploader", (DEMO / "model.safetensors").read_bytes(), _demo_manifest()
    )
    assert answer.status_code == 202, answer.text
    assert answer.json() == {"version": 2, "status": "validating"}
    record = _settled(platform, "uploader", 2)
    assert record["status"] == "ready", record
    return record


def test_an_upload_is_validated_and_measured(uploaded):
    assert uploaded["sha256"] == DEMO_MANIFEST["sha256"]
    assert uploaded["size_bytes"] == DEMO_MANIFEST["size_bytes"]
    assert uploaded["metrics"]["load_s"] > 0 and uploaded["metrics"]["latency_ms"] > 0
    assert uploaded["origin"] == "upload" and uploaded["rollout"] is None


def test_another_tenant_cannot_see_roll_out_activate_or_delete_it(platform, uploaded):
    base = "/v1/models/shapes/versions"
    missing = _call(platform, "alpha", "GET", f"{base}/99")
    assert missing.status_code == 404
    for method, path, body in (
        ("GET", f"{base}/2", None),
        ("DELETE", f"{base}/2", None),
        ("POST", f"{base}/2/activate", None),
        ("POST", f"{base}/2/rollout", {"mode": "shadow", "percent": 50}),
    ):
        answer = _call(platform, "alpha", method, path, body)
        assert answer.status_code == 404, (method, path, answer.text)
        assert (
            answer.json()
            == missing.json()
            == {"error": {"code": "unknown_model", "message": NO_SUCH_MODEL}}
        )
    # and alpha's catalog does not grow a version 2
    assert _call(platform, "alpha", "GET", "/v1/models").json()["models"][0]["versions"] == [1]


def test_shadow_rollout_of_the_same_weights_is_promoted_then_rolled_back(platform, uploaded):
    path = "/v1/models/shapes/versions/2"
    # p95 of 20 pairs: not the slowest single one of either side
    rollout = {"mode": "shadow", "percent": 100, "min_images": 20, "min_agreement": 0.95}
    started = _call(platform, "uploader", "POST", f"{path}/rollout", rollout)
    assert started.status_code == 200, started.text
    assert started.json()["rollout"]["state"] == "running"

    def pair() -> bool:
        """One request, then its pair counted: the candidate's run (after the answer)
        does not overlap the next request's on this 2-core machine, so the latencies
        compare the models, not the test's own load."""
        before = _call(platform, "uploader", "GET", path).json()["rollout"]
        answer = platform.detect("uploader", data=IMAGES[0])
        assert answer.status_code == 200, answer.text

        def counted() -> bool:
            now = _call(platform, "uploader", "GET", path).json()["rollout"]
            return now["images"] > before["images"] or now["state"] != "running"

        wait_for(counted, 30, "the pair to be counted")
        return _call(platform, "uploader", "GET", path).json()["rollout"]["state"] != "running"

    wait_for(pair, 120, "the shadow rollout to be decided")
    decided = _call(platform, "uploader", "GET", path).json()["rollout"]
    assert decided["state"] == "promoted", decided["reason"]
    assert decided["images"] >= 20 and decided["agreement"] == 1.0
    assert decided["reason"].startswith("promoted: box agreement 1.000")
    wait_for(lambda: platform.detect("uploader").json()["model"] == "shapes@2", 30,
             "the promoted version to answer")  # fmt: skip

    def catalog() -> dict[str, Any]:
        return _call(platform, "uploader", "GET", "/v1/models").json()["models"][0]

    # a router's catalog follows within its next poll of the ledger (0.5 s)
    wait_for(lambda: catalog()["active_version"] == 2, 10, "the catalog to show it active")
    assert catalog()["versions"] == [1, 2]
    # the active version cannot be deleted
    assert _call(platform, "uploader", "DELETE", path).status_code == 409
    back = _call(platform, "uploader", "POST", "/v1/models/shapes/rollback")
    assert back.status_code == 200 and back.json()["active_version"] == 1
    wait_for(lambda: platform.detect("uploader").json()["model"] == "shapes@1", 30,
             "the operator's version to answer again")  # fmt: skip
    nothing = _call(platform, "uploader", "POST", "/v1/models/shapes/rollback")
    assert nothing.status_code == 409 and "nothing to roll back" in nothing.text
    # every tenant action is in the audit log, with the model and version it named
    ids = {r.headers["x-request-id"]: r for r in (started, back, nothing)}
    wait_for(lambda: set(ids) <= set(audit_lines(platform.audit_dir)), 30, "audit lines")
    lines = audit_lines(platform.audit_dir)
    rolled = lines[started.headers["x-request-id"]]
    assert rolled["action"] == "POST /v1/models/{name}/versions/{version}/rollout"
    assert (rolled["tenant"], rolled["model"], rolled["version"]) == ("uploader", "shapes", "2")
    assert (rolled["status"], rolled["outcome"]) == (200, "ok")
    refused = lines[nothing.headers["x-request-id"]]
    assert (refused["action"], refused["status"]) == ("POST /v1/models/{name}/rollback", 409)


def test_canary_of_swapped_class_names_is_rejected_with_its_agreement(platform, uploaded):
    swapped = [NAMES[1], NAMES[0], *NAMES[2:]]
    answer = _upload(platform, "uploader", (DEMO / "model.safetensors").read_bytes(),
                     _demo_manifest(swapped))  # fmt: skip
    version = answer.json()["version"]
    assert answer.status_code == 202 and version == 3
    assert _settled(platform, "uploader", version)["status"] == "ready"
    path = f"/v1/models/shapes/versions/{version}"
    rollout = {"mode": "canary", "percent": 100, "min_images": 3, "min_agreement": 0.9}
    assert _call(platform, "uploader", "POST", f"{path}/rollout", rollout).status_code == 200
    seen = set()

    def decided() -> bool:
        for image in IMAGES:
            result = platform.detect("uploader", data=image)
            assert result.status_code == 200, result.text
            seen.add(result.json()["model"])
        return _call(platform, "uploader", "GET", path).json()["status"] != "ready"

    wait_for(decided, 120, "the canary to be decided")
    record = _call(platform, "uploader", "GET", path).json()
    assert record["status"] == "rejected" and record["rollout"]["state"] == "stopped"
    assert record["rollout"]["agreement"] < 0.9
    assert "box agreement" in record["reason"] and "boxes differ" in record["reason"]
    assert "shapes@3" in seen  # the canary answered while it ran
    # every router stops sending it traffic within its next poll of the ledger
    wait_for(lambda: platform.detect("uploader").json()["model"] == "shapes@1", 10,
             "the incumbent to answer alone again")  # fmt: skip
    # a rejected version cannot be activated; it can be deleted, and is gone
    assert _call(platform, "uploader", "POST", f"{path}/activate").status_code == 409
    assert _call(platform, "uploader", "DELETE", path).status_code == 204
    assert _call(platform, "uploader", "GET", path).status_code == 404


def _external_data_onnx() -> bytes:
    from onnx import TensorProto, helper

    weight = helper.make_tensor("w", TensorProto.FLOAT, [1], [1.0])
    weight.ClearField("float_data")
    weight.data_location = TensorProto.EXTERNAL
    entry = weight.external_data.add()
    entry.key, entry.value = "location", "../../../etc/passwd"
    graph = helper.make_graph(
        [helper.make_node("Identity", ["w"], ["out"])], "g", [],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1])], [weight],
    )  # fmt: skip
    return helper.make_model(graph).SerializeToString()


@pytest.mark.parametrize(
    ("weights", "manifest", "reason"),
    [
        (pickle.dumps({"model.22.weight": [0.0]}, protocol=4), _demo_manifest(),
         "pickled PyTorch checkpoint"),
        (b"\x00" * 4096, _demo_manifest(), "not a safetensors file"),
        (_external_data_onnx(), {"class_names": NAMES, "imgsz": 320}, "external files"),
        (onnx_bombs.memory_bomb(), {"class_names": onnx_bombs.CLASSES, "imgsz": 320}, "memory"),
        ((DEMO / "model.safetensors").read_bytes(), _demo_manifest(NAMES[:2]),
         "do not fit architecture yolov8n with 2 classes"),
    ],
    ids=["pickle-as-safetensors", "not-safetensors", "onnx-external-data", "onnx-memory-bomb",
         "wrong-class-count"],
)  # fmt: skip
def test_what_cannot_be_served_is_rejected_with_the_reason(platform, weights, manifest, reason):
    answer = _upload(platform, "uploader", weights, manifest, model="shapes")
    assert answer.status_code == 202, answer.text
    record = _settled(platform, "uploader", answer.json()["version"])
    assert record["status"] == "rejected", record
    assert reason in record["reason"], record["reason"]
    # never callable
    detect = platform.detect("uploader", params={"version": str(record["version"])})
    assert detect.status_code == 404


def test_bad_uploads_are_refused_before_anything_is_stored(platform):
    key = {"Authorization": f"Bearer {platform.keys['uploader']}"}
    url = f"{platform.url}/v1/models/shapes/versions"
    no_form = requests.post(url, data=b"weights", headers=key, timeout=30)
    assert no_form.status_code == 400 and "multipart/form-data" in no_form.text
    no_manifest = requests.post(url, files={"weights": ("m", b"x")}, headers=key, timeout=30)
    assert no_manifest.status_code == 400 and "'manifest'" in no_manifest.text
    bad_arch = _upload(
        platform, "uploader", b"x" * 64, {"architecture": "evil", "class_names": ["a"]}
    )
    assert bad_arch.status_code == 400 and "not allowed" in bad_arch.text
    unknown_model = _upload(platform, "uploader", b"x" * 64, _demo_manifest(), model="widgets")
    assert unknown_model.status_code == 404
    # a declared body over the upload limit is refused before it is read
    host, port = platform.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.putrequest("POST", "/v1/models/shapes/versions")
    conn.putheader("Authorization", key["Authorization"])
    conn.putheader("Content-Type", "multipart/form-data; boundary=x")
    conn.putheader("Content-Length", str(2 * 1024**3))
    conn.endheaders()
    answer = conn.getresponse()
    assert answer.status == 413 and b"limit for this call" in answer.read()
    conn.close()


def _samples(count: int = 4) -> bytes:
    """Labelled samples from the demo's ground truth, as a tenant sends them."""
    truth = json.loads((SAMPLES / "ground_truth.json").read_text())
    names = sorted(truth)[:count]
    return json.dumps({"samples": [
        {"image": base64.b64encode((SAMPLES / n).read_bytes()).decode(), "boxes": truth[n]}
        for n in names
    ]}).encode()  # fmt: skip


def test_samples_measure_map50_and_a_worse_candidate_is_refused_by_it(platform):
    good = _upload(platform, "uploader", (DEMO / "model.safetensors").read_bytes(),
                   _demo_manifest(), samples=_samples())  # fmt: skip
    assert good.status_code == 202, good.text
    record = _settled(platform, "uploader", good.json()["version"])
    assert record["status"] == "ready" and record["metrics"]["map50"] > 0.8, record
    swapped = [NAMES[1], NAMES[0], *NAMES[2:]]
    bad = _upload(platform, "uploader", (DEMO / "model.safetensors").read_bytes(),
                  _demo_manifest(swapped), samples=_samples())  # fmt: skip
    version = bad.json()["version"]
    record = _settled(platform, "uploader", version)
    assert record["status"] == "ready" and record["metrics"]["map50"] < 0.5, record
    rollout = {"mode": "shadow", "percent": 10, "min_images": 50, "require_map50": True}
    answer = _call(platform, "uploader", "POST", f"/v1/models/shapes/versions/{version}/rollout",
                   rollout)  # fmt: skip
    assert answer.status_code == 200, answer.text
    decided = answer.json()
    assert decided["status"] == "rejected" and decided["rollout"]["state"] == "stopped"
    measured = decided["rollout"]["map50"]
    assert measured["candidate"] < measured["incumbent"] and measured["incumbent"] > 0.8
    assert "mAP50" in decided["reason"] and "below the active version's" in decided["reason"]
    for number in (good.json()["version"], version):  # room for the other tests' uploads
        assert (
            _call(
                platform, "uploader", "DELETE", f"/v1/models/shapes/versions/{number}"
            ).status_code
            == 204
        )
