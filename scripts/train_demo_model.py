"""Train the demo shapes detector from scratch on CPU and export it for serving.

Generates a deterministic synthetic data set of solid circles, squares and
triangles (see ``shapes.py``), trains a YOLOv8n on it, measures mAP50 on a
held-out split, and writes ``model.safetensors`` + ``manifest.json`` (no pickle)
into ``models/demo/shapes/1/``. Nothing is downloaded.

    python scripts/train_demo_model.py            # the committed model (~25 min on 2 cores)
    python scripts/train_demo_model.py --epochs 1 --train 32 --val 16 --out /tmp/m
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2
import torch
from safetensors.torch import save
from shapes import CLASS_NAMES, render_image, yolo_label_lines

from serve_app import constants
from serve_app.models.loader import build_yolo
from serve_app.models.manifest import build_manifest

TRAIN_SEED_BASE = 1_000_000
VAL_SEED_BASE = 2_000_000
ARCHITECTURE = "yolov8n"


def write_split(root: Path, split: str, count: int, seed_base: int) -> int:
    """Write ``count`` images and YOLO labels for one split; returns the shape count."""
    images, labels = root / "images" / split, root / "labels" / split
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    n_shapes = 0
    for i in range(count):
        img, shapes = render_image(seed_base + i)
        h, w = img.shape[:2]
        cv2.imwrite(str(images / f"{i:05d}.png"), img)
        (labels / f"{i:05d}.txt").write_text("\n".join(yolo_label_lines(shapes, w, h)) + "\n")
        n_shapes += len(shapes)
    return n_shapes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("models/demo/shapes/1"))
    parser.add_argument("--workdir", type=Path, default=Path("var/train"))
    parser.add_argument("--train", type=int, default=480, help="training images")
    parser.add_argument("--val", type=int, default=160, help="held-out images")
    parser.add_argument("--epochs", type=int, default=35)
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--device", default="cpu", help="'cpu' (default) or a CUDA index")
    args = parser.parse_args()

    # Ultralytics pins CPU training to cpu_count-1 threads; on 2 cores that halves speed.
    from ultralytics import YOLO
    from ultralytics.utils import torch_utils

    torch_utils.NUM_THREADS = os.cpu_count() or 1  # type: ignore[attr-defined]

    data_root = (args.workdir / "data").resolve()
    if data_root.exists():
        shutil.rmtree(data_root)
    n_train = write_split(data_root, "train", args.train, TRAIN_SEED_BASE)
    n_val = write_split(data_root, "val", args.val, VAL_SEED_BASE)
    print(f"data: {args.train} train images ({n_train} shapes), {args.val} val ({n_val} shapes)")
    data_yaml = data_root / "data.yaml"
    data_yaml.write_text(
        json.dumps(
            {
                "path": str(data_root),
                "train": "images/train",
                "val": "images/val",
                "names": dict(enumerate(CLASS_NAMES)),
            }
        )
    )

    model = YOLO(f"{ARCHITECTURE}.yaml", task="detect")
    model.train(
        data=str(data_yaml),
        epochs=args.epochs,
        imgsz=args.imgsz,
        batch=args.batch,
        device=args.device,
        workers=1,
        seed=0,
        deterministic=True,
        pretrained=False,
        amp=False,
        plots=False,
        val=False,
        cache="ram",
        project=str(args.workdir.resolve()),
        name="run",
        exist_ok=True,
        verbose=False,
        close_mosaic=max(1, args.epochs // 5),
        fliplr=0.5,
        flipud=0.5,
        degrees=0.0,
        mosaic=1.0,
    )
    trained = YOLO(str(args.workdir.resolve() / "run" / "weights" / "last.pt"))
    metrics = trained.val(
        data=str(data_yaml),
        split="val",
        imgsz=args.imgsz,
        batch=args.batch,
        device=args.device,
        plots=False,
        verbose=False,
    )
    map50, map50_95 = float(metrics.box.map50), float(metrics.box.map)
    print(f"held-out mAP50={map50:.4f} mAP50-95={map50_95:.4f}")

    net = trained.model
    assert net is not None
    # float16 storage halves the committed file; the loader casts back to float32.
    state = {
        k: (v.detach().half() if v.is_floating_point() else v.detach()).contiguous().cpu()
        for k, v in net.state_dict().items()
    }
    weights = save(state)
    manifest = build_manifest(
        architecture=ARCHITECTURE,
        class_names=list(CLASS_NAMES),
        imgsz=args.imgsz,
        weights=weights,
        metrics={
            "map50": round(map50, 4),
            "map50_95": round(map50_95, 4),
            "train_images": args.train,
            "val_images": args.val,
            "epochs": args.epochs,
        },
    )

    # The exported tensors must rebuild, without pickle, into a network that finds the
    # same boxes as the trained one.
    rebuilt = build_yolo(manifest, weights)
    probe, _ = render_image(VAL_SEED_BASE)
    a = trained.predict(probe, imgsz=args.imgsz, verbose=False, device="cpu")[0].boxes
    b = rebuilt.predict(probe, imgsz=args.imgsz, verbose=False, device="cpu")[0].boxes
    if not (len(a) == len(b) and torch.allclose(a.xyxy, b.xyxy, atol=1.0)):
        raise SystemExit("rebuilt model disagrees with the trained one; not exporting")

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / constants.SAFETENSORS_FILE).write_bytes(weights)
    (args.out / constants.MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2) + "\n")
    print(f"wrote {args.out} ({len(weights) / 1e6:.1f} MB, sha256 {manifest.sha256[:12]})")


if __name__ == "__main__":
    main()
