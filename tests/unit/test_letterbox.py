"""The replica's own letterbox, checked against ultralytics' ``LetterBox``."""

from __future__ import annotations

import numpy as np
import pytest
from ultralytics.data.augment import LetterBox

from serve_app.inference.letterbox import letterbox

SHAPES = [(392, 635), (633, 461), (279, 569), (1, 3000), (3000, 1), (320, 320), (17, 23)]


@pytest.mark.parametrize("imgsz", [320, 640])
@pytest.mark.parametrize(("height", "width"), SHAPES)
def test_matches_ultralytics_pixel_for_pixel(height, width, imgsz):
    rng = np.random.default_rng(height * 7919 + width)
    image = rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8)
    ours, _ = letterbox(image, imgsz)
    theirs = LetterBox(imgsz, auto=True, stride=32)(image=image)
    assert ours.shape == theirs.shape
    assert ours.shape[0] % 32 == 0 and ours.shape[1] % 32 == 0
    assert np.array_equal(ours, theirs)
    # Ultralytics finds nothing left to do with what we hand it.
    assert np.array_equal(LetterBox(imgsz, auto=True, stride=32)(image=ours), ours)


@pytest.mark.parametrize(("height", "width"), SHAPES)
def test_boxes_map_back_onto_the_original(height, width):
    image = np.zeros((height, width, 3), dtype=np.uint8)
    _, frame = letterbox(image, 320)
    original = [0.25 * width, 0.1 * height, 0.75 * width, 0.9 * height]
    boxed = [
        original[0] * frame.scale_x + frame.left,
        original[1] * frame.scale_y + frame.top,
        original[2] * frame.scale_x + frame.left,
        original[3] * frame.scale_y + frame.top,
    ]
    assert frame.unscale([boxed])[0] == pytest.approx(original, abs=1e-6)


def test_boxes_in_the_padding_are_clipped_to_the_image():
    _, frame = letterbox(np.zeros((100, 300, 3), dtype=np.uint8), 320)
    assert frame.top > 0  # a wide image is padded above and below
    assert frame.unscale([[-5.0, 0.0, 400.0, 320.0]])[0] == [0.0, 0.0, 300.0, 100.0]
