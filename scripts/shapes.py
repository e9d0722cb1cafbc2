"""Deterministic synthetic images of solid circles, squares and triangles.

Shared by ``train_demo_model.py`` (the training and held-out splits) and
``make_samples.py`` (the sample images and their ground truth). Every image is a
pure function of its seed, so the data set can be regenerated bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

CLASS_NAMES: tuple[str, ...] = ("circle", "square", "triangle")
MIN_SHAPE_PX = 20
MAX_SHAPE_PX = 150
MIN_IMAGE_PX = 256
MAX_IMAGE_PX = 640
# A shape's colour must differ this much (Euclidean RGB distance) from the
# background under it, or no detector could see it and the label would be a lie.
MIN_CONTRAST = 90.0
MAX_PLACEMENT_TRIES = 60


@dataclass(frozen=True)
class Shape:
    """One drawn shape: its class and its axis-aligned box in pixels."""

    class_id: int
    bbox: tuple[float, float, float, float]  # x1, y1, x2, y2

    @property
    def class_name(self) -> str:
        return CLASS_NAMES[self.class_id]


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    kind = rng.integers(0, 3)
    base = rng.integers(0, 256, size=3).astype(np.float32)
    if kind == 0:  # plain
        img = np.broadcast_to(base, (height, width, 3)).astype(np.float32)
    elif kind == 1:  # noisy
        sigma = rng.uniform(8, 35)
        img = base + rng.normal(0, sigma, size=(height, width, 3)).astype(np.float32)
    else:  # linear gradient in a random direction
        other = rng.integers(0, 256, size=3).astype(np.float32)
        angle = rng.uniform(0, 2 * math.pi)
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        proj = xs * math.cos(angle) + ys * math.sin(angle)
        t = (proj - proj.min()) / max(float(np.ptp(proj)), 1.0)
        img = base * (1 - t[..., None]) + other * t[..., None]
    return np.ascontiguousarray(np.clip(img, 0, 255).astype(np.uint8))


def _polygon(class_id: int, cx: float, cy: float, size: float, angle: float) -> np.ndarray:
    """Corners of a square or equilateral triangle whose bounding circle fits ``size``."""
    radius = size / 2
    if class_id == 1:  # square: corners at 45 deg steps of a circle of radius r
        offsets = [math.pi / 4 + k * math.pi / 2 for k in range(4)]
    else:  # triangle
        offsets = [-math.pi / 2 + k * 2 * math.pi / 3 for k in range(3)]
    pts = [(cx + radius * math.cos(o + angle), cy + radius * math.sin(o + angle)) for o in offsets]
    return np.array(pts, dtype=np.float64)


def _overlaps(box: tuple[float, float, float, float], others: list[Shape], gap: float) -> bool:
    x1, y1, x2, y2 = box
    for other in others:
        ox1, oy1, ox2, oy2 = other.bbox
        if x1 < ox2 + gap and ox1 < x2 + gap and y1 < oy2 + gap and oy1 < y2 + gap:
            return True
    return False


def _contrasting_colour(rng: np.random.Generator, under: np.ndarray) -> tuple[int, int, int] | None:
    mean = under.reshape(-1, 3).mean(axis=0)
    for _ in range(20):
        colour = rng.integers(0, 256, size=3)
        if float(np.linalg.norm(colour - mean)) >= MIN_CONTRAST:
            return int(colour[0]), int(colour[1]), int(colour[2])
    return None


def render_image(
    seed: int, min_shapes: int = 1, max_shapes: int = 6
) -> tuple[np.ndarray, list[Shape]]:
    """Draw one BGR image and return it with the shapes on it.

    Args:
        seed: Determines everything about the image.
        min_shapes: Fewest shapes to try to place.
        max_shapes: Most shapes to try to place.
    """
    rng = np.random.default_rng(seed)
    width = int(rng.integers(MIN_IMAGE_PX, MAX_IMAGE_PX + 1))
    height = int(rng.integers(MIN_IMAGE_PX, MAX_IMAGE_PX + 1))
    img = _background(rng, height, width)
    wanted = int(rng.integers(min_shapes, max_shapes + 1))
    shapes: list[Shape] = []
    for _ in range(MAX_PLACEMENT_TRIES):
        if len(shapes) >= wanted:
            break
        class_id = int(rng.integers(0, len(CLASS_NAMES)))
        size = float(rng.uniform(MIN_SHAPE_PX, min(MAX_SHAPE_PX, 0.6 * min(width, height))))
        cx = float(rng.uniform(size / 2 + 2, width - size / 2 - 2))
        cy = float(rng.uniform(size / 2 + 2, height - size / 2 - 2))
        rotated = bool(rng.integers(0, 2))
        angle = float(rng.uniform(0, 2 * math.pi)) if rotated else 0.0
        if class_id == 0:
            pts = None
            box = (cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2)
        else:
            pts = _polygon(class_id, cx, cy, size, angle)
            box = (
                float(pts[:, 0].min()),
                float(pts[:, 1].min()),
                float(pts[:, 0].max()),
                float(pts[:, 1].max()),
            )
        if _overlaps(box, shapes, gap=4.0):
            continue
        ix1, iy1 = max(int(box[0]), 0), max(int(box[1]), 0)
        ix2, iy2 = min(math.ceil(box[2]), width), min(math.ceil(box[3]), height)
        colour = _contrasting_colour(rng, img[iy1:iy2, ix1:ix2])
        if colour is None:
            continue
        if pts is None:
            # Sub-pixel centre and radius (shift=4) so the drawn disc matches its box.
            cv2.circle(
                img,
                (round(cx * 16), round(cy * 16)),
                round(size / 2 * 16),
                colour,
                -1,
                cv2.LINE_AA,
                shift=4,
            )
        else:
            cv2.fillPoly(img, [np.round(pts * 16).astype(np.int32)], colour, cv2.LINE_AA, shift=4)
        shapes.append(Shape(class_id=class_id, bbox=tuple(round(v, 1) for v in box)))  # type: ignore[arg-type]
    return img, shapes


def yolo_label_lines(shapes: list[Shape], width: int, height: int) -> list[str]:
    """YOLO txt label lines: ``class cx cy w h``, normalised to the image."""
    lines = []
    for shape in shapes:
        x1, y1, x2, y2 = shape.bbox
        cx, cy = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height
        w, h = (x2 - x1) / width, (y2 - y1) / height
        lines.append(f"{shape.class_id} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}")
    return lines
