"""Derive a detector of fewer classes from the demo shapes model, without training.

YOLOv8's detection head scores every class with its own output channel of the last
convolution of each ``cv3`` branch; boxes come from ``cv2``, shared by all classes.
Keeping only some classes' channels is therefore a smaller, exact detector: each kept
class scores exactly as it does in the full model. ``make run``'s second shared-pool
tenant serves the result (``models/demo/triangles/1``: triangles only), so the demo shows
two tenants getting their own model's answers.

    python scripts/derive_demo_model.py                       # the committed triangles model
    python scripts/derive_demo_model.py --keep circle square --out /tmp/round
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from safetensors.torch import load, save

from serve_app import constants
from serve_app.models.manifest import ModelManifest, build_manifest

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "models" / "demo" / "shapes" / "1"
# The class-score convolutions of the head (layer 22 of yolov8n.yaml), one per stride.
CLASS_SCORE_PREFIXES = tuple(f"model.22.cv3.{branch}.2." for branch in range(3))


def derive(source: Path, keep: list[str]) -> tuple[bytes, ModelManifest]:
    """The weights and manifest of ``source``'s model reduced to the classes ``keep``."""
    manifest = ModelManifest.model_validate_json((source / constants.MANIFEST_FILE).read_text())
    unknown = [name for name in keep if name not in manifest.class_names]
    if unknown or not keep:
        raise SystemExit(f"--keep must name classes of {manifest.class_names}, got {keep}")
    rows = [manifest.class_names.index(name) for name in keep]
    state = load((source / constants.SAFETENSORS_FILE).read_bytes())
    for key, tensor in state.items():
        if key.startswith(CLASS_SCORE_PREFIXES):
            state[key] = tensor[rows].contiguous()
    weights = save(state)
    derived = build_manifest(
        architecture=manifest.architecture,
        class_names=list(keep),
        imgsz=manifest.imgsz,
        weights=weights,
    )
    return weights, derived


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=SOURCE)
    parser.add_argument("--keep", nargs="+", default=["triangle"], help="class names to keep")
    parser.add_argument("--out", type=Path, default=ROOT / "models" / "demo" / "triangles" / "1")
    args = parser.parse_args()
    weights, manifest = derive(args.source, args.keep)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / constants.SAFETENSORS_FILE).write_bytes(weights)
    (args.out / constants.MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2) + "\n")
    print(json.dumps({"out": str(args.out), "classes": args.keep, "sha256": manifest.sha256}))


if __name__ == "__main__":
    main()
