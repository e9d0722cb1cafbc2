"""A tenant's own version in the demo `make run` serves: uploaded, shadow-rolled-out,
promoted by the gate, counted in the metrics (pairs, agreement, the unbilled second
inferences), rolled back and deleted — the demo left as it was."""

from __future__ import annotations

import json

import requests

from tests.conftest import DEMO_MODEL, SAMPLES, wait_for
from tests.e2e.serve_run.test_metrics import AUTH, scrape, value

MANIFEST = json.loads((DEMO_MODEL / "manifest.json").read_text())


def test_a_promoted_rollout_is_in_the_metrics_and_can_be_undone(served):
    url = f"{served['url']}/v1/models/shapes/versions"
    manifest = {"architecture": "yolov8n", "class_names": MANIFEST["class_names"],
                "imgsz": MANIFEST["imgsz"]}  # fmt: skip
    answer = requests.post(
        url,
        files={
            "weights": ("model.safetensors", (DEMO_MODEL / "model.safetensors").read_bytes()),
            "manifest": (None, json.dumps(manifest)),
        },
        headers=AUTH,
        timeout=120,
    )
    assert answer.status_code == 202, answer.text
    version = answer.json()["version"]
    assert version > 1
    record = f"{url}/{version}"

    def status() -> dict:
        return requests.get(record, headers=AUTH, timeout=30).json()

    wait_for(lambda: status()["status"] != "validating", 240, "validation")
    assert status()["status"] == "ready", status()
    rollout = {"mode": "shadow", "percent": 100, "min_images": 3, "min_agreement": 0.9}
    started = requests.post(f"{record}/rollout", json=rollout, headers=AUTH, timeout=60)
    assert started.status_code == 200, started.text
    image = (SAMPLES / "shapes_01.png").read_bytes()

    def promoted() -> bool:
        """One request, then its pair counted before the next (the second inference runs
        after the answer: overlapping the next request it would look slower)."""
        before = status()["rollout"]["images"]
        detect = requests.post(f"{served['url']}/v1/detect", data=image, headers=AUTH, timeout=60)
        assert detect.status_code == 200, detect.text
        wait_for(lambda: status()["rollout"]["images"] > before
                 or status()["rollout"]["state"] != "running", 30, "the pair")  # fmt: skip
        return status()["rollout"]["state"] != "running"

    wait_for(promoted, 120, "the gate's decision")
    assert status()["rollout"]["state"] == "promoted", status()["rollout"]["reason"]
    model = f"shapes@{version}"

    def counted() -> bool:
        text = scrape()
        return (
            value(text, "ray_yoloserve_rollout_pairs", tenant="demo", model=model) >= 3
            and value(text, "ray_yoloserve_rollout_agreement", tenant="demo", model=model) == 1.0
            and value(
                text, "ray_yoloserve_rollout_extra_images_total", tenant="demo", mode="shadow"
            )
            >= 3
            and value(
                text,
                "ray_yoloserve_rollout_latency_p95_seconds",
                tenant="demo",
                model=model,
                side="candidate",
            )
            > 0
        )

    wait_for(counted, 60, "the rollout's series")
    back = requests.post(f"{served['url']}/v1/models/shapes/rollback", headers=AUTH, timeout=30)
    assert back.status_code == 200 and back.json()["active_version"] == 1
    assert requests.delete(record, headers=AUTH, timeout=30).status_code == 204
    detect = requests.post(f"{served['url']}/v1/detect", data=image, headers=AUTH, timeout=60)
    assert detect.json()["model"] == "shapes@1"
