"""Non-maximum suppression in NumPy, the same boxes as ultralytics' ``non_max_suppression``.

A CPU replica ran ultralytics' function on the ONNX Runtime output: a torch round trip
and, without torchvision imported, its Python-loop ``TorchNMS`` — ~7 % of a detector's CPU
at 320 (py-spy, docs/throughput.md). This is the same algorithm on the same float32
values, for the settings the platform uses (class-aware, best class per box, no extra
channels): candidates over the confidence threshold, ``xywh`` to ``xyxy``, the class
filter, at most ``MAX_NMS`` candidates by confidence, boxes offset by ``class * MAX_WH``
so classes never suppress each other, greedy suppression of IoU above the threshold, at
most ``max_det`` kept. End-to-end heads (``(batch, k, 6)``, already suppressed) are only
filtered. ``tests/unit/test_nms.py`` compares it with ultralytics' on real and random
outputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MAX_WH_PX = 7680  # ultralytics' per-class coordinate offset
MAX_NMS = 30000  # candidates kept for suppression, by confidence (ultralytics' cap)


def suppress(
    raw: np.ndarray,
    conf: float,
    iou: float,
    classes: Sequence[int] | None,
    max_det: int,
) -> list[np.ndarray]:
    """Per image of ``raw`` — ``(batch, 4 + classes, anchors)`` of ``xywh`` and class
    scores, or an end-to-end ``(batch, k, 6)`` — the kept ``(n, 6)`` float32 rows of
    ``x1, y1, x2, y2, confidence, class``, by descending confidence."""
    wanted = None if classes is None else np.asarray(classes, dtype=np.float32)
    if raw.shape[-1] == 6:  # end-to-end head: already suppressed
        out = []
        for pred in raw:
            keep = pred[:, 4] > conf
            if wanted is not None:
                keep &= np.isin(pred[:, 5], wanted)
            out.append(pred[keep][:max_det].astype(np.float32))
        return out
    return [_one(pred, conf, iou, wanted, max_det) for pred in raw]


def _one(
    pred: np.ndarray, conf: float, iou: float, wanted: np.ndarray | None, max_det: int
) -> np.ndarray:
    scores = pred[4:]
    best = scores.max(axis=0)
    candidates = np.flatnonzero(best > conf)
    if candidates.size == 0:
        return np.zeros((0, 6), np.float32)
    cls = scores[:, candidates].argmax(axis=0).astype(np.float32)
    score = best[candidates]
    xy = pred[:2, candidates].T
    half = pred[2:4, candidates].T / np.float32(2)
    boxes = np.concatenate((xy - half, xy + half), axis=1)
    if wanted is not None:
        keep = np.isin(cls, wanted)
        boxes, score, cls = boxes[keep], score[keep], cls[keep]
    if score.size > MAX_NMS:
        top = np.argsort(-score, kind="stable")[:MAX_NMS]
        boxes, score, cls = boxes[top], score[top], cls[top]
    kept = _greedy(boxes + (cls * np.float32(MAX_WH_PX))[:, None], score, iou)[:max_det]
    return np.concatenate((boxes[kept], score[kept, None], cls[kept, None]), axis=1)


def _greedy(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Indices kept by greedy NMS, highest score first: a box goes when its IoU with a
    kept, higher-scoring box is above ``iou`` (torchvision's rule)."""
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1) * (y2 - y1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        h = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = w * h
        if not inter.any():  # no overlap (ultralytics' early exit: also for empty boxes)
            order = rest
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            order = rest[inter / (areas[i] + areas[rest] - inter) <= iou]
    return np.asarray(keep, dtype=np.intp)
