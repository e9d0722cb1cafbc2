"""mAP at IoU 0.5 of a model's answers against a tenant's labelled samples.

A tenant may send labelled images with an upload (``samples``); validation runs the
candidate on them and records ``map50``, and a rollout can require the candidate not to
be worse than the version it would replace on the same samples. Average precision per
class is the area under the all-point interpolated precision/recall curve (as Pascal
VOC since 2010 and the COCO tools at one IoU), averaged over the classes the labels hold.

Pure: unit-tested with hand-made boxes.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence

from pydantic import Field, ValidationError

from serve_app.constants import MAX_CLASS_NAME_CHARS, ROLLOUT_MATCH_IOU, UPLOAD_MAX_SAMPLES
from serve_app.errors import BadParameter
from serve_app.models.agreement import Box, iou
from serve_app.wire import StrictModel

Scored = tuple[str, float, Sequence[float]]  # class name, confidence, bbox


class LabelledBox(StrictModel):
    class_name: str = Field(min_length=1, max_length=MAX_CLASS_NAME_CHARS)
    bbox: list[float] = Field(min_length=4, max_length=4, description="x1, y1, x2, y2 px")


class Sample(StrictModel):
    image: str = Field(description="The image's bytes, base64.")
    boxes: list[LabelledBox] = Field(max_length=10_000)


class Samples(StrictModel):
    """The ``samples`` part of an upload."""

    samples: list[Sample] = Field(min_length=1, max_length=UPLOAD_MAX_SAMPLES)


SAMPLES_HELP = (
    '{"samples": [{"image": "<base64 image>", "boxes": [{"class_name": "cat", '
    f'"bbox": [x1, y1, x2, y2]}}]}}] (at most {UPLOAD_MAX_SAMPLES} images)'
)


def parse_samples(raw: bytes) -> list[tuple[bytes, list[Box]]]:
    """Images and their labelled boxes.

    Raises:
        BadParameter: Not that JSON shape, or an image that is not base64.
    """
    try:
        parsed = Samples.model_validate(json.loads(raw))
        return [
            (
                base64.b64decode(s.image, validate=True),
                [(b.class_name, tuple(b.bbox)) for b in s.boxes],
            )
            for s in parsed.samples
        ]
    except (ValueError, ValidationError, binascii.Error) as exc:
        first = str(exc).splitlines()[0][:160]
        raise BadParameter(f"'samples' must be {SAMPLES_HELP}: {first}") from None


def average_precision(scored: list[tuple[float, bool]], positives: int) -> float:
    """All-point interpolated AP of detections ``(confidence, is_true_positive)``."""
    if positives == 0:
        return 0.0
    ranked = sorted(scored, key=lambda s: -s[0])
    points: list[tuple[float, float]] = []  # (recall, precision)
    hits = 0
    for rank, (_, hit) in enumerate(ranked, start=1):
        hits += hit
        points.append((hits / positives, hits / rank))
    area, last_recall = 0.0, 0.0
    for index, (recall, _) in enumerate(points):
        best = max(p for _, p in points[index:])  # the precision envelope
        area += (recall - last_recall) * best
        last_recall = recall
    return area


def map50(predictions: Sequence[Sequence[Scored]], labels: Sequence[Sequence[Box]]) -> float:
    """Mean AP at IoU ``ROLLOUT_MATCH_IOU`` over the classes in ``labels`` (per image
    lists, in the same order)."""
    classes = sorted({name for boxes in labels for name, _ in boxes})
    if not classes:
        return 0.0
    aps = []
    for name in classes:
        scored: list[tuple[float, bool]] = []
        positives = 0
        for predicted, truth in zip(predictions, labels, strict=True):
            wanted = [b for n, b in truth if n == name]
            positives += len(wanted)
            taken: set[int] = set()
            for _, confidence, bbox in sorted(
                (p for p in predicted if p[0] == name), key=lambda p: -p[1]
            ):
                overlaps = [(iou(bbox, w), i) for i, w in enumerate(wanted) if i not in taken]
                best = max(overlaps, default=(0.0, -1))
                hit = best[0] >= ROLLOUT_MATCH_IOU
                if hit:
                    taken.add(best[1])
                scored.append((confidence, hit))
        aps.append(average_precision(scored, positives))
    return sum(aps) / len(aps)
