"""The Open Inference Protocol (``/v2``) with ``tritonclient``, the de-facto client of
Triton, KServe, MLServer and OpenVINO Model Server, against the running platform: the
same credentials, quotas and isolation as ``/v1/detect``, and the same boxes."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
import requests
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.conftest import SAMPLES, wait_for
from tests.platform_app import IMAGE
from tests.security.conftest import RATED_BURST, assert_no_leak

IMAGES = [IMAGE, (SAMPLES / "shapes_02.jpg").read_bytes()]


def _client(platform) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(platform.url.removeprefix("http://"), network_timeout=60)


def _auth(platform, tenant: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {platform.keys[tenant]}"}


def _infer(platform, tenant: str, images: list[bytes], binary: bool = True, model="shapes",
           **kwargs) -> triton.InferResult:  # fmt: skip
    tensor = triton.InferInput("IMAGE", [len(images)], "BYTES")
    data = images if binary else [base64.b64encode(i) for i in images]
    tensor.set_data_from_numpy(np.array(data, dtype=np.object_), binary_data=binary)
    outputs = [triton.InferRequestedOutput(n, binary_data=binary)
               for n in ("DETECTIONS", "NUM_DETECTIONS")]  # fmt: skip
    return _client(platform).infer(model, [tensor], outputs=outputs,
                                   headers=_auth(platform, tenant), **kwargs)  # fmt: skip


def _v1_rows(platform, tenant: str, image: bytes) -> list[list[float]]:
    answer = platform.detect(tenant, data=image)
    assert answer.status_code == 200, answer.text
    return [[*d["bbox"], d["confidence"], d["class_id"]] for d in answer.json()["detections"]]


@pytest.mark.parametrize("binary", [True, False], ids=["binary tensors", "JSON tensors"])
def test_tritonclient_infers_several_images_with_v1s_boxes(platform, binary):
    result = _infer(platform, "free", IMAGES, binary, request_id="batch-7")
    counts = result.as_numpy("NUM_DETECTIONS").tolist()
    rows = result.as_numpy("DETECTIONS")
    assert rows.shape[0] == len(IMAGES) and result.get_response()["id"] == "batch-7"
    assert result.get_response()["model_name"] == "shapes"
    for i, image in enumerate(IMAGES):
        expected = _v1_rows(platform, "free", image)
        assert counts[i] == len(expected) > 0
        got = rows[i, : counts[i]].tolist()
        for row, want in zip(got, expected, strict=True):
            assert row == pytest.approx(want, abs=0.01)  # float32 of v1's rounded numbers


def test_parameters_have_v1s_meaning_and_bounds(platform):
    few = _infer(platform, "free", [IMAGE], parameters={"max_det": 1, "conf": 0.25})
    assert few.as_numpy("NUM_DETECTIONS").tolist() == [1]
    with pytest.raises(InferenceServerException) as caught:
        _infer(platform, "free", [IMAGE], parameters={"conf": 7})
    assert caught.value.status() == "400" and "conf" in caught.value.message()


def test_server_and_model_metadata_and_readiness(platform):
    client = _client(platform)
    assert client.is_server_live() and client.is_server_ready()
    server = client.get_server_metadata()
    assert "binary_tensor_data" in server["extensions"]
    headers = _auth(platform, "free")
    assert client.is_model_ready("shapes", headers=headers)
    meta = client.get_model_metadata("shapes", headers=headers)
    assert meta["inputs"] == [{"name": "IMAGE", "datatype": "BYTES", "shape": [-1]}]
    assert json.loads(meta["parameters"]["class_names"]) == ["circle", "square", "triangle"]
    pinned = client.get_model_metadata("shapes", model_version="1", headers=headers)
    assert pinned["versions"] == ["1"]


def test_another_tenants_model_answers_like_one_that_does_not_exist(platform):
    client, headers = _client(platform), _auth(platform, "alpha")
    answers = {}
    for model in ("widgets", "no-such-model"):  # widgets is beta's
        for call in (
            lambda m: client.get_model_metadata(m, headers=headers),
            lambda m: client.is_model_ready(m, headers=headers),
            lambda m: _infer(platform, "alpha", [IMAGE], model=m),
        ):
            try:
                answers.setdefault(model, []).append(("ok", call(model)))
            except InferenceServerException as exc:
                answers.setdefault(model, []).append((exc.status(), exc.message()))
    assert answers["widgets"] == answers["no-such-model"]
    statuses = [status for status, _ in answers["widgets"]]
    assert statuses == ["404", "ok", "404"]  # is_model_ready answers False on a 404
    assert answers["widgets"][1] == ("ok", False)
    raw = requests.post(f"{platform.url}/v2/models/widgets/infer", data=b"{}", headers=headers,
                        timeout=30)  # fmt: skip
    assert raw.status_code == 404 and set(raw.json()) == {"error"}
    assert_no_leak(raw)


def test_a_wrong_key_is_a_401(platform):
    with pytest.raises(InferenceServerException) as caught:
        _client(platform).infer("shapes", [], headers={"Authorization": "Bearer yk_" + "Q" * 43})
    assert caught.value.status() == "401"


def test_a_bad_image_among_good_ones_refuses_the_request_and_names_it(platform):
    before = _usage_images(platform, "inferrer")
    with pytest.raises(InferenceServerException) as caught:
        _infer(platform, "inferrer", [IMAGE, b"\xff\xd8\xff\xe0 not a jpeg", IMAGE])
    assert caught.value.status() in ("400", "415", "422")
    assert caught.value.message().startswith("image 1: ")
    # nothing was admitted, so nothing is billed; then a good request of 3 bills 3
    _infer(platform, "inferrer", [IMAGE] * 3)
    wait_for(lambda: _usage_images(platform, "inferrer") == before + 3, 30, "3 images billed")


def test_more_images_than_the_burst_is_a_429_with_the_protocols_body(platform):
    with pytest.raises(InferenceServerException) as caught:
        _infer(platform, "rated", [IMAGE] * (RATED_BURST + 2))
    assert caught.value.status() == "429"
    assert "Retry-After" in caught.value.message() or "quota" in caught.value.message()


def test_model_metadata_calls_are_rate_limited_like_usage_calls(platform):
    """Metadata and readiness may load a model: past the control calls' rate a tenant
    gets 429 (the protocol's body, Retry-After), not a detector call per request."""
    url = f"{platform.url}/v2/models/shapes"
    answers = [requests.get(url, headers=_auth(platform, "chatty"), timeout=30)
               for _ in range(80)]  # fmt: skip
    statuses = [a.status_code for a in answers]
    assert set(statuses) == {200, 429}, statuses
    refused = answers[statuses.index(429)]
    assert int(refused.headers["Retry-After"]) >= 1
    assert set(refused.json()) == {"error"} and "per second" in refused.json()["error"]


def _usage_images(platform, tenant: str) -> int:
    answer = requests.get(f"{platform.url}/v1/usage", headers=_auth(platform, tenant), timeout=30)
    assert answer.status_code == 200, answer.text
    return int(answer.json()["images_this_month"])
