"""Tenant isolation: the tenant comes from the credential and nothing else.

alpha (shared pool) tries to reach beta's model ``widgets`` (beta has its own
deployment) by every parameter and header the API has, and by the ones Ray Serve
itself knows about. Every attempt must answer exactly like a model that exists
nowhere, and nothing may name beta.
"""

from __future__ import annotations

import statistics
import time

import pytest
import requests

from serve_app.client import DetectionClient
from serve_app.errors import UnknownModel
from tests.conftest import SAMPLES
from tests.platform_app import IMAGE
from tests.security.conftest import assert_no_leak, error_code

ATTEMPTS = {
    "model-param": {"params": {"model": "widgets"}},
    "model-and-version": {"params": {"model": "widgets", "version": "1"}},
    "qualified-model": {"params": {"model": "beta/widgets"}},
    "model-id": {"params": {"model": "beta/widgets@1"}},
    "tenant-param": {"params": {"tenant": "beta"}},
    "tenant-header": {"headers": {"X-Tenant-Id": "beta"}},
    "serve-multiplex-header": {"headers": {"serve_multiplexed_model_id": "beta/widgets@1"}},
    "serve-multiplex-header-dashes": {"headers": {"serve-multiplexed-model-id": "beta/widgets@1"}},
    "serve-app-header": {"headers": {"X-Serve-App": "beta"}},
    "forwarded-for": {"headers": {"X-Forwarded-For": "beta", "Forwarded": "for=beta"}},
    "path-suffix": {"path": "/v1/detect/beta"},
    "path-traversal": {"path": "/v1/../v1/detect%2F..%2Fbeta"},
    "multipart-model-field": {
        "data": (
            b"--b\r\nContent-Disposition: form-data; name=model\r\n\r\nwidgets\r\n"
            b"--b\r\nContent-Disposition: form-data; name=image; filename=x.png\r\n"
            b"Content-Type: image/png\r\n\r\n" + IMAGE + b"\r\n--b--\r\n"
        ),
        "headers": {"Content-Type": "multipart/form-data; boundary=b"},
    },
}


@pytest.mark.parametrize("case", sorted(ATTEMPTS))
def test_alpha_cannot_reach_betas_model_by_any_parameter_or_header(platform, case):
    attempt = ATTEMPTS[case]
    response = platform.post(
        platform.keys["alpha"],
        data=attempt.get("data", IMAGE),
        params=attempt.get("params"),
        headers=attempt.get("headers"),
        path=attempt.get("path", "/v1/detect"),
    )
    assert response.status_code in (200, 400, 404), response.text
    if response.status_code == 200:
        # The parameter was ignored: alpha got its own model's answer, never beta's.
        assert response.json()["model"] == "shapes@1"
    else:
        assert error_code(response, response.status_code) in {
            "unknown_model",
            "bad_parameter",
            "not_found",
        }
    assert_no_leak(response)


def test_another_tenants_model_answers_exactly_like_a_missing_one(platform):
    def ask(model: str) -> requests.Response:
        return platform.detect("alpha", params={"model": model})

    theirs, missing = ask("widgets"), ask("nothing-by-this-name")
    assert theirs.status_code == missing.status_code == 404
    assert theirs.content == missing.content
    relevant = ("content-type", "content-length")
    assert {k: theirs.headers.get(k) for k in relevant} == {
        k: missing.headers.get(k) for k in relevant
    }
    version = platform.detect("alpha", params={"model": "shapes", "version": "2"})
    assert version.content == missing.content

    # Same timing class: both are refused in the router from the caller's own
    # catalog, without a detector call. Interleaved, so machine noise hits both.
    times: dict[str, list[float]] = {"widgets": [], "nothing-by-this-name": []}
    for _ in range(25):
        for name, samples in times.items():
            started = time.perf_counter()
            assert ask(name).status_code == 404
            samples.append(time.perf_counter() - started)
    medians = sorted(statistics.median(s) for s in times.values())
    assert medians[1] < 2 * medians[0] + 0.005, medians


def test_the_model_list_is_the_callers_own(platform):
    response = requests.get(
        f"{platform.url}/v1/models",
        headers={"Authorization": f"Bearer {platform.keys['alpha']}"},
        timeout=30,
    )
    assert [m["name"] for m in response.json()["models"]] == ["shapes"]
    assert_no_leak(response)
    own = requests.get(
        f"{platform.url}/v1/models",
        headers={"Authorization": f"Bearer {platform.keys['beta']}"},
        timeout=30,
    )
    assert [m["name"] for m in own.json()["models"]] == ["widgets"]


def test_handle_calls_from_batch_jobs_go_through_the_same_checks(platform):
    alpha = DetectionClient(api_key=platform.keys["alpha"])
    assert alpha.detect(SAMPLES / "shapes_03.png").model == "shapes@1"
    with pytest.raises(UnknownModel) as theirs:
        alpha.detect(SAMPLES / "shapes_03.png", model="widgets")
    with pytest.raises(UnknownModel) as missing:
        alpha.detect(SAMPLES / "shapes_03.png", model="nothing-by-this-name")
    assert theirs.value.message == missing.value.message
    assert "beta" not in theirs.value.message and "widgets" not in theirs.value.message
    beta = DetectionClient(api_key=platform.keys["beta"])
    assert beta.detect(SAMPLES / "shapes_03.png", model="widgets").model == "widgets@1"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ((123, IMAGE, None), "api_key must be a str"),
        (("KEY", "shapes_03.png", None), "image must be the encoded file's bytes"),
        (("KEY", IMAGE, ["conf", 0.5]), "params must be a dict"),
        (("KEY", IMAGE, {"conf": float("nan")}), "must be a finite number"),
        (("KEY", IMAGE, {"max_det": 10**5000}), "out of range"),
        (("KEY", IMAGE, {"classes": [object()]}), "got list"),
    ],
    ids=["key-not-str", "path-not-bytes", "params-list", "nan", "huge-int", "object"],
)
def test_a_handle_call_with_wrong_types_is_a_400_not_a_crash(platform, args, needle):
    """Batch jobs pass Python objects: a wrong type is the same 400 an HTTP client gets
    for a malformed request, never an AttributeError inside the router."""
    from ray import serve

    from serve_app.errors import BadParameter, unwrap_error

    key = platform.keys["alpha"]
    args = tuple(key if a == "KEY" else a for a in args)
    router = serve.get_deployment_handle("router", "yolo")
    with pytest.raises(Exception) as raised:
        router.detect_image.remote(*args).result()
    error = unwrap_error(raised.value)
    assert isinstance(error, BadParameter), raised.value
    assert needle in error.message and error.status == 400
    # and the same router keeps answering handle and HTTP calls
    assert DetectionClient(api_key=key).detect(IMAGE).model == "shapes@1"
