"""The OpenAPI 3.1 document of the whole HTTP API, served at ``GET /openapi.json`` (no
credential needed) and kept in ``docs/openapi.json`` (``make openapi``).

Every route the router serves is described here, and nothing else: a unit test builds
the router's route table (``router.route_table``) and holds its (path, method) pairs
equal to the document's. Response bodies reuse the wire models' own JSON Schemas
(pydantic), so a field added to a result is in the document too. Error responses list
every status a route can answer with, and their body: v1's ``{"error": {"code",
"message"}}``, the Open Inference Protocol's ``{"error": message}`` under ``/v2``.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from serve_app.constants import MAX_IMAGE_BYTES, MAX_IMGSZ_PX, V2_MAX_IMAGES
from serve_app.http import openapi_models
from serve_app.http.console import CONSOLE_FILES
from serve_app.http.openapi_schemas import REF, schemas

VERSION = "0.1.0"
JSON = "application/json"

# What each status means, whatever the route (the route decides which it can answer).
STATUS = {
    400: ("bad_parameter", "a parameter or the body is malformed or out of range; the "
                           "message names it and the allowed values"),
    401: ("unauthenticated", "missing, malformed, unknown, revoked or expired credential"),
    403: ("forbidden", "the account is suspended"),
    409: ("conflict", "the call does not fit the version's state (e.g. deleting the active "
                      "version)"),
    404: ("unknown_model", "no such model or version in your catalog (another tenant's "
                           "model answers exactly like one that exists nowhere)"),
    408: ("request_timeout", "the body did not arrive in time; send it in one go"),
    413: ("payload_too_large", f"the body is over the limit ({MAX_IMAGE_BYTES} bytes an image)"),
    415: ("unsupported_media_type", "not an image format the service reads (JPEG, PNG, WebP, "
                                    "BMP), or a compressed body"),
    422: ("undecodable_image", "the image is truncated or corrupt, or too large in pixels"),
    429: ("quota_exceeded", "over your rate, concurrency or monthly quota: retry after "
                           "Retry-After seconds"),
    503: ("overloaded", "the service is starting, restarting or overloaded, or your model "
                        "is loading: retry after Retry-After seconds"),
}  # fmt: skip
RETRY = {"Retry-After": {"description": "Seconds to wait before retrying.",
                         "schema": {"type": "integer", "minimum": 1}}}  # fmt: skip
RATE = {
    "RateLimit-Limit": {"description": "Requests in the window.", "schema": {"type": "integer"}},
    "RateLimit-Remaining": {"description": "Left in it.", "schema": {"type": "integer"}},
    "RateLimit-Reset": {"description": "Seconds until it is full again.",
                        "schema": {"type": "integer"}},
}  # fmt: skip
REQUEST_ID = {"X-Request-Id": {"description": "The request's id (the client's own, when it "
                               "sent a valid one): it names the call in the audit log.",
                               "schema": {"type": "string"}}}  # fmt: skip
AUTHENTICATED = (400, 401, 403)
DETECT_ERRORS = (*AUTHENTICATED, 404, 408, 413, 415, 422, 429, 503)


def _error(status: int, v2: bool) -> dict[str, Any]:
    code, meaning = STATUS[status]
    message = f"{meaning} (example)"
    example = {"error": message} if v2 else {"error": {"code": code, "message": message}}
    headers = dict(REQUEST_ID)
    if status in (429, 503):
        headers.update(RETRY)
    if status == 429:
        headers.update(RATE)
    if status == 401:
        headers["WWW-Authenticate"] = {"schema": {"type": "string"}}
    schema = {"$ref": REF.format(model="OipError" if v2 else "Error")}
    return {"description": meaning, "headers": headers,
            "content": {JSON: {"schema": schema, "example": example}}}  # fmt: skip


def _ok(schema: str | dict[str, Any], example: Any, description: str = "OK") -> dict[str, Any]:
    body = {"$ref": REF.format(model=schema)} if isinstance(schema, str) else schema
    return {"description": description, "headers": dict(REQUEST_ID),
            "content": {JSON: {"schema": body, "example": example}}}  # fmt: skip


def _operation(summary: str, description: str, ok: dict[int, Any], errors: tuple[int, ...] = (),
               *, v2: bool = False, public: bool = False, tag: str = "v1",
               **extra: Any) -> dict[str, Any]:  # fmt: skip
    responses: dict[str, Any] = {str(status): body for status, body in ok.items()}
    for status in errors:
        responses.setdefault(str(status), _error(status, v2))
    operation = {"summary": summary, "description": description, "tags": [tag],
                 "responses": responses, **extra}  # fmt: skip
    operation["security"] = [] if public else [{"bearer": []}]
    return operation


def _query(name: str, schema: dict[str, Any], description: str, example: Any) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description, "example": example}  # fmt: skip


def _path(name: str, description: str, example: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": {"type": "string", "pattern": "^[^/]+$"}, "example": example}  # fmt: skip


DETECT_QUERY = [
    _query("conf", {"type": "number", "minimum": 0, "maximum": 1},
           "Confidence threshold (raised to your plan's lowest).", 0.25),
    _query("iou", {"type": "number", "minimum": 0, "maximum": 1}, "NMS IoU threshold.", 0.7),
    _query("max_det", {"type": "integer", "minimum": 1},
           "Most detections returned (capped by your plan).", 100),
    _query("classes", {"type": "string"}, "Class names or ids to keep, comma-separated.",
           "circle,2"),
    _query("imgsz", {"type": "integer", "minimum": 1},
           f"Inference size in pixels (capped by your plan and {MAX_IMGSZ_PX}).", 640),
    _query("model", {"type": "string"}, "One of your models (default: your default model).",
           "shapes"),
    _query("version", {"type": "string", "pattern": "^[0-9]+$"},
           "A version of that model (default: its active version).", "1"),
    _query("annotate", {"type": "string", "enum": ["true", "false", "1", "0", "yes", "no"]},
           "true: answer the image with the boxes drawn (JPEG) instead of JSON.", "false"),
]  # fmt: skip
IMAGE_BODY = {"type": "string", "format": "binary",
              "description": "The encoded image: JPEG, PNG, WebP or BMP."}  # fmt: skip
DETECTION_EXAMPLE = {
    "model": "shapes@1", "image": {"width": 640, "height": 480},
    "detections": [{"class_id": 0, "class_name": "circle", "confidence": 0.91,
                    "bbox": [112.0, 64.5, 230.25, 181.0]}],
    "timing_ms": {"decode": 2.1, "inference": 18.4, "total": 27.9},
}  # fmt: skip
V2_MODEL_PATHS = ("/v2/models/{model}", "/v2/models/{model}/versions/{version}")
V2_PARAMS = [_path("model", "One of your models.", "shapes")]
V2_VERSION_PARAMS = [*V2_PARAMS, _path("version", "A version of it.", "1")]


def _v1() -> dict[str, dict[str, Any]]:
    detect = _operation(
        "Detect objects in one image",
        "The body is the image's bytes (any Content-Type; the format is read from the bytes) "
        "or multipart/form-data with an `image` field. Refused from its headers when over "
        "quota, before the body is read.",
        {200: {"description": "The detections (JSON), or with annotate=true the image with "
                              "the boxes drawn (JPEG, the count in X-Detections).",
               "headers": {**REQUEST_ID, **RATE},
               "content": {JSON: {"schema": {"$ref": REF.format(model="DetectionResult")},
                                  "example": DETECTION_EXAMPLE},
                           "image/jpeg": {"schema": {"type": "string", "format": "binary"}}}}},
        DETECT_ERRORS,
        parameters=DETECT_QUERY,
        requestBody={"required": True, "content": {
            "application/octet-stream": {"schema": IMAGE_BODY},
            **{f"image/{kind}": {"schema": IMAGE_BODY} for kind in ("jpeg", "png", "webp", "bmp")},
            "multipart/form-data": {"schema": {"type": "object", "required": ["image"],
                                               "properties": {"image": IMAGE_BODY}}},
        }},
    )  # fmt: skip
    catalog = {"models": [{"name": "shapes", "versions": [1, 2], "active_version": 2,
                           "default": True}]}  # fmt: skip
    usage = {"month": "2026-12", "images_this_month": 1234, "monthly_quota": 100000,
             "remaining": 98766, "resets_in_s": 2419200,
             "hours": [{"hour": "2026-12-01T05", "requests": 40, "images": 38,
                        "compute_s": 0.71, "rejected": 2, "errors": 0}]}  # fmt: skip
    view = {"defaults": {"conf": 0.4, "iou": 0.7, "max_det": 300},
            "saved": {"conf": 0.4, "iou": None, "max_det": None},
            "bounds": {"conf": [0.01, 1.0], "iou": [0.05, 0.95], "max_det": [1, 300]},
            "allowed_classes": None}  # fmt: skip
    control = (*AUTHENTICATED, 429, 503)
    return {
        "/v1/detect": {"post": detect},
        "/v1/models": {
            "get": _operation(
                "List your models",
                "Your models and versions only.",
                {200: _ok("Catalog", catalog)},
                AUTHENTICATED,
            )
        },
        "/v1/usage": {
            "get": _operation(
                "Your usage",
                "This month's images, the quota left and the last hours "
                "(at most a second old; rate-limited).",
                {200: _ok("Usage", usage)},
                control,
            )
        },
        "/v1/policy": {
            "get": _operation(
                "Your detection defaults",
                "The defaults in force and the bounds your plan allows.",
                {200: _ok("PolicyView", view)},
                control,
            ),
            "put": _operation(
                "Save your detection defaults",
                "Any of conf, iou and max_det, inside your plan's bounds; null keeps the "
                "operator's default.",
                {200: _ok("PolicyView", view)},
                (*control, 408, 413, 415),
                requestBody={
                    "required": True,
                    "content": {
                        JSON: {
                            "schema": {"$ref": REF.format(model="TenantDefaults")},
                            "example": {"conf": 0.4},
                        }
                    },
                },
            ),
        },
        "/healthz": {
            "get": _operation(
                "Liveness",
                "The router answers.",
                {200: _ok("Health", {"status": "ok"})},
                public=True,
                tag="probes",
            )
        },
        "/readyz": {
            "get": _operation(
                "Readiness",
                "Ready when the always-on tenants' models load.",
                {
                    200: _ok("Readiness", {"status": "ready"}),
                    503: _ok("Readiness", {"status": "not_ready"}, "Not ready yet"),
                },
                public=True,
                tag="probes",
            )
        },
        "/openapi.json": {
            "get": _operation(
                "This document",
                "The OpenAPI 3.1 description of every route.",
                {
                    200: {
                        "description": "The document",
                        "content": {JSON: {"schema": {"type": "object"}}},
                    }
                },
                public=True,
                tag="probes",
            )
        },
    }


def _console() -> dict[str, dict[str, Any]]:
    kinds = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
    paths = {}
    for path, name in CONSOLE_FILES.items():
        kind = kinds["." + name.rsplit(".", 1)[1]]
        paths[path] = {"get": _operation(
            f"Web console: {name}", "A static file of the tenant web console (the API "
            "calls it makes carry the tenant's key).",
            {200: {"description": name, "content": {kind: {"schema": {"type": "string"}}}}},
            public=True, tag="console")}  # fmt: skip
    return paths


def _v2() -> dict[str, dict[str, Any]]:
    server = {"name": "yoloserve", "version": VERSION, "extensions": ["binary_tensor_data"]}
    meta = {"name": "shapes", "versions": ["1", "2"], "platform": "yoloserve_ultralytics",
            "inputs": [{"name": "IMAGE", "datatype": "BYTES", "shape": [-1]}],
            "outputs": [{"name": "DETECTIONS", "datatype": "FP32", "shape": [-1, -1, 6]},
                        {"name": "NUM_DETECTIONS", "datatype": "INT32", "shape": [-1]}],
            "parameters": {"class_names": '["circle", "square", "triangle"]'}}  # fmt: skip
    infer_request = {"id": "42", "parameters": {"conf": 0.4},
                     "inputs": [{"name": "IMAGE", "datatype": "BYTES", "shape": [1],
                                 "data": ["<the image, base64>"]}],
                     "outputs": [{"name": "DETECTIONS"}, {"name": "NUM_DETECTIONS"}]}  # fmt: skip
    infer_response = {"model_name": "shapes", "model_version": "1", "id": "42",
                      "outputs": [{"name": "DETECTIONS", "datatype": "FP32", "shape": [1, 1, 6],
                                   "data": [112.0, 64.5, 230.25, 181.0, 0.91, 0.0]},
                                  {"name": "NUM_DETECTIONS", "datatype": "INT32", "shape": [1],
                                   "data": [1]}]}  # fmt: skip
    binary = {"type": "string", "format": "binary", "description": "The JSON object (its length "
              "in Inference-Header-Content-Length), then the binary tensors in order."}  # fmt: skip
    header_length = {"name": "Inference-Header-Content-Length", "in": "header",
                     "required": False, "schema": {"type": "integer", "minimum": 0},
                     "description": "With binary tensors: the JSON part's length.",
                     "example": 212}  # fmt: skip
    paths: dict[str, dict[str, Any]] = {
        "/v2": {"get": _operation("Server metadata", "Name, version and extensions.",
                                  {200: _ok("ServerMetadata", server)}, public=True, tag="v2")},
        "/v2/health/live": {"get": _operation(
            "Server live", "The router answers.", {200: _ok("ServerLive", {"live": True})},
            public=True, tag="v2")},
        "/v2/health/ready": {"get": _operation(
            "Server ready", "As /readyz.", {200: _ok("ServerReady", {"ready": True}),
                                            503: _ok("ServerReady", {"ready": False}, "Not ready")},
            public=True, tag="v2")},
    }  # fmt: skip
    for base, params in zip(V2_MODEL_PATHS, (V2_PARAMS, V2_VERSION_PARAMS), strict=True):
        paths[base] = {
            "get": _operation(
                "Model metadata",
                "Your model's tensors and class names (loads it if needed; rate-limited like "
                "usage calls).",
                {200: _ok("ModelMetadata", meta)},
                (*AUTHENTICATED, 404, 429, 503),
                v2=True,
                tag="v2",
                parameters=params,
            )
        }
        paths[f"{base}/ready"] = {
            "get": _operation(
                "Model ready",
                "Whether your model is loaded and can answer (loads it if needed; rate-limited "
                "like usage calls).",
                {
                    200: _ok("ModelReady", {"name": "shapes", "ready": True}),
                    503: {
                        **_ok("ModelReady", {"name": "shapes", "ready": False}, "Not ready yet"),
                        "headers": {**REQUEST_ID, **RETRY},
                    },
                },
                (*AUTHENTICATED, 404, 429),
                v2=True,
                tag="v2",
                parameters=params,
            )
        }
        paths[f"{base}/infer"] = {"post": _operation(
            "Infer (Open Inference Protocol)",
            f"1 to {V2_MAX_IMAGES} encoded images in the input IMAGE (BYTES): base64 strings "
            "in JSON, or raw with the binary tensor extension (what tritonclient sends). Each "
            "image is admitted, metered and billed as one /v1/detect call; a request with a "
            "bad image is refused before any is admitted; a request where one image fails "
            "later answers that failure, naming the image, with no partial results.",
            {200: {"description": "DETECTIONS [N, K, 6] (x1, y1, x2, y2, confidence, class "
                                  "id; rows past NUM_DETECTIONS are zeros) and NUM_DETECTIONS [N].",
                   "headers": {**REQUEST_ID, "Inference-Header-Content-Length": {
                       "schema": {"type": "integer"}}},
                   "content": {JSON: {"schema": {"$ref": REF.format(model="InferenceResponse")},
                                      "example": infer_response},
                               "application/octet-stream": {"schema": binary}}}},
            DETECT_ERRORS, v2=True, tag="v2", parameters=[*params, header_length],
            requestBody={"required": True, "content": {
                JSON: {"schema": {"$ref": REF.format(model="InferenceRequest")},
                       "example": infer_request},
                "application/octet-stream": {"schema": binary}}})}  # fmt: skip
    return paths


@functools.cache
def document() -> dict[str, Any]:
    """The document (built once per process)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "YOLO detection service",
            "version": VERSION,
            "description": "Multi-tenant object detection. Every call but the probes, this "
            "document and the console's files takes `Authorization: Bearer <api key or "
            "JWT>`; the tenant comes from the credential and nothing else. Beside the "
            "statuses listed, the ingress may answer any route 414 (URL over 16 KiB) and "
            "its own 400 page (not valid HTTP/1.1).",
        },
        "servers": [{"url": "/"}],
        "tags": [{"name": t} for t in ("v1", "v2", "probes", "console")],
        "paths": {**_v1(), **openapi_models.paths(_operation, _ok, _path), **_v2(), **_console()},
        "components": {
            "schemas": {**schemas(), **openapi_models.schemas()},
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key (yk_...) or a JWT from your identity provider.",
                }
            },
        },
    }


@functools.cache
def document_bytes() -> bytes:
    return json.dumps(document(), indent=2, sort_keys=False).encode()


def operations() -> set[tuple[str, str]]:
    """(path, METHOD) of every operation the document describes."""
    return {(path, method.upper()) for path, item in document()["paths"].items() for method in item}
