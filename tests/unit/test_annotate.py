"""Boxes drawn onto the image for ``annotate=true``."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from serve_app.errors import BadParameter
from serve_app.inference.annotate import PALETTE, ascii_label, draw_detections, wants_annotation
from serve_app.inference.results import Detection


def _det(class_id: int, name: str, box: tuple[float, float, float, float]) -> Detection:
    return Detection(class_id=class_id, class_name=name, confidence=0.875, bbox=box)


def test_boxes_are_drawn_in_their_class_colour_on_a_copy():
    image = np.full((900, 1200, 3), 255, dtype=np.uint8)
    jpeg = draw_detections(image, [_det(0, "circle", (150, 300, 600, 750))])
    assert jpeg[:3] == b"\xff\xd8\xff"
    out = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert out.shape == image.shape
    assert (image == 255).all()  # the caller's array is untouched
    colour = np.array(PALETTE[0])
    edge = out[525, 146:155].astype(int)  # the left edge of the box, mid-height
    assert np.abs(edge - colour).sum(axis=1).min() < 60  # JPEG is lossy, not that lossy
    assert (out[525, 375].astype(int) > 240).all()  # inside the box: still white
    label = out[280:296, 160:200].astype(int)  # the label's background above the box
    assert np.abs(label - colour).sum(axis=2).min() < 60


def test_no_detections_gives_back_the_image():
    ramp = np.linspace(0, 255, 80, dtype=np.uint8)
    image = np.dstack([np.tile(ramp, (64, 1))] * 3)
    out = cv2.imdecode(np.frombuffer(draw_detections(image, []), np.uint8), cv2.IMREAD_COLOR)
    assert out.shape == image.shape
    assert np.abs(out.astype(int) - image.astype(int)).mean() < 3


def test_labels_are_printable_ascii_and_capped():
    assert ascii_label("<img src=x onerror=alert(1)>") == "<img src=x onerror=alert(1)>"
    assert ascii_label("défaut\n\x00") == "d?faut??"
    assert len(ascii_label("x" * 200)) == 40


@pytest.mark.parametrize(("raw", "want"), [(None, False), ("true", True), ("1", True),
                                            ("False", False), ("0", False)])  # fmt: skip
def test_annotate_parameter(raw, want):
    assert wants_annotation(raw) is want


def test_annotate_parameter_refuses_anything_else():
    with pytest.raises(BadParameter, match="true or false"):
        wants_annotation("please")
