"""The Open Inference Protocol's wire format (serve_app/http/oip.py), with tritonclient's own
encoder and decoder on the other side (no server: its static request and response codecs)."""

from __future__ import annotations

import base64
import json
import struct

import numpy as np
import pytest
import tritonclient.http as triton
from hypothesis import given, settings
from hypothesis import strategies as st

from serve_app.constants import V2_MAX_IMAGES
from serve_app.errors import BadParameter
from serve_app.http import oip
from serve_app.inference.results import Detection, DetectionResult, ImageSize

JPEG, PNG = b"\xff\xd8\xff\xe0fake-jpeg", b"\x89PNG\r\n\x1a\nfake-png"


def _body(images: list[bytes], binary: bool = True, **kwargs: object) -> tuple[bytes, str | None]:
    tensor = triton.InferInput("IMAGE", [len(images)], "BYTES")
    if binary:
        tensor.set_data_from_numpy(np.array(images, dtype=np.object_), binary_data=True)
    else:
        encoded = [base64.b64encode(i) for i in images]
        tensor.set_data_from_numpy(np.array(encoded, dtype=np.object_), binary_data=False)
    body, json_size = triton.InferenceServerClient.generate_request_body([tensor], **kwargs)
    return body, None if json_size is None else str(json_size)


def _result(*rows: tuple[float, float, float, float, float, int]) -> DetectionResult:
    detections = [
        Detection(class_id=c, class_name=f"c{c}", confidence=conf, bbox=(x1, y1, x2, y2))
        for x1, y1, x2, y2, conf, c in rows
    ]
    return DetectionResult(model="shapes@2", image=ImageSize(width=64, height=48),
                           detections=detections, timing_ms={})  # fmt: skip


@pytest.mark.parametrize("binary", [True, False], ids=["binary tensors", "JSON tensors"])
def test_tritonclients_request_is_read_whole(binary):
    params = {"conf": 0.4, "iou": 0.5, "max_det": 7, "classes": [0, "square"], "imgsz": 320}
    body, length = _body([JPEG, PNG], binary, request_id="req-1", parameters=params)
    request = oip.parse_infer(body, length)
    assert request.images == [JPEG, PNG] and request.id == "req-1"
    assert request.params == {"conf": "0.4", "iou": "0.5", "max_det": "7",
                              "classes": "0,square", "imgsz": "320"}  # fmt: skip
    # no outputs named: tritonclient asks for all of them as binary data
    assert request.outputs == {"DETECTIONS": True, "NUM_DETECTIONS": True}


@pytest.mark.parametrize("binary_out", [True, False])
def test_the_response_is_what_tritonclient_decodes(binary_out):
    outputs = [triton.InferRequestedOutput(n, binary_data=binary_out) for n in oip.OUTPUTS]
    body, length = _body([JPEG, PNG], outputs=outputs, request_id="abc")
    request = oip.parse_infer(body, length)
    results = [_result((1, 2, 30, 40, 0.9, 1), (5, 6, 7, 8, 0.5, 0)), _result()]
    content, headers = oip.infer_response(request, "shapes", "2", results)
    header_length = headers.get("Inference-Header-Content-Length")
    decoded = triton.InferenceServerClient.parse_response_body(
        content, header_length=None if header_length is None else int(header_length)
    )
    detections = decoded.as_numpy("DETECTIONS")
    assert detections.dtype == np.float32 and detections.shape == (2, 2, 6)
    assert detections[0].tolist() == [[1, 2, 30, 40, pytest.approx(0.9), 1],
                                      [5, 6, 7, 8, 0.5, 0]]  # fmt: skip
    assert not detections[1].any()  # padding rows: read NUM_DETECTIONS
    assert decoded.as_numpy("NUM_DETECTIONS").tolist() == [2, 0]
    response = decoded.get_response()
    assert (response["model_name"], response["model_version"], response["id"]) == (
        "shapes", "2", "abc")  # fmt: skip
    assert ("Inference-Header-Content-Length" in headers) is binary_out


def test_only_the_outputs_asked_for_are_sent():
    outputs = [triton.InferRequestedOutput("NUM_DETECTIONS", binary_data=False)]
    body, length = _body([JPEG], outputs=outputs)
    request = oip.parse_infer(body, length)
    content, headers = oip.infer_response(request, "shapes", "1", [_result((1, 1, 2, 2, 0.7, 0))])
    answer = json.loads(content)
    assert headers["Content-Type"] == "application/json" and "id" not in answer
    assert answer["outputs"] == [{"name": "NUM_DETECTIONS", "datatype": "INT32", "shape": [1],
                                  "data": [1]}]  # fmt: skip


def _json(doc: object) -> bytes:
    return json.dumps(doc).encode()


IMAGE_INPUT = {"name": "IMAGE", "datatype": "BYTES", "shape": [1],
               "data": [base64.b64encode(JPEG).decode()]}  # fmt: skip


