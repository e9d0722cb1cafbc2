"""Write the sample images and their ground truth into ``samples/``.

Twelve deterministic images from the same generator the demo model was trained
on (but seeds it never saw), half JPEG and half PNG, plus
``samples/ground_truth.json``: file name -> list of ``{class_name, bbox}``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
from shapes import render_image

SAMPLE_SEED_BASE = 3_000_000
JPEG_QUALITY = 95


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("samples"))
    parser.add_argument("--count", type=int, default=12)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    truth: dict[str, list[dict[str, object]]] = {}
    for i in range(args.count):
        img, shapes = render_image(SAMPLE_SEED_BASE + i, min_shapes=2, max_shapes=6)
        name = f"shapes_{i:02d}.{'jpg' if i % 2 == 0 else 'png'}"
        params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if name.endswith(".jpg") else []
        cv2.imwrite(str(args.out / name), img, params)
        truth[name] = [{"class_name": s.class_name, "bbox": list(s.bbox)} for s in shapes]
    (args.out / "ground_truth.json").write_text(json.dumps(truth, indent=1) + "\n")
    total = sum(len(v) for v in truth.values())
    print(f"wrote {args.count} images with {total} shapes to {args.out}")


if __name__ == "__main__":
    main()
