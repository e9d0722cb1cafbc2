from __future__ import annotations

from serve_app.inference.results import DetectionResult, ImageSize, encode_detections

NAMES = ["circle", "square", "triangle"]


def test_boxes_are_clipped_rounded_named_and_sorted():
    dets = encode_detections(
        boxes_xyxy=[[-5.0, 10.04, 50.0, 60.0], [10.0, 10.0, 700.0, 500.0]],
        scores=[0.51234567, 0.9],
        class_ids=[2, 0],
        class_names=NAMES,
        width=640,
        height=480,
    )
    assert [d.class_name for d in dets] == ["circle", "triangle"]
    assert dets[0].bbox == (10.0, 10.0, 640.0, 480.0)
    assert dets[1].bbox == (0.0, 10.0, 50.0, 60.0)
    assert dets[1].confidence == 0.5123 and dets[1].class_id == 2


def test_result_json_has_the_documented_shape():
    result = DetectionResult(
        model="shapes@1",
        image=ImageSize(width=10, height=20),
        detections=encode_detections([[1, 2, 3, 4]], [0.5], [1], NAMES, 10, 20),
        timing_ms={"total": 1.5},
    )
    body = result.model_dump(mode="json")
    assert body == {
        "model": "shapes@1",
        "image": {"width": 10, "height": 20},
        "detections": [
            {"class_id": 1, "class_name": "square", "confidence": 0.5, "bbox": [1.0, 2.0, 3.0, 4.0]}
        ],
        "timing_ms": {"total": 1.5},
    }
