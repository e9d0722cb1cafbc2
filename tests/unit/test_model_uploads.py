"""Parsing a tenant's upload form, and the format check validation starts with."""

from __future__ import annotations

import base64
import json
import pickle

import pytest

from serve_app.errors import BadParameter, ModelLoadError
from serve_app.http.model_uploads import parse_upload
from serve_app.inference.validation import check_format
from serve_app.models.manifest import sha256_hex
from tests.conftest import ROOT, SAMPLES

WEIGHTS = (ROOT / "models" / "demo" / "shapes" / "1" / "model.safetensors").read_bytes()
BOUNDARY = "b0undary"
TYPE = f"multipart/form-data; boundary={BOUNDARY}"


def _form(**parts: bytes) -> bytes:
    body = b""
    for name, content in parts.items():
        body += f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        body += content + b"\r\n"
    return body + f"--{BOUNDARY}--\r\n".encode()


def _manifest(**fields: object) -> bytes:
    return json.dumps(
        {"architecture": "yolov8n", "class_names": ["a"], "imgsz": 320, **fields}
    ).encode()


def test_the_platform_writes_the_manifest_it_will_verify():
    upload = parse_upload(_form(weights=WEIGHTS, manifest=_manifest()), TYPE)
    assert upload.manifest.sha256 == sha256_hex(WEIGHTS)
    assert upload.manifest.size_bytes == len(WEIGHTS)
    assert upload.manifest.format == "safetensors" and upload.samples == b""
    onnx = parse_upload(_form(weights=b"\x08\x07", manifest=b'{"class_names": ["a"]}'), TYPE)
    assert onnx.manifest.format == "onnx" and onnx.manifest.weights_file == "model.onnx"


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b"raw", "application/octet-stream", "must be multipart/form-data"),
        (_form(weights=WEIGHTS), TYPE, "'manifest' field is missing"),
        (_form(manifest=_manifest()), TYPE, "'weights' field is missing"),
        (_form(weights=WEIGHTS, manifest=b"{"), TYPE, "invalid 'manifest'"),
        (_form(weights=WEIGHTS, manifest=_manifest(architecture="evil")), TYPE, "not allowed"),
        (_form(weights=WEIGHTS, manifest=_manifest(imgsz=33)), TYPE, "multiple of 32"),
        (_form(weights=WEIGHTS, manifest=_manifest(extra=1)), TYPE, "extra"),
        (_form(weights=WEIGHTS, manifest=_manifest(), image=b"x"), TYPE, "field 'image'"),
        (_form(weights=WEIGHTS, manifest=_manifest(), samples=b"[]"), TYPE, "'samples' must be"),
    ],
)  # fmt: skip
def test_a_bad_form_is_a_400_naming_the_fix(body, content_type, message):
    with pytest.raises(BadParameter, match=message):
        parse_upload(body, content_type)


def test_labelled_samples_are_kept():
    image = base64.b64encode((SAMPLES / "shapes_00.jpg").read_bytes()).decode()
    samples = json.dumps(
        {"samples": [{"image": image, "boxes": [{"class_name": "a", "bbox": [0, 0, 5, 5]}]}]}
    )
    upload = parse_upload(
        _form(weights=WEIGHTS, manifest=_manifest(), samples=samples.encode()), TYPE
    )
    assert upload.samples == samples.encode()


def test_a_pickle_is_named_as_such_and_never_parsed():
    upload = parse_upload(_form(weights=WEIGHTS, manifest=_manifest()), TYPE)
    for weights in (pickle.dumps({"w": 1}, protocol=4), b"PK\x03\x04rest-of-a-torch-zip"):
        with pytest.raises(ModelLoadError, match="pickled PyTorch checkpoint"):
            check_format(upload.manifest, weights)
    with pytest.raises(ModelLoadError, match="not a safetensors file"):
        check_format(upload.manifest, b"\x00" * 64)
    check_format(upload.manifest, WEIGHTS)  # the real file passes
