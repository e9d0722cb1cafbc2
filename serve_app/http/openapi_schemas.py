"""The OpenAPI document's schemas (``openapi.py``): the wire models' own JSON Schemas
(pydantic), and the bodies that have no model, described by hand."""

from __future__ import annotations

from typing import Any

from serve_app.inference.results import DetectionResult
from serve_app.wire import TenantDefaults

REF = "#/components/schemas/{model}"


def schemas() -> dict[str, Any]:
    """``components.schemas``: the wire models' own schemas and the rest, by hand."""
    detection = DetectionResult.model_json_schema(ref_template=REF)
    defaults = TenantDefaults.model_json_schema(ref_template=REF)
    string, integer, boolean = {"type": "string"}, {"type": "integer"}, {"type": "boolean"}

    def obj(required: list[str], **properties: Any) -> dict[str, Any]:
        return {"type": "object", "required": required, "properties": properties}

    tensor_meta = obj(["name", "datatype", "shape"], name=string, datatype=string,
                      shape={"type": "array", "items": integer})  # fmt: skip
    tensor = obj(["name", "datatype", "shape"], name=string, datatype=string,
                 shape={"type": "array", "items": integer}, parameters={"type": "object"},
                 data={"type": "array"})  # fmt: skip
    hour = obj(["hour", "requests", "images", "compute_s", "rejected", "errors"], hour=string,
               requests=integer, images=integer, compute_s={"type": "number"},
               rejected=integer, errors=integer)  # fmt: skip
    numbers = {"type": "number"}
    return {
        **detection.pop("$defs"),
        "DetectionResult": detection,
        "TenantDefaults": defaults,
        "Error": obj(["error"], error=obj(["code", "message"], code=string, message=string)),
        "OipError": obj(["error"], error=string),
        "Catalog": obj(["models"], models={"type": "array", "items": obj(
            ["name", "versions", "active_version", "default"], name=string,
            versions={"type": "array", "items": integer}, active_version=integer,
            default=boolean)}),
        "Usage": obj(["month", "images_this_month", "monthly_quota", "remaining",
                      "resets_in_s", "hours"], month=string, images_this_month=integer,
                     monthly_quota={"type": ["integer", "null"]},
                     remaining={"type": ["integer", "null"]}, resets_in_s=integer,
                     hours={"type": "array", "items": hour}),
        "PolicyView": obj(["defaults", "saved", "bounds", "allowed_classes"],
                          defaults=obj(["conf", "iou", "max_det"], conf=numbers, iou=numbers,
                                       max_det=integer),
                          saved={"$ref": REF.format(model="TenantDefaults")},
                          bounds={"type": "object", "additionalProperties": {
                              "type": "array", "items": numbers}},
                          allowed_classes={"type": ["array", "null"], "items": string}),
        "Health": obj(["status"], status=string),
        "Readiness": obj(["status"], status={"type": "string", "enum": ["ready", "not_ready"]}),
        "ServerMetadata": obj(["name", "version", "extensions"], name=string, version=string,
                              extensions={"type": "array", "items": string}),
        "ServerLive": obj(["live"], live=boolean),
        "ServerReady": obj(["ready"], ready=boolean),
        "ModelReady": obj(["name", "ready"], name=string, ready=boolean),
        "ModelMetadata": obj(["name", "platform", "inputs", "outputs"], name=string,
                             versions={"type": "array", "items": string}, platform=string,
                             inputs={"type": "array", "items": tensor_meta},
                             outputs={"type": "array", "items": tensor_meta},
                             parameters={"type": "object"}),
        "InferenceRequest": obj(["inputs"], id=string, parameters={"type": "object"},
                                inputs={"type": "array", "items": tensor},
                                outputs={"type": "array", "items": obj(
                                    ["name"], name=string, parameters={"type": "object"})}),
        "InferenceResponse": obj(["model_name", "outputs"], model_name=string,
                                 model_version=string, id=string,
                                 outputs={"type": "array", "items": tensor}),
    }  # fmt: skip
