"""NumPy NMS against ultralytics' own ``non_max_suppression``, which it replaces on ONNX
Runtime replicas: the same rows, to float32 precision, on the demo model's real outputs
and on random outputs built to overlap (many boxes per class, ties across classes,
degenerate boxes, class filters, caps)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ultralytics.utils.nms import non_max_suppression

from serve_app.inference.images import decode_image
from serve_app.inference.letterbox import letterbox
from serve_app.models import engine
from serve_app.models.cache import WeightsCache
from serve_app.models.nms import suppress
from serve_app.models.runner import input_tensor
from serve_app.models.store import fetch_version
from tests.conftest import SAMPLES


def reference(raw: np.ndarray, conf: float, iou: float, classes, max_det: int) -> list:
    kept = non_max_suppression(torch.from_numpy(raw.copy()), conf, iou, classes, max_det=max_det)
    return [k.numpy() for k in kept]


def assert_same(raw: np.ndarray, conf=0.25, iou=0.7, classes=None, max_det=300) -> int:
    ours = suppress(raw, conf, iou, classes, max_det)
    theirs = reference(raw, conf, iou, classes, max_det)
    assert len(ours) == len(theirs) == raw.shape[0]
    for a, b in zip(ours, theirs, strict=True):
        assert a.dtype == np.float32 and a.shape == b.shape, (a.shape, b.shape)
        np.testing.assert_array_equal(a, b)
    return sum(len(a) for a in ours)


def clustered(rng: np.random.Generator, batch: int, classes: int, anchors: int) -> np.ndarray:
    """YOLOv8-shaped output (batch, 4 + classes, anchors): boxes in a few clusters so that
    suppression has work, scores spread around the thresholds."""
    centres = rng.uniform(20, 300, size=(batch, 6, 2))
    pick = rng.integers(0, 6, size=(batch, anchors))
    xy = np.take_along_axis(centres, pick[..., None], axis=1)
    xy = xy + rng.normal(0, 4, (batch, anchors, 2))
    wh = rng.uniform(5, 60, size=(batch, anchors, 2))
    scores = rng.uniform(0, 1, size=(batch, anchors, classes)) ** 3
    out = np.concatenate((xy, wh, scores), axis=2).transpose(0, 2, 1)
    return np.ascontiguousarray(out, dtype=np.float32)


@pytest.mark.parametrize("seed", range(8))
def test_random_overlapping_outputs_keep_the_same_rows(seed):
    rng = np.random.default_rng(seed)
    raw = clustered(rng, batch=2, classes=int(rng.integers(1, 12)), anchors=2100)
    kept = assert_same(raw, conf=float(rng.uniform(0.05, 0.6)), iou=float(rng.uniform(0.3, 0.8)))
    assert kept > 0  # the case exercised suppression, not an empty result


def test_class_filter_cap_and_thresholds_match():
    raw = clustered(np.random.default_rng(42), batch=1, classes=5, anchors=2100)
    assert assert_same(raw, conf=0.05, iou=0.5, classes=[1, 3]) > 0
    assert assert_same(raw, conf=0.05, iou=0.5, max_det=7) == 7
    assert assert_same(raw, conf=0.99999) == 0  # nothing over the threshold
    assert assert_same(raw, conf=0.05, classes=[]) == 0


def test_degenerate_and_identical_boxes_match():
    raw = np.zeros((1, 6, 8), np.float32)
    raw[0, :4, :4] = [[50], [50], [0], [0]]  # zero-area boxes: no overlap, all kept
    raw[0, :4, 4:] = [[100], [100], [20], [20]]  # four identical boxes: one kept
    raw[0, 4, :] = [0.9, 0.8, 0.7, 0.6, 0.95, 0.9, 0.85, 0.5]
    raw[0, 5, 4:] = [0.1, 0.92, 0.1, 0.1]  # one of the copies is class 1: kept beside it
    assert assert_same(raw) == 6


def test_end_to_end_heads_are_only_filtered():
    rng = np.random.default_rng(3)
    raw = np.concatenate(
        (rng.uniform(0, 300, (2, 300, 4)), rng.uniform(0, 1, (2, 300, 1)),
         rng.integers(0, 4, (2, 300, 1))), axis=2,
    ).astype(np.float32)  # fmt: skip
    assert assert_same(raw, conf=0.3, classes=[0, 2], max_det=50) > 0


def test_the_demo_models_own_outputs_match(tmp_path):
    """The raw output of the graph a CPU replica serves, on every sample."""
    demo = fetch_version("file://models/demo/shapes/1")
    runner, _, _ = engine.build(demo.manifest, demo.weights, "cpu", WeightsCache(tmp_path), 1)
    session, name = runner.session, runner.input_name
    total = 0
    for path in sorted(SAMPLES.glob("shapes_*.jpg")):
        frame = letterbox(decode_image(path.read_bytes()), 320, 320)[0]
        raw = session.run(None, {name: input_tensor([frame])})[0]
        total += assert_same(raw, conf=0.25, iou=0.7)
    assert total >= 12  # every sample has objects
