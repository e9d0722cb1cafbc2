"""The Open Inference Protocol (KServe v2), REST: a tenant's model seen as one tensor in
and two out, as ``tritonclient`` and the other v2 clients expect.

* input ``IMAGE``: ``BYTES``, shape ``[N]`` (``[N, 1]`` accepted), each element one
  encoded image (JPEG, PNG, WebP, BMP); in JSON, each element is the image in base64
  (raw image bytes are not JSON text); with the binary tensor extension, the raw bytes
  (each preceded by its 4-byte little-endian length, as the extension defines ``BYTES``);
* output ``DETECTIONS``: ``FP32``, shape ``[N, K, 6]``, per image up to K rows of
  ``x1, y1, x2, y2, confidence, class id`` in original-image pixels, highest confidence
  first; K is the largest count of the request's images, the rest of an image's rows
  are zeros: read ``NUM_DETECTIONS``;
* output ``NUM_DETECTIONS``: ``INT32``, shape ``[N]``;
* request ``parameters``: ``conf``, ``iou``, ``max_det``, ``classes`` (ids or names, a
  list or one comma-separated string) and ``imgsz``, with v1's bounds; and the binary
  extension's ``binary_data_output``.

Pure: parsing and encoding, unit-tested without a server; ``v2_api.py`` serves it.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from serve_app.constants import MAX_NUMBER_CHARS, V2_MAX_IMAGES
from serve_app.errors import BadParameter
from serve_app.inference.results import DetectionResult

INPUT = "IMAGE"
DETECTIONS = "DETECTIONS"
NUM_DETECTIONS = "NUM_DETECTIONS"
OUTPUTS = (DETECTIONS, NUM_DETECTIONS)
HEADER_LENGTH = "inference-header-content-length"
DETECTION_PARAMETERS = ("conf", "iou", "max_det", "classes", "imgsz")
SERVER = {"name": "yoloserve", "version": "0.1.0", "extensions": ["binary_tensor_data"]}
PLATFORM = "yoloserve_ultralytics"


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RequestInput(_Closed):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class RequestOutput(_Closed):
    name: str
    parameters: dict[str, Any] | None = None


class InferenceRequestBody(_Closed):
    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[RequestInput]
    outputs: list[RequestOutput] | None = None


@dataclass(frozen=True)
class InferRequest:
    """What a v2 infer call asks: its images, v1-style parameters, how to answer."""

    id: str | None
    images: list[bytes]
    params: dict[str, str]  # as v1's query parameters
    outputs: dict[str, bool]  # output name -> as binary data


def parse_infer(body: bytes, header_length: str | None) -> InferRequest:
    """A v2 inference request: JSON, or JSON then binary tensors (the extension).

    Raises:
        BadParameter: Anything the caller must fix, named (which field, what to send).
    """
    json_part, binary = body, b""
    if header_length is not None:
        if not header_length.isdigit() or len(header_length) > MAX_NUMBER_CHARS:
            raise BadParameter(f"{HEADER_LENGTH} must be a byte count, got {header_length[:16]!r}")
        length = int(header_length)
        if length > len(body):
            raise BadParameter(
                f"{HEADER_LENGTH} is {length} but the body has {len(body)} bytes; it gives "
                "the length of the JSON part"
            )
        json_part, binary = body[:length], body[length:]
    try:
        parsed = InferenceRequestBody.model_validate_json(json_part)
    except ValidationError as exc:
        raise BadParameter(f"inference request: {_first_error(exc)}") from None
    if len(parsed.inputs) != 1 or parsed.inputs[0].name != INPUT:
        names = [i.name[:32] for i in parsed.inputs]
        raise BadParameter(
            f"send exactly one input, {INPUT!r} (BYTES, one image each); got {names}"
        )
    tensor = parsed.inputs[0]
    images = _images(tensor, binary)
    params = detection_params(parsed.parameters or {})
    default_binary = _flag(parsed.parameters or {}, "binary_data_output")
    outputs = {name: default_binary for name in OUTPUTS}
    if parsed.outputs is not None:
        outputs = {}
        for wanted in parsed.outputs:
            if wanted.name not in OUTPUTS:
                raise BadParameter(
                    f"unknown output {wanted.name[:32]!r}; outputs: {', '.join(OUTPUTS)}"
                )
            outputs[wanted.name] = _flag(wanted.parameters or {}, "binary_data", default_binary)
    return InferRequest(parsed.id, images, params, outputs)


def _first_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    return f"{where[:64]}: {first['msg'][:120]}"


def _flag(parameters: Mapping[str, Any], name: str, default: bool = False) -> bool:
    value = parameters.get(name, default)
    if not isinstance(value, bool):
        raise BadParameter(f"parameter {name!r} must be true or false")
    return value


def _images(tensor: RequestInput, binary: bytes) -> list[bytes]:
    if tensor.datatype != "BYTES":
        raise BadParameter(
            f"input {INPUT!r} is BYTES (encoded images), got datatype {tensor.datatype[:16]!r}"
        )
    shape = tensor.shape
    if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)) or not shape[0] >= 1:
        raise BadParameter(f"input {INPUT!r} has shape [N] (N images), got {shape[:4]}")
    count = shape[0]
    if count > V2_MAX_IMAGES:
        raise BadParameter(f"at most {V2_MAX_IMAGES} images per request, got {count}")
    size = (tensor.parameters or {}).get("binary_data_size")
    if size is not None:
        if tensor.data is not None:
            raise BadParameter(f"input {INPUT!r} has both data and binary_data_size: send one")
        if not isinstance(size, int) or isinstance(size, bool) or not 0 < size <= len(binary):
            raise BadParameter(
                f"binary_data_size of {INPUT!r} must be the byte count of its binary data "
                f"after the JSON part ({len(binary)} bytes)"
            )
        if size != len(binary):
            raise BadParameter(f"the body has {len(binary) - size} bytes after the binary data")
        return _split_bytes(binary, count)
    if tensor.data is None:
        raise BadParameter(f"input {INPUT!r} needs data (base64 images) or binary_data_size")
    if binary:
        raise BadParameter("binary data after the JSON part, but no input has binary_data_size")
    flat = _flatten(tensor.data)
    if len(flat) != count:
        raise BadParameter(f"input {INPUT!r} has shape [{count}] but {len(flat)} elements")
    images = []
    for i, element in enumerate(flat):
        if not isinstance(element, str):
            raise BadParameter(f"image {i}: a JSON BYTES element is the image in base64 (a string)")
        try:
            images.append(base64.b64decode(element, validate=True))
        except (binascii.Error, ValueError):
            raise BadParameter(f"image {i} is not valid base64") from None
    return images


def _flatten(data: list[Any]) -> list[Any]:
    flat: list[Any] = []
    for element in data:
        if isinstance(element, list):
            flat.extend(_flatten(element))
        else:
            flat.append(element)
    return flat


def _split_bytes(binary: bytes, count: int) -> list[bytes]:
    """The extension's BYTES: each element a 4-byte little-endian length, then the bytes."""
    images, offset = [], 0
    for i in range(count):
        if offset + 4 > len(binary):
            raise BadParameter(f"binary data ends before image {i}'s 4-byte length")
        (length,) = struct.unpack_from("<I", binary, offset)
        offset += 4
        if offset + length > len(binary):
            raise BadParameter(f"image {i} is said to be {length} bytes; the data ends sooner")
        images.append(binary[offset : offset + length])
        offset += length
    if offset != len(binary):
        raise BadParameter(f"{len(binary) - offset} bytes of binary data after image {count - 1}")
    return images


