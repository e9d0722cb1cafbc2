"""The local demo over real HTTP, served by the real `serve run` command."""

from __future__ import annotations

import base64
import random

import pytest
import requests

from tests.conftest import DEMO_KEY, SAMPLES, ground_truth, matched_shapes, png_header_only

AUTH = {"Authorization": f"Bearer {DEMO_KEY}"}


def _detect(served, data: bytes, headers=None, params=None) -> requests.Response:
    return requests.post(
        f"{served['url']}/v1/detect",
        data=data,
        headers={**AUTH, **(headers or {})},
        params=params,
        timeout=120,
    )


def _error(resp: requests.Response, status: int, code: str) -> str:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"} and body["error"]["code"] == code
    assert body["error"]["message"]
    return body["error"]["message"]


def test_health_and_readiness(served):
    assert requests.get(f"{served['url']}/healthz", timeout=10).json() == {"status": "ok"}
    ready = requests.get(f"{served['url']}/readyz", timeout=60)
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


def test_every_sample_matches_ground_truth(served):
    truth = ground_truth()
    hits = total = 0
    for name, shapes in sorted(truth.items()):
        resp = _detect(served, (SAMPLES / name).read_bytes())
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["model"] == "shapes@1"
        assert set(body) == {"model", "image", "detections", "timing_ms"}
        for det in body["detections"]:
            assert set(det) == {"class_id", "class_name", "confidence", "bbox"}
            x1, y1, x2, y2 = det["bbox"]
            assert (
                0 <= x1 < x2 <= body["image"]["width"] and 0 <= y1 < y2 <= body["image"]["height"]
            )
        hits += matched_shapes(shapes, body["detections"])
        total += len(shapes)
    assert total >= 30
    assert hits >= 0.9 * total, f"{hits}/{total} shapes matched"


def test_multipart_upload_gives_the_same_answer(served):
    data = (SAMPLES / "shapes_02.jpg").read_bytes()
    raw = _detect(served, data).json()
    form = requests.post(
        f"{served['url']}/v1/detect",
        headers=AUTH,
        timeout=120,
        files={"image": ("shapes_02.jpg", data, "image/jpeg")},
    ).json()
    assert form["detections"] == raw["detections"]


def test_models_lists_the_callers_models(served):
    resp = requests.get(f"{served['url']}/v1/models", headers=AUTH, timeout=30)
    assert resp.json() == {
        "models": [{"name": "shapes", "versions": [1], "active_version": 1, "default": True}]
    }


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer yk_wrong_key"},
        {"Authorization": "Basic ZGVtbzpkZW1v"},
        {"Authorization": f"Bearer {DEMO_KEY}x"},
    ],
)
def test_bad_or_missing_key_is_401(served, headers):
    resp = requests.post(
        f"{served['url']}/v1/detect",
        data=(SAMPLES / "shapes_00.jpg").read_bytes(),
        headers=headers,
        timeout=30,
    )
    _error(resp, 401, "unauthenticated")
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


def test_random_bytes_are_415(served):
    rng = random.Random(7)
    message = _error(
        _detect(served, bytes(rng.randrange(256) for _ in range(4096))),
        415,
        "unsupported_media_type",
    )
    assert "JPEG" in message


