"""The detection result, identical over HTTP and Python handles.

``encode_detections`` turns raw arrays (boxes, scores, class ids) into the
structured result; it imports neither torch nor ultralytics, so it is unit-tested
on plain numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import Field

from serve_app.constants import BBOX_DECIMALS, CONFIDENCE_DECIMALS
from serve_app.wire import StrictModel


class Detection(StrictModel):
    class_id: int = Field(ge=0)
    class_name: str
    confidence: float = Field(ge=0, le=1)
    bbox: tuple[float, float, float, float] = Field(
        description="[x1, y1, x2, y2] in pixels of the original image"
    )


class ImageSize(StrictModel):
    width: int
    height: int


class DetectionResult(StrictModel):
    """Body of a successful ``POST /v1/detect``."""

    model: str = Field(description="The model that answered, <model>@<version>.")
    image: ImageSize
    detections: list[Detection]
    timing_ms: dict[str, float]


@dataclass(frozen=True)
class Annotated:
    """A result and the image with its boxes drawn (JPEG), for ``annotate=true``."""

    result: DetectionResult
    jpeg: bytes


def encode_detections(
    boxes_xyxy: Sequence[Sequence[float]],
    scores: Sequence[float],
    class_ids: Sequence[int],
    class_names: Sequence[str],
    width: int,
    height: int,
) -> list[Detection]:
    """Structured detections, boxes clipped to the image, highest confidence first."""
    out = []
    for box, score, cls in zip(boxes_xyxy, scores, class_ids, strict=True):
        x1, y1, x2, y2 = (float(v) for v in box)
        clipped = (
            round(min(max(x1, 0.0), width), BBOX_DECIMALS),
            round(min(max(y1, 0.0), height), BBOX_DECIMALS),
            round(min(max(x2, 0.0), width), BBOX_DECIMALS),
            round(min(max(y2, 0.0), height), BBOX_DECIMALS),
        )
        cid = int(cls)
        out.append(
            Detection(
                class_id=cid,
                class_name=class_names[cid],
                confidence=round(float(score), CONFIDENCE_DECIMALS),
                bbox=clipped,
            )
        )
    out.sort(key=lambda d: d.confidence, reverse=True)
    return out
