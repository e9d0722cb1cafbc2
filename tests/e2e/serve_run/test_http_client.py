"""``HttpDetectionClient`` against `make run`: the same results and typed errors as the
handle client, from outside the cluster."""

from __future__ import annotations

import pytest
import requests

from serve_app.client import HttpDetectionClient
from serve_app.errors import BadParameter, Unauthenticated, UnknownModel
from tests.conftest import DEMO_KEY, SAMPLES


def test_the_http_client_detects_lists_and_reports_usage(served):
    sample = SAMPLES / "shapes_02.jpg"
    with HttpDetectionClient(served["url"], DEMO_KEY) as client:
        result = client.detect(sample, conf=0.3)
        models = client.models()
        usage = client.usage()
    direct = requests.post(f"{served['url']}/v1/detect", data=sample.read_bytes(),
                           params={"conf": 0.3}, timeout=60,
                           headers={"Authorization": f"Bearer {DEMO_KEY}"}).json()  # fmt: skip
    assert [d.model_dump(mode="json") for d in result.detections] == direct["detections"]
    assert result.model == "shapes@1" and len(result.detections) > 0
    assert [m["name"] for m in models["models"]] == ["shapes"]
    assert usage["images_this_month"] >= 1


@pytest.mark.parametrize(("key", "params", "error"), [
    ("yk_" + "W" * 43, {}, Unauthenticated),
    (DEMO_KEY, {"model": "nope"}, UnknownModel),
    (DEMO_KEY, {"conf": 7}, BadParameter),
])  # fmt: skip
def test_errors_are_the_typed_api_errors(served, key, params, error):
    with HttpDetectionClient(served["url"], key) as client, pytest.raises(error) as caught:
        client.detect(SAMPLES / "shapes_02.jpg", **params)
    assert caught.value.message
