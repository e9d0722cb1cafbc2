"""Resize and pad an image once, beside decoding, exactly as ultralytics would alone.

Ultralytics letterboxes inside ``predict()``: a lone image (or a list of one shape) is
padded to the smallest stride-aligned rectangle, but a list of different shapes is padded
to the full square, so the same image gets slightly different boxes alone and in a mixed
batch (up to 1.3 px and 0.02 confidence on the sample images). Letterboxing here, in the
replica's decode thread and off the inference lock, and batching only frames of one padded
shape makes every request's result the one it would have had alone: ultralytics then finds
nothing left to resize or pad.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from serve_app.constants import IMGSZ_STRIDE_PX

PAD_VALUE = 114  # ultralytics' letterbox grey


@dataclass(frozen=True)
class Frame:
    """How a letterboxed image maps back onto the original."""

    width: int  # the original's
    height: int
    scale_x: float  # letterboxed px per original px, per axis (each side is rounded)
    scale_y: float
    left: int  # padding before the image, letterboxed px
    top: int

    def unscale(self, boxes_xyxy: Sequence[Sequence[float]]) -> list[list[float]]:
        """Boxes in letterboxed pixels -> boxes in the original's pixels, clipped."""
        out = []
        for x1, y1, x2, y2 in boxes_xyxy:
            out.append(
                [
                    min(max((x1 - self.left) / self.scale_x, 0.0), self.width),
                    min(max((y1 - self.top) / self.scale_y, 0.0), self.height),
                    min(max((x2 - self.left) / self.scale_x, 0.0), self.width),
                    min(max((y2 - self.top) / self.scale_y, 0.0), self.height),
                ]
            )
        return out


def letterbox(
    image: np.ndarray, imgsz: int, stride: int = IMGSZ_STRIDE_PX
) -> tuple[np.ndarray, Frame]:
    """Scale the long side to ``imgsz`` and pad each side to a multiple of ``stride``
    (ultralytics' ``LetterBox(imgsz, auto=True)``): the smallest input the model takes."""
    height, width = image.shape[:2]
    ratio = min(imgsz / height, imgsz / width)
    new_w, new_h = max(round(width * ratio), 1), max(round(height * ratio), 1)
    if (new_w, new_h) != (width, height):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    dw, dh = ((imgsz - new_w) % stride) / 2, ((imgsz - new_h) % stride) / 2
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    if top or bottom or left or right:
        image = cv2.copyMakeBorder(
            image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3
        )
    frame = Frame(
        width=width,
        height=height,
        scale_x=new_w / width,
        scale_y=new_h / height,
        left=left,
        top=top,
    )
    return np.ascontiguousarray(image), frame
