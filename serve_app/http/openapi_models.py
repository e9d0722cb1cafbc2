"""The OpenAPI document's part for tenants' own model versions (``models_api.py``).

The builders of ``openapi.py`` are passed in (it imports this module)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from serve_app.models.rollout import RolloutRequest
from serve_app.models.versions import VersionRecord

Builder = Callable[..., dict[str, Any]]
REF = "#/components/schemas/{model}"
ERRORS = (400, 401, 403, 404, 409, 429, 503)
RECORD_EXAMPLE = {
    "version": 2, "status": "ready", "origin": "upload", "reason": None,
    "sha256": "9f2c" + "0" * 60, "size_bytes": 6_240_000, "created_at": "2026-12-01T10:00:00Z",
    "metrics": {"load_s": 0.42, "latency_ms": 31.5, "size_bytes": 6_240_000.0, "map50": 0.91},
    "rollout": None,
}  # fmt: skip
CATALOG_EXAMPLE = {"name": "shapes", "versions": [1, 2], "active_version": 2}


def schemas() -> dict[str, Any]:
    record = VersionRecord.model_json_schema(ref_template=REF)
    rollout = RolloutRequest.model_json_schema(ref_template=REF)
    string, integer = {"type": "string"}, {"type": "integer"}
    return {
        **record.pop("$defs", {}),
        "VersionRecord": record,
        "RolloutRequest": rollout,
        "UploadAccepted": {"type": "object", "required": ["version", "status"],
                           "properties": {"version": integer, "status": string}},
        "VersionList": {"type": "object", "required": ["name", "active_version", "versions"],
                        "properties": {"name": string, "active_version": integer,
                                       "versions": {"type": "array", "items": {
                                           "$ref": REF.format(model="VersionRecord")}}}},
        "ModelVersions": {"type": "object", "required": ["name", "versions", "active_version"],
                          "properties": {"name": string, "active_version": integer,
                                         "versions": {"type": "array", "items": integer}}},
    }  # fmt: skip


def paths(operation: Builder, ok: Builder, path: Builder) -> dict[str, dict[str, Any]]:
    name = path("name", "One of your models.", "shapes")
    version = path("version", "A version of it.", "2")
    upload_body = {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": ["weights", "manifest"],
            "properties": {
                "weights": {"type": "string", "format": "binary",
                            "description": ".safetensors (with an architecture) or .onnx"},
                "manifest": {"type": "string", "description": 'JSON: {"architecture": '
                             '"yolov8n", "class_names": ["circle"], "imgsz": 640}; no '
                             "architecture for ONNX"},
                "samples": {"type": "string", "description": 'Optional JSON: {"samples": '
                            '[{"image": "<base64>", "boxes": [{"class_name": "circle", '
                            '"bbox": [x1, y1, x2, y2]}]}]}; validation measures mAP50 on them'},
            }}}},
    }  # fmt: skip
    rollout_body = {"required": True, "content": {"application/json": {
        "schema": {"$ref": REF.format(model="RolloutRequest")},
        "example": {"mode": "shadow", "percent": 20, "min_images": 100, "min_agreement": 0.9},
    }}}  # fmt: skip
    record = ok("VersionRecord", RECORD_EXAMPLE)
    catalog = ok("ModelVersions", CATALOG_EXAMPLE)
    versions = "/v1/models/{name}/versions/{version}"
    return {
        "/v1/models/{name}/versions": {
            "get": operation(
                "Every version of one of your models",
                "Your operator's versions ('origin': 'operator') and your uploads, with their "
                "status, validation metrics and rollouts.",
                {
                    200: ok(
                        "VersionList",
                        {"name": "shapes", "active_version": 1, "versions": [RECORD_EXAMPLE]},
                    )
                },
                ERRORS,
                parameters=[name],
            ),
            "post": operation(
                "Upload a new version of one of your models",
                "Stored under your account with its sha256, then validated in a sandbox (format, "
                "no pickle, builds, runs probe images, outputs fit the classes). Poll its status; "
                "only a ready version can be rolled out or activated. 429 past the uploads per "
                "hour or the versions kept per model; 413 past the upload size limit.",
                {202: ok("UploadAccepted", {"version": 2, "status": "validating"}, "Accepted")},
                (*ERRORS, 408, 413),
                parameters=[name],
                requestBody=upload_body,
            ),
        },
        versions: {
            "get": operation(
                "A version's status, validation metrics and rollout",
                "Uploaded versions carry their validation's metrics and their "
                "rollout's running totals; your operator's versions are "
                "'origin': 'operator'.",
                {200: record},
                ERRORS,
                parameters=[name, version],
            ),
            "delete": operation(
                "Delete one of your uploaded versions",
                "Not the active one (409); a running rollout of it stops.",
                {204: {"description": "Deleted"}},
                ERRORS,
                parameters=[name, version],
            ),
        },
        f"{versions}/rollout": {
            "post": operation(
                "Roll a ready version out in shadow or canary mode",
                "percent of the model's requests (without ?version=) are also (shadow) or instead "
                "(canary) answered by this version; after min_images pairs of answers it is "
                "promoted if its box agreement with the active version is at least min_agreement "
                "and its p95 latency within 1.5x, and rejected otherwise (reason with the "
                "numbers). The second inference of a pair is not billed.",
                {200: record},
                ERRORS,
                parameters=[name, version],
                requestBody=rollout_body,
            )
        },
        f"{versions}/activate": {
            "post": operation(
                "Make a ready version the active one",
                "At once, on every router within a second.",
                {200: catalog},
                ERRORS,
                parameters=[name, version],
            )
        },
        "/v1/models/{name}/rollback": {
            "post": operation(
                "Undo your latest activation or promotion",
                "Back to the version active before it (409 when your operator's version is "
                "active).",
                {200: catalog},
                ERRORS,
                parameters=[name],
            )
        },
    }
