"""Turn a trusted ultralytics ``.pt`` into safetensors + manifest, and prove it equal.

A ``.pt`` is a pickle: loading one runs whatever code it carries. This module is
only for files their owner trusts — the tenant on their own machine
(``scripts/convert_weights.py``) or an operator with ``--trusted-pt``. The
platform itself only ever loads the safetensors this writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from serve_app.models import architectures
from serve_app.models.loader import build_yolo
from serve_app.models.manifest import ModelManifest, build_manifest

DEFAULT_IMGSZ = 640
CHECK_CONF = 0.05
BOX_TOLERANCE_PX = 1.0


def _architecture_of(net: Any) -> str | None:
    yaml_file = str(getattr(net, "yaml", {}).get("yaml_file", ""))
    stem = Path(yaml_file).stem
    return stem if architectures.is_allowed(stem) else None


def convert_pt(
    pt_path: Path, arch: str | None = None, imgsz: int | None = None
) -> tuple[ModelManifest, bytes, Any]:
    """``(manifest, safetensors bytes, the loaded original)`` for a trusted ``.pt``."""
    from safetensors.torch import save
    from ultralytics import YOLO

    original = YOLO(str(pt_path), task="detect")  # unpickles: trusted files only
    net = original.model
    arch = arch or _architecture_of(net)
    if arch is None or not architectures.is_allowed(arch):
        raise ValueError(
            f"cannot tell the architecture of {pt_path.name}: pass --arch (one of "
            f"{', '.join(sorted(architectures.ALLOWED_ARCHITECTURES))})"
        )
    names = [net.names[i] for i in sorted(net.names)]
    state = {
        k: v.detach().float().contiguous().cpu() if v.is_floating_point() else v.detach().cpu()
        for k, v in net.state_dict().items()
    }
    weights = save(state)
    size = imgsz or int(getattr(net, "args", {}).get("imgsz", DEFAULT_IMGSZ) or DEFAULT_IMGSZ)
    manifest = build_manifest(architecture=arch, class_names=names, imgsz=size, weights=weights)
    return manifest, weights, original


def max_box_difference(
    original: Any, manifest: ModelManifest, weights: bytes, images: list[np.ndarray]
) -> float:
    """Largest corner difference (px) between the original's boxes and the rebuilt
    network's on ``images``; ``inf`` if they find different numbers of boxes."""
    rebuilt = build_yolo(manifest, weights)
    worst = 0.0
    for image in images:
        a = original.predict(
            image, imgsz=manifest.imgsz, conf=CHECK_CONF, verbose=False, device="cpu"
        )[0].boxes
        b = rebuilt.predict(
            image, imgsz=manifest.imgsz, conf=CHECK_CONF, verbose=False, device="cpu"
        )[0].boxes
        if len(a) != len(b) or (a.cls != b.cls).any():
            return float("inf")
        if len(a):
            worst = max(worst, float((a.xyxy - b.xyxy).abs().max()))
    return worst
