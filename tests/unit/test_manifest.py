from __future__ import annotations

import json

import pytest

from serve_app.errors import ModelLoadError
from serve_app.models import architectures
from serve_app.models.manifest import build_manifest, parse_manifest, sha256_hex, verify_weights

WEIGHTS = b"\x00" * 100


def _raw(**overrides) -> bytes:
    manifest = build_manifest(
        architecture="yolov8n", class_names=["a", "b"], imgsz=320, weights=WEIGHTS
    ).model_dump()
    manifest.update(overrides)
    return json.dumps(manifest).encode()


def test_round_trip_and_verification():
    manifest = parse_manifest(_raw())
    assert manifest.sha256 == sha256_hex(WEIGHTS) and manifest.size_bytes == 100
    verify_weights(manifest, WEIGHTS)


def test_sha_mismatch_is_refused():
    manifest = parse_manifest(_raw())
    tampered = b"\x01" + WEIGHTS[1:]
    with pytest.raises(ModelLoadError, match="sha256"):
        verify_weights(manifest, tampered)


def test_size_mismatch_is_refused_before_hashing():
    manifest = parse_manifest(_raw())
    with pytest.raises(ModelLoadError, match="bytes"):
        verify_weights(manifest, WEIGHTS + b"\x00")


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"architecture": "resnet50"}, "not allowed"),
        ({"architecture": "../../etc/passwd"}, "not allowed"),
        ({"imgsz": 330}, "multiple of 32"),
        ({"class_names": []}, "class_names"),
        ({"sha256": "XYZ"}, "sha256"),
        ({"format": "pt"}, "format"),
        ({"unexpected": 1}, "unexpected"),
        ({"weights_file": "../other.bin"}, "weights_file"),
        ({"weights_file": "model.onnx"}, "stored as model.safetensors"),
        ({"architecture": None}, "need an architecture"),
    ],
)
def test_invalid_manifests_are_refused(overrides, needle):
    with pytest.raises(ModelLoadError, match="invalid manifest") as err:
        parse_manifest(_raw(**overrides))
    assert needle in str(err.value)


def test_non_json_and_oversized_manifests_are_refused():
    with pytest.raises(ModelLoadError):
        parse_manifest(b"\x80not json")
    with pytest.raises(ModelLoadError, match="over"):
        parse_manifest(b" " * (2 * 1024 * 1024))


def test_every_allowlisted_architecture_resolves_to_a_shipped_yaml():
    from ultralytics.nn.tasks import yaml_model_load

    for arch in sorted(architectures.ALLOWED_ARCHITECTURES):
        cfg = yaml_model_load(architectures.yaml_name(arch))
        assert "backbone" in cfg and "head" in cfg, arch
    with pytest.raises(ValueError):
        architectures.yaml_name("yolov8n-custom")
