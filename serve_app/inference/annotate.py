"""Boxes drawn onto the image, as JPEG (``POST /v1/detect?annotate=true``).

OpenCV only: ultralytics' own ``plot()`` wants a font it would download. Labels are
printable ASCII (OpenCV's Hershey fonts have nothing else), so a class name is drawn
as its ASCII transliteration with ``?`` for anything else: never interpreted.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from serve_app.constants import ANNOTATE_JPEG_QUALITY, ANNOTATE_MAX_LABEL_CHARS
from serve_app.errors import BadParameter
from serve_app.inference.results import Detection

PALETTE: tuple[tuple[int, int, int], ...] = (
    (56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207),
    (10, 249, 72), (23, 204, 146), (134, 219, 61), (211, 188, 0), (209, 85, 0),
)  # fmt: skip
TRUE_VALUES = frozenset({"true", "1", "yes"})
FALSE_VALUES = frozenset({"false", "0", "no"})


def wants_annotation(raw: str | None) -> bool:
    """The ``annotate`` query parameter: absent or false -> JSON, true -> JPEG."""
    if raw is None:
        return False
    value = raw.strip().lower()
    if value in TRUE_VALUES:
        return True
    if value in FALSE_VALUES:
        return False
    raise BadParameter("query parameter 'annotate' must be true or false")


def ascii_label(text: str) -> str:
    """Printable ASCII only, capped: what OpenCV can draw, and nothing to interpret."""
    safe = "".join(c if " " <= c <= "~" else "?" for c in text)
    return (
        safe
        if len(safe) <= ANNOTATE_MAX_LABEL_CHARS
        else safe[: ANNOTATE_MAX_LABEL_CHARS - 3] + "..."
    )


def draw_detections(image: np.ndarray, detections: Sequence[Detection]) -> bytes:
    """A JPEG of ``image`` (RGB) with each detection's box and label drawn on a copy."""
    canvas = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)  # OpenCV draws and encodes BGR
    height, width = canvas.shape[:2]
    thickness = max(1, round(max(height, width) / 400))
    scale = max(0.4, max(height, width) / 1200)
    for det in detections:
        color = PALETTE[det.class_id % len(PALETTE)]
        x1, y1, x2, y2 = (round(v) for v in det.bbox)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), color, thickness, cv2.LINE_AA)
        label = ascii_label(f"{det.class_name} {det.confidence:.2f}")
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        top = y1 - th - base - 2 if y1 - th - base - 2 >= 0 else y1
        cv2.rectangle(canvas, (x1, top), (x1 + tw + 2, top + th + base + 2), color, cv2.FILLED)
        cv2.putText(
            canvas,
            label,
            (x1 + 1, top + th + 1),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale,
            (255, 255, 255),
            1,
            cv2.LINE_AA,
        )
    ok, encoded = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, ANNOTATE_JPEG_QUALITY])
    if not ok:  # pragma: no cover - OpenCV encodes any 3-channel uint8 array
        raise RuntimeError("JPEG encoding failed")
    return bytes(encoded.tobytes())
