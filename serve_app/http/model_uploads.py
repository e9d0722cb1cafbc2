"""Parsing ``POST /v1/models/{name}/versions``: a ``multipart/form-data`` body with
``weights`` (the file), ``manifest`` (JSON) and optionally ``samples`` (labelled images).

The manifest a tenant sends says what the weights are (``architecture`` from the
allowlist for safetensors, none for ONNX; ``class_names``; ``imgsz``); the platform
adds the format, sha256 and size, so the stored ``manifest.json`` is the one the loader
verifies. Pure: unit-tested.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from pydantic import Field, ValidationError

from serve_app.constants import MAX_CLASSES, MAX_MANIFEST_BYTES
from serve_app.errors import BadParameter, ModelLoadError
from serve_app.http.body import MULTIPART, form_parts, media_type
from serve_app.models.evaluation import parse_samples
from serve_app.models.manifest import ModelManifest, build_manifest
from serve_app.wire import StrictModel

FIELDS = ("weights", "manifest", "samples")
UPLOAD_HELP = (
    "send multipart/form-data with 'weights' (.safetensors or .onnx) and 'manifest' "
    '(JSON, e.g. {"architecture": "yolov8n", "class_names": ["cat", "dog"], "imgsz": 640}; '
    "no architecture for ONNX), and optionally 'samples' (labelled images, JSON)"
)


class UploadManifest(StrictModel):
    """The ``manifest`` field of an upload."""

    architecture: str | None = Field(None, description="Allowlisted; none for ONNX.")
    class_names: list[str] = Field(min_length=1, max_length=MAX_CLASSES)
    imgsz: int = 640


@dataclass(frozen=True)
class Upload:
    manifest: ModelManifest
    weights: bytes
    samples: bytes  # b"" when none were sent


def parse_upload(body: bytes, content_type: str | None) -> Upload:
    """The upload's parts, checked as far as can be without loading the weights.

    Raises:
        BadParameter: Not such a form, a missing or empty part, an invalid manifest
            or samples (the message says which and how to fix it).
    """
    kind, params = media_type(content_type)
    if kind != MULTIPART:
        raise BadParameter(f"Content-Type must be multipart/form-data: {UPLOAD_HELP}")
    parts = form_parts(body, params.get(b"boundary"), FIELDS, UPLOAD_HELP)
    for required in ("weights", "manifest"):
        if not parts.get(required):
            raise BadParameter(f"the '{required}' field is missing or empty: {UPLOAD_HELP}")
    raw = parts["manifest"]
    if len(raw) > MAX_MANIFEST_BYTES:
        raise BadParameter(f"'manifest' is over {MAX_MANIFEST_BYTES} bytes")
    try:
        given = UploadManifest.model_validate(json.loads(raw))
        manifest = build_manifest(
            architecture=given.architecture,
            class_names=given.class_names,
            imgsz=given.imgsz,
            weights=parts["weights"],
            format="safetensors" if given.architecture else "onnx",
        )
    except (ValueError, ValidationError, ModelLoadError) as exc:
        first = str(exc).replace("\n", " ")[:300]
        raise BadParameter(f"invalid 'manifest': {first}; {UPLOAD_HELP}") from None
    samples = parts.get("samples", b"")
    if samples:
        parse_samples(samples)  # refused now, not after validation
    return Upload(manifest=manifest, weights=parts["weights"], samples=samples)
