"""The detector's per-model wrapper, driven directly (no Ray cluster)."""

from __future__ import annotations

import cv2
import pytest

from serve_app.errors import BadParameter
from serve_app.inference.loaded_model import group_batch, load_model, prepare
from serve_app.inference.policy import InferenceParams
from serve_app.inference.results import DetectionResult
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


def _sample_uploads() -> list[bytes]:
    return [p.read_bytes() for p in sorted(SAMPLES.glob("shapes_*"))]


def test_a_mixed_batch_gives_each_image_the_result_it_gets_alone(model):
    # Twelve samples of eleven different shapes: ultralytics alone would pad a mixed list
    # to the square and shift boxes by up to 1.3 px; grouping by letterboxed shape does not.
    uploads = _sample_uploads()
    params = [PARAMS] * len(uploads)
    prepared = [prepare(data, model.imgsz(PARAMS)) for data in uploads]
    groups = group_batch(params, prepared)
    assert sorted(i for g in groups for i in g) == list(range(len(uploads)))
    assert any(len(g) > 1 for g in groups)  # some share a predict call
    batched: dict[int, DetectionResult] = {}
    for g in groups:
        for i, result in zip(g, model.detect([prepared[i] for i in g], PARAMS), strict=True):
            batched[i] = result
    for i, data in enumerate(uploads):
        alone = model.detect([prepare(data, model.imgsz(PARAMS))], PARAMS)[0]
        assert batched[i].image == alone.image
        assert [d.class_name for d in batched[i].detections] == [
            d.class_name for d in alone.detections
        ]
        for got, want in zip(batched[i].detections, alone.detections, strict=True):
            assert got.bbox == pytest.approx(want.bbox, abs=0.11)  # bboxes are rounded to 0.1
            assert got.confidence == pytest.approx(want.confidence, abs=2e-4)


def test_results_agree_with_ultralytics_on_the_original_image(model):
    # The oracle: ultralytics' own predict on the undecoded-by-us original file.
    for path in sorted(SAMPLES.glob("shapes_*"))[:4]:
        ours = model.detect([prepare(path.read_bytes(), 320)], PARAMS)[0]
        theirs = model.yolo.predict(str(path), imgsz=320, conf=0.25, verbose=False)[0]
        pairs = zip(theirs.boxes.conf.tolist(), theirs.boxes.xyxy.tolist(), strict=True)
        want = sorted(pairs, reverse=True)
        assert len(ours.detections) == len(want)
        for got, (conf, box) in zip(ours.detections, want, strict=True):
            assert got.confidence == pytest.approx(conf, abs=2e-4)
            assert got.bbox == pytest.approx(box, abs=0.11)


def test_different_parameters_never_share_a_predict_call(model):
    data = _sample_uploads()[:2]
    prepared = [prepare(d, 320) for d in data * 2]
    strict = PARAMS.__class__(**{**PARAMS.__dict__, "conf": 0.6})
    groups = group_batch([PARAMS, PARAMS, strict, strict], prepared)
    for g in groups:
        assert len({[PARAMS, PARAMS, strict, strict][i] for i in g}) == 1


def test_a_model_load_leaves_torch_at_the_replicas_threads():
    # Ultralytics' predictor setup (in the warm-up) resets torch to its own NUM_THREADS
    # (cores - 1) for the whole process; the replica's own count must win.
    import torch
    from ultralytics.utils import NUM_THREADS

    before = torch.get_num_threads()
    wanted = NUM_THREADS + 1
    try:
        load_model("demo/shapes@1", "file://models/demo/shapes/1", threads=wanted)
        assert torch.get_num_threads() == wanted
    finally:
        torch.set_num_threads(before)
