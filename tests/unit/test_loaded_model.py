"""The detector's per-model wrapper, driven directly (no Ray cluster)."""

from __future__ import annotations

import cv2
import pytest

from serve_app.detector import load_model
from serve_app.errors import BadParameter
from serve_app.policy import InferenceParams
from tests.conftest import SAMPLES

PARAMS = InferenceParams(
    conf=0.25, iou=0.7, max_det=300, imgsz=None, max_imgsz=1280, classes=None, allowed_classes=None
)


@pytest.fixture(scope="module")
def model():
    return load_model("demo/shapes@1", "file://models/demo/shapes/1")


def test_predicts_a_batch_with_one_call(model):
    images = [cv2.imread(str(SAMPLES / n)) for n in ("shapes_01.png", "shapes_02.jpg")]
    results = model.predict(images, PARAMS)
    assert len(results) == 2
    assert all(len(r.boxes) >= 4 for r in results)
    assert model.label == "shapes@1" and model.device == "cpu" and model.half is False


def test_class_filter_and_policy_errors_happen_before_inference(model):
    image = cv2.imread(str(SAMPLES / "shapes_02.jpg"))
    only = model.predict([image], PARAMS.__class__(**{**PARAMS.__dict__, "classes": ("square",)}))[
        0
    ]
    assert {int(c) for c in only.boxes.cls.tolist()} == {1}
    with pytest.raises(BadParameter):
        model.predict([image], PARAMS.__class__(**{**PARAMS.__dict__, "classes": ("hexagon",)}))


def test_unload_is_idempotent():
    loaded = load_model("demo/shapes@1", "file://models/demo/shapes/1")
    loaded.__del__()  # what Serve calls on eviction
    loaded.__del__()  # and what the garbage collector may call again
    assert loaded.yolo is None