@pytest.mark.parametrize(
    ("body", "length", "says"),
    [
        (b"not json", None, "inference request"),
        (_json({"inputs": [IMAGE_INPUT], "extra": 1}), None, "extra"),
        (_json({"inputs": []}), None, "exactly one input"),
        (_json({"inputs": [{**IMAGE_INPUT, "name": "images"}]}), None, "exactly one input"),
        (_json({"inputs": [{**IMAGE_INPUT, "datatype": "FP32"}]}), None, "BYTES"),
        (_json({"inputs": [{**IMAGE_INPUT, "shape": [2]}]}), None, "1 elements"),
        (_json({"inputs": [{**IMAGE_INPUT, "shape": [1, 2]}]}), None, "shape [N]"),
        (_json({"inputs": [{**IMAGE_INPUT, "shape": [0]}]}), None, "shape [N]"),
        (_json({"inputs": [{**IMAGE_INPUT, "shape": [V2_MAX_IMAGES + 1]}]}), None, "at most"),
        (_json({"inputs": [{**IMAGE_INPUT, "data": ["%%%"]}]}), None, "base64"),
        (_json({"inputs": [{**IMAGE_INPUT, "data": [3]}]}), None, "base64"),
        (_json({"inputs": [{**IMAGE_INPUT, "data": None}]}), None, "needs data"),
        (_json({"inputs": [IMAGE_INPUT], "parameters": {"conff": 1}}), None, "unknown parameter"),
        (_json({"inputs": [IMAGE_INPUT], "parameters": {"conf": [1]}}), None, "number"),
        (_json({"inputs": [IMAGE_INPUT], "parameters": {"conf": True}}), None, "number"),
        (_json({"inputs": [IMAGE_INPUT], "parameters": {"binary_data_output": 1}}), None,
         "true or false"),
        (_json({"inputs": [IMAGE_INPUT], "outputs": [{"name": "boxes"}]}), None, "unknown output"),
        (_json({"inputs": [IMAGE_INPUT]}), "x", "byte count"),
        (_json({"inputs": [IMAGE_INPUT]}), "100000", "length of the JSON part"),
    ],
)  # fmt: skip
def test_a_bad_request_is_a_400_that_names_the_fix(body, length, says):
    with pytest.raises(BadParameter) as caught:
        oip.parse_infer(body, length)
    assert says in caught.value.message


def _binary(images: list[bytes], size: int | None = None, tail: bytes = b"") -> tuple[bytes, str]:
    blob = b"".join(struct.pack("<I", len(i)) + i for i in images) + tail
    doc = {"inputs": [{"name": "IMAGE", "datatype": "BYTES", "shape": [len(images)],
                       "parameters": {"binary_data_size": size or len(blob)}}]}  # fmt: skip
    head = _json(doc)
    return head + blob, str(len(head))


@pytest.mark.parametrize(
    ("parts", "says"),
    [
        (_binary([JPEG], size=3), "after the binary data"),
        (_binary([JPEG], size=10**6), "byte count of its binary data"),
        (_binary([JPEG], tail=b"\x01"), "bytes of binary data after image 0"),
        ((_binary([JPEG])[0][:-3], _binary([JPEG])[1]), "byte count"),
    ],
)
def test_binary_tensors_must_add_up(parts, says):
    with pytest.raises(BadParameter) as caught:
        oip.parse_infer(*parts)
    assert says in caught.value.message


def test_a_length_prefix_past_the_data_is_named():
    blob = struct.pack("<I", 1000) + JPEG
    doc = {"inputs": [{"name": "IMAGE", "datatype": "BYTES", "shape": [1],
                       "parameters": {"binary_data_size": len(blob)}}]}  # fmt: skip
    head = _json(doc)
    with pytest.raises(BadParameter, match="image 0 is said to be 1000 bytes"):
        oip.parse_infer(head + blob, str(len(head)))


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=300), length=st.one_of(st.none(), st.integers(0, 400).map(str)))
def test_no_body_makes_anything_but_a_400(body, length):
    try:
        request = oip.parse_infer(body, length)
    except BadParameter as exc:
        assert exc.status == 400 and exc.message
    else:  # whatever was accepted is a well-formed request
        assert 1 <= len(request.images) <= V2_MAX_IMAGES


def test_model_metadata_describes_the_tensors_and_the_classes():
    meta = oip.model_metadata("shapes", [1, 2], ["circle", "square"])
    assert meta["inputs"] == [{"name": "IMAGE", "datatype": "BYTES", "shape": [-1]}]
    assert [o["name"] for o in meta["outputs"]] == ["DETECTIONS", "NUM_DETECTIONS"]
    assert meta["outputs"][0]["shape"] == [-1, -1, 6] and meta["versions"] == ["1", "2"]
    assert json.loads(meta["parameters"]["class_names"]) == ["circle", "square"]
