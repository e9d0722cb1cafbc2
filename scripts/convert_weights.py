"""Convert an ultralytics ``.pt`` into what the platform accepts: safetensors + manifest.

Run this **on your own machine**, on a file you trust: a ``.pt`` is a pickle and
loading it runs code. The platform never loads ``.pt`` files from tenants.

    python scripts/convert_weights.py best.pt out/ [--arch yolov8n] [--imgsz 640]
    tenantctl model push TENANT NAME out/

The script rebuilds the network from the architecture's YAML and the exported
tensors alone (as the platform will) and refuses to write anything unless it
finds the same boxes as the original on the check images (``--check-image``,
repeatable; synthetic images otherwise) to within 1 px.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from serve_app import constants
from tenant_registry.convert import BOX_TOLERANCE_PX, convert_pt, max_box_difference


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pt", type=Path, help="ultralytics checkpoint you trust")
    parser.add_argument("out", type=Path, help="folder to write model.safetensors + manifest.json")
    parser.add_argument("--arch", help="architecture, e.g. yolov8n (read from the file if omitted)")
    parser.add_argument(
        "--imgsz", type=int, help="default inference size (from the file if omitted)"
    )
    parser.add_argument("--check-image", type=Path, action="append", default=[])
    args = parser.parse_args()

    import cv2

    manifest, weights, original = convert_pt(args.pt, args.arch, args.imgsz)
    if args.check_image:
        loaded = [cv2.imread(str(p)) for p in args.check_image]
        images = [i for i in loaded if i is not None]
        if len(images) != len(loaded):
            parser.error("a --check-image could not be read")
    else:
        rng = np.random.default_rng(0)
        images = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(2)]
    diff = max_box_difference(original, manifest, weights, images)
    if diff > BOX_TOLERANCE_PX:
        print(f"refusing to write: the rebuilt model's boxes differ by {diff} px", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / constants.SAFETENSORS_FILE).write_bytes(weights)
    (args.out / constants.MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2) + "\n")
    print(
        f"wrote {args.out}: {manifest.architecture}, {len(manifest.class_names)} classes, "
        f"imgsz {manifest.imgsz}, sha256 {manifest.sha256[:12]}… (boxes within {diff:.3f} px)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
