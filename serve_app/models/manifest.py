"""The manifest that describes one model version in the store, and its checks.

A version folder holds ``model.safetensors`` and ``manifest.json``. The manifest
names the architecture (from the allowlist), the class names, the default image
size, and the weights' sha256 and byte size, which the loader verifies before it
lets a single byte reach safetensors.
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from serve_app.constants import (
    IMGSZ_STRIDE_PX,
    MAX_CLASS_NAME_CHARS,
    MAX_CLASSES,
    MAX_IMGSZ_PX,
    MAX_MANIFEST_BYTES,
    MAX_WEIGHTS_BYTES,
    MIN_IMGSZ_PX,
    SHA256_HEX_PATTERN,
)
from serve_app.errors import ModelLoadError
from serve_app.models import architectures
from serve_app.wire import StrictModel

WEIGHTS_FILES = {"safetensors": "model.safetensors", "onnx": "model.onnx"}


class ModelManifest(StrictModel):
    """``manifest.json`` of a model version."""

    schema_version: Literal[1] = 1
    architecture: str | None = Field(
        None, description="Allowlisted ultralytics architecture, e.g. yolov8n (safetensors only)."
    )
    format: Literal["safetensors", "onnx"] = "safetensors"
    weights_file: Literal["model.safetensors", "model.onnx"] = "model.safetensors"
    class_names: list[str] = Field(min_length=1, max_length=MAX_CLASSES)
    imgsz: int = Field(ge=MIN_IMGSZ_PX, le=MAX_IMGSZ_PX, description="Default image size, px.")
    sha256: str = Field(pattern=SHA256_HEX_PATTERN)
    size_bytes: int = Field(gt=0, le=MAX_WEIGHTS_BYTES)
    metrics: dict[str, float] = Field(default_factory=dict)

    @field_validator("architecture")
    @classmethod
    def _allowlisted(cls, value: str | None) -> str | None:
        if value is not None and not architectures.is_allowed(value):
            raise ValueError(
                f"architecture {value!r} is not allowed; use one of "
                f"{', '.join(sorted(architectures.ALLOWED_ARCHITECTURES))}"
            )
        return value

    @model_validator(mode="after")
    def _format_consistent(self) -> ModelManifest:
        expected = WEIGHTS_FILES[self.format]
        if self.weights_file != expected:
            raise ValueError(
                f"format {self.format} is stored as {expected}, not {self.weights_file}"
            )
        if self.format == "safetensors" and self.architecture is None:
            raise ValueError("safetensors weights need an architecture to be rebuilt on")
        return self

    @field_validator("imgsz")
    @classmethod
    def _stride_multiple(cls, value: int) -> int:
        if value % IMGSZ_STRIDE_PX:
            raise ValueError(f"imgsz must be a multiple of {IMGSZ_STRIDE_PX}")
        return value

    @field_validator("class_names")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not name or len(name) > MAX_CLASS_NAME_CHARS or not name.isprintable():
                raise ValueError(
                    f"class names must be 1-{MAX_CLASS_NAME_CHARS} printable characters"
                )
        return value


def parse_manifest(raw: bytes) -> ModelManifest:
    """Parse and validate manifest bytes, raising ``ModelLoadError`` with the reason."""
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ModelLoadError(f"manifest is {len(raw)} bytes, over {MAX_MANIFEST_BYTES}")
    try:
        return ModelManifest.model_validate(json.loads(raw))
    except (ValueError, ValidationError) as exc:
        raise ModelLoadError(f"invalid manifest: {exc}") from exc


def sha256_hex(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def verify_weights(manifest: ModelManifest, weights: bytes) -> None:
    """Refuse weights whose size or sha256 differ from what the manifest promises."""
    if len(weights) != manifest.size_bytes:
        raise ModelLoadError(
            f"weights are {len(weights)} bytes but the manifest says {manifest.size_bytes}"
        )
    digest = sha256_hex(weights)
    if digest != manifest.sha256:
        raise ModelLoadError(
            f"weights sha256 {digest[:12]}… does not match the manifest's {manifest.sha256[:12]}…"
        )


def build_manifest(
    *,
    architecture: str | None,
    class_names: list[str],
    imgsz: int,
    weights: bytes,
    metrics: dict[str, float] | None = None,
    format: Literal["safetensors", "onnx"] = "safetensors",
) -> ModelManifest:
    """A manifest for freshly exported weights."""
    return ModelManifest(
        architecture=architecture,
        format=format,
        weights_file=WEIGHTS_FILES[format],  # type: ignore[arg-type]
        class_names=class_names,
        imgsz=imgsz,
        sha256=sha256_hex(weights),
        size_bytes=len(weights),
        metrics=metrics or {},
    )