def test_truncated_jpeg_is_422(served):
    data = (SAMPLES / "shapes_04.jpg").read_bytes()
    _error(_detect(served, data[: len(data) // 2]), 422, "undecodable_image")


def test_unknown_model_is_404_and_bad_parameters_400(served):
    data = (SAMPLES / "shapes_00.jpg").read_bytes()
    _error(_detect(served, data, params={"model": "pcb"}), 404, "unknown_model")
    _error(_detect(served, data, params={"version": "2"}), 404, "unknown_model")
    _error(_detect(served, data, params={"conf": "high"}), 400, "bad_parameter")
    _error(_detect(served, data, params={"confidence": "0.5"}), 400, "bad_parameter")
    _error(_detect(served, b""), 400, "bad_parameter")


def test_clamped_parameters_still_answer(served):
    data = (SAMPLES / "shapes_00.jpg").read_bytes()
    body = _detect(served, data, params={"max_det": "1", "conf": "0", "imgsz": "99999"}).json()
    assert len(body["detections"]) == 1
    only_circles = _detect(served, data, params={"classes": "circle"}).json()
    assert only_circles["detections"] and {d["class_name"] for d in only_circles["detections"]} == {
        "circle"
    }


def test_unknown_route_is_404_and_wrong_method_405(served):
    _error(requests.get(f"{served['url']}/v1/nothing", timeout=30), 404, "not_found")
    resp = requests.get(f"{served['url']}/v1/detect", headers=AUTH, timeout=30)
    assert "use POST" in _error(resp, 405, "method_not_allowed")
    assert resp.headers["Allow"] == "POST"
    resp = requests.delete(f"{served['url']}/v1/policy", headers=AUTH, timeout=30)
    _error(resp, 405, "method_not_allowed")
    assert resp.headers["Allow"] == "GET, HEAD, PUT"
    resp = requests.post(f"{served['url']}/healthz", timeout=30)  # probes too
    assert (resp.status_code, resp.headers["Allow"]) == (405, "GET, HEAD")


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/console", "/v1/models"])
def test_head_is_answered_wherever_get_is(served, path):
    got = requests.get(f"{served['url']}{path}", headers=AUTH, timeout=60)
    head = requests.head(f"{served['url']}{path}", headers=AUTH, timeout=60)
    assert got.status_code == head.status_code == 200
    assert head.content == b""
    assert head.headers["Content-Type"] == got.headers["Content-Type"]
    assert head.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        (png_header_only(60_000, 60_000), {}, 413, "payload_too_large"),
        (b"\xff\xd8\xff" + b"\x00" * 100, {}, 422, "undecodable_image"),
        (
            b"--x\r\nContent-Disposition: form-data; name=image\r\n\r\nabc\r\n--x--\r\n",
            {"Content-Type": "multipart/form-data; boundary=x"},
            415,
            "unsupported_media_type",
        ),
        (b"garbage", {"Content-Type": "multipart/form-data"}, 400, "bad_parameter"),
        (
            b"--x\r\n\r\n--x--",
            {"Content-Type": "multipart/form-data; boundary=x"},
            400,
            "bad_parameter",
        ),
        (b"\x00" * 100, {"Content-Type": "image/jpeg"}, 415, "unsupported_media_type"),
    ],
    ids=[
        "pixel-bomb",
        "jpeg-magic-only",
        "multipart-non-image",
        "multipart-no-boundary",
        "multipart-empty",
        "zeros",
    ],
)
def test_hostile_bodies_get_a_4xx_never_a_500(served, body, headers, status, code):
    _error(_detect(served, body, headers=headers), status, code)
    # and the service still answers real requests afterwards
    assert _detect(served, (SAMPLES / "shapes_03.png").read_bytes()).status_code == 200


def test_declared_oversized_body_is_413_before_it_is_read(served):
    resp = requests.post(
        f"{served['url']}/v1/detect",
        headers={**AUTH, "Content-Length": str(10**9)},
        data=b"",
        timeout=30,
    )
    _error(resp, 413, "payload_too_large")


def test_no_key_or_image_bytes_in_the_logs(served):
    log = served["log"].read_text(errors="replace")
    assert DEMO_KEY not in log
    assert "yk_wrong_key" not in log
    chunk = (SAMPLES / "shapes_00.jpg").read_bytes()[200:248]
    for encoded in (base64.b64encode(chunk).decode(), chunk.hex(), repr(chunk)[2:40]):
        assert encoded not in log


def test_annotate_returns_the_image_with_the_boxes_drawn(served):
    import cv2
    import numpy as np

    data = (SAMPLES / "shapes_02.jpg").read_bytes()
    plain = _detect(served, data).json()
    picture = _detect(served, data, params={"annotate": "true"})
    assert picture.status_code == 200, picture.text
    assert picture.headers["content-type"] == "image/jpeg"
    assert int(picture.headers["x-detections"]) == len(plain["detections"]) > 0
    drawn = cv2.imdecode(np.frombuffer(picture.content, np.uint8), cv2.IMREAD_COLOR)
    original = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert drawn.shape == original.shape
    # Pixels changed along each box's top edge, and far less elsewhere.
    changed = np.abs(drawn.astype(int) - original.astype(int)).sum(axis=2) > 60
    for det in plain["detections"]:
        x1, y1, x2, _ = (round(v) for v in det["bbox"])
        y = min(max(y1, 0), drawn.shape[0] - 1)
        assert changed[y, x1:x2].mean() > 0.5, det
    assert changed.mean() < 0.25
    refused = _detect(served, data, params={"annotate": "maybe"})
    assert "true or false" in _error(refused, 400, "bad_parameter")


def test_tenant_defaults_are_read_saved_and_bounded(served):
    url = f"{served['url']}/v1/policy"
    view = requests.get(url, headers=AUTH, timeout=30).json()
    low, high = view["bounds"]["conf"]
    assert 0 < low <= view["defaults"]["conf"] <= high == 1.0
    below = _error(
        requests.put(url, json={"conf": low / 2}, headers=AUTH, timeout=30), 400, "bad_parameter"
    )
    assert "lowest confidence" in below
    original = view["defaults"]["conf"]
    saved = requests.put(url, json={"conf": 0.9}, headers=AUTH, timeout=30)
    try:
        assert saved.status_code == 200 and saved.json()["defaults"]["conf"] == 0.9
        confident = _detect(served, (SAMPLES / "shapes_02.jpg").read_bytes()).json()
        assert all(d["confidence"] >= 0.9 for d in confident["detections"])
    finally:
        back = requests.put(url, json={"conf": original}, headers=AUTH, timeout=30)
        assert back.status_code == 200
    _error(requests.put(url, json={"conf": 7}, headers=AUTH, timeout=30), 400, "bad_parameter")
    message = _error(
        requests.put(url, json={"confidence": 0.5}, headers=AUTH, timeout=30), 400, "bad_parameter"
    )
    assert "confidence" in message and "conf (0-1)" in message
    _error(
        requests.put(
            url, data="conf=0.5", headers={**AUTH, "Content-Type": "text/plain"}, timeout=30
        ),
        415,
        "unsupported_media_type",
    )
    _error(requests.put(url, json={"conf": 0.5}, timeout=30), 401, "unauthenticated")
    _error(requests.delete(url, headers=AUTH, timeout=30), 405, "method_not_allowed")


def test_every_answer_carries_the_security_headers(served):
    for answer in (
        requests.get(f"{served['url']}/v1/models", headers=AUTH, timeout=30),
        requests.get(f"{served['url']}/v1/models", timeout=30),
        requests.get(f"{served['url']}/nowhere", timeout=30),
        requests.get(f"{served['url']}/console", timeout=30),
    ):
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
