"""The operator allowlist of model architectures tenants may upload weights for.

Each name maps to an ultralytics model YAML shipped inside the ultralytics
package: the network is always rebuilt from that trusted file, never from
anything a tenant sends.
"""

from __future__ import annotations

_SIZES = "nsmlx"

ALLOWED_ARCHITECTURES: frozenset[str] = frozenset(
    [f"yolov5{s}u" for s in _SIZES]
    + [f"yolov8{s}" for s in _SIZES]
    + [f"yolov9{s}" for s in "tsmce"]
    + [f"yolov10{s}" for s in "nsmblx"]
    + [f"yolo11{s}" for s in _SIZES]
    + [f"yolo26{s}" for s in _SIZES]
)


def is_allowed(architecture: str) -> bool:
    """Whether ``architecture`` names an allowlisted YAML."""
    return architecture in ALLOWED_ARCHITECTURES


def yaml_name(architecture: str) -> str:
    """The ultralytics YAML name ultralytics resolves (with its scale) for ``architecture``."""
    if not is_allowed(architecture):
        raise ValueError(f"architecture {architecture!r} is not on the allowlist")
    return f"{architecture}.yaml"
