"""The handle API's arguments (``http.handle_input``): what a batch job may pass, as
the query string and body an HTTP client would send; anything else a 400 naming it."""

from __future__ import annotations

import pytest

from serve_app.errors import BadParameter
from serve_app.http import handle_input
from serve_app.inference import policy
from serve_app.inference.policy import DetectionPolicy


def test_values_become_what_a_query_string_carries():
    got = handle_input.query(
        {
            "conf": 0.25,
            "iou": 1e-5,
            "max_det": 7,
            "classes": ["circle", 2],
            "model": "shapes",
            "version": None,
        }
    )
    assert got == {
        "conf": "0.25",
        "iou": "0.00001",
        "max_det": "7",
        "classes": "circle,2",
        "model": "shapes",
    }
    # and the query parser takes them as it takes an HTTP query
    params = policy.clamp(
        {k: v for k, v in got.items() if k in policy.DETECTION_PARAMS},
        DetectionPolicy(min_conf=0.01),
    )
    assert params.conf == 0.25 and params.max_det == 7
    assert handle_input.query(None) == {}


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        (["conf", 0.5], "params must be a dict of detection parameters, got list"),
        ({1: "x"}, "names must be short ASCII strings, got int"),
        ({"conf": float("nan")}, "'conf'] must be a finite number"),
        ({"conf": float("inf")}, "finite"),
        ({"max_det": 10**4000}, "out of range"),
        ({"conf": {"nested": 1}}, "got dict"),
        ({"classes": ["a", True]}, "got list"),
        ({"classes": ["a", None]}, "got list"),
        ({"classes": ["a"] * 1001}, "got list"),
        ({"conf": b"0.5"}, "got bytes"),
        ({f"p{i}": 1 for i in range(17)}, "over 16 entries"),
        ({"classes": "x" * 70_000}, "over 65536 characters"),
        ({"annotate": True}, "annotate is an HTTP option"),
    ],
)
def test_anything_else_is_a_400_naming_the_argument(params, needle):
    with pytest.raises(BadParameter, match=needle.replace("[", r"\[").replace("]", r"\]")):
        handle_input.query(params)


def test_a_credential_is_a_string_and_an_image_is_bytes():
    assert handle_input.credential("yk_x") == "yk_x"
    assert handle_input.image_bytes(bytearray(b"\xff\xd8")) == b"\xff\xd8"
    assert handle_input.image_bytes(memoryview(b"ab")) == b"ab"
    for bad in (None, 123, b"yk_x", ["yk_x"]):
        with pytest.raises(BadParameter, match="api_key must be a str"):
            handle_input.credential(bad)
    with pytest.raises(BadParameter, match="over 8192 characters"):
        handle_input.credential("k" * 9000)
    for bad in ("photo.jpg", None, [1, 2], 3):
        with pytest.raises(BadParameter, match="image must be the encoded file's bytes"):
            handle_input.image_bytes(bad)