def detection_params(parameters: Mapping[str, Any]) -> dict[str, str]:
    """v1's query parameters from the request's ``parameters`` (the same bounds apply)."""
    known = {*DETECTION_PARAMETERS, "binary_data_output"}
    unknown = sorted(set(parameters) - known)
    if unknown:
        raise BadParameter(
            f"unknown parameter {unknown[0][:32]!r}; allowed: {', '.join(sorted(known))}"
        )
    params = {}
    for name in DETECTION_PARAMETERS:
        if name not in parameters:
            continue
        value = parameters[name]
        if name == "classes" and isinstance(value, list):
            if not all(isinstance(v, str | int) and not isinstance(v, bool) for v in value):
                raise BadParameter("parameter 'classes' lists class ids or names")
            value = ",".join(str(v) for v in value)
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise BadParameter(f"parameter {name!r} must be a number" + (
                " or a list of class ids or names" if name == "classes" else ""))  # fmt: skip
        params[name] = str(value)
    return params


def infer_response(
    request: InferRequest, model: str, version: str, results: Sequence[DetectionResult]
) -> tuple[bytes, dict[str, str]]:
    """The response body and its headers (``Inference-Header-Content-Length`` when any
    output is binary)."""
    most = max((len(r.detections) for r in results), default=0)
    rows = np.zeros((len(results), most, 6), dtype="<f4")
    for i, result in enumerate(results):
        for j, d in enumerate(result.detections):
            rows[i, j] = (*d.bbox, d.confidence, d.class_id)
    counts = np.array([len(r.detections) for r in results], dtype="<i4")
    tensors = {DETECTIONS: ("FP32", rows), NUM_DETECTIONS: ("INT32", counts)}
    outputs, blobs = [], []
    for name, binary in request.outputs.items():
        datatype, array = tensors[name]
        tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if binary:
            blob = array.tobytes()
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            tensor["data"] = array.reshape(-1).tolist()
        outputs.append(tensor)
    body: dict[str, Any] = {"model_name": model, "model_version": version, "outputs": outputs}
    if request.id is not None:
        body["id"] = request.id
    header = json.dumps(body, separators=(",", ":")).encode()
    if not blobs:
        return header, {"Content-Type": "application/json"}
    return header + b"".join(blobs), {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(header)),
    }


def model_metadata(
    name: str, versions: Sequence[int], class_names: Sequence[str]
) -> dict[str, Any]:
    """``GET /v2/models/{model}``: the tensors, and the class ids' names."""
    return {
        "name": name,
        "versions": [str(v) for v in versions],
        "platform": PLATFORM,
        "inputs": [{"name": INPUT, "datatype": "BYTES", "shape": [-1]}],
        "outputs": [
            {"name": DETECTIONS, "datatype": "FP32", "shape": [-1, -1, 6]},
            {"name": NUM_DETECTIONS, "datatype": "INT32", "shape": [-1]},
        ],
        "parameters": {"class_names": json.dumps(list(class_names))},
    }
