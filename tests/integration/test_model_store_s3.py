"""The model store against a real S3 endpoint over HTTP (moto's server)."""

from __future__ import annotations

import json

import pytest

from serve_app.blobs import open_store
from serve_app.config import StoreSettings
from serve_app.errors import ModelLoadError
from serve_app.models.cache import WeightsCache
from serve_app.models.store import fetch_version
from tests.conftest import DEMO_MODEL, free_port


@pytest.fixture
def bucket(s3, request):
    import re
    import uuid

    name = (
        re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-")
        + "-"
        + uuid.uuid4().hex[:8]
    )
    s3["client"].create_bucket(Bucket=name)
    return name


def _upload_demo(s3, bucket, prefix, manifest_override=None, weights=None):
    manifest = json.loads((DEMO_MODEL / "manifest.json").read_text())
    manifest.update(manifest_override or {})
    s3["client"].put_object(Bucket=bucket, Key=f"{prefix}/manifest.json", Body=json.dumps(manifest))
    s3["client"].put_object(
        Bucket=bucket,
        Key=f"{prefix}/model.safetensors",
        Body=weights if weights is not None else (DEMO_MODEL / "model.safetensors").read_bytes(),
    )


def test_fetch_from_s3_verifies_and_matches_the_file(s3, bucket):
    _upload_demo(s3, bucket, "acme/shapes/1")
    fetched = fetch_version(
        f"s3://{bucket}/acme/shapes/1", StoreSettings(s3_endpoint_url=s3["url"])
    )
    assert fetched.weights == (DEMO_MODEL / "model.safetensors").read_bytes()
    assert fetched.manifest.class_names == ["circle", "square", "triangle"]


def test_write_then_read_round_trips(s3, bucket):
    store = open_store(f"s3://{bucket}/x/1", StoreSettings(s3_endpoint_url=s3["url"]))
    store.write("blob.bin", b"\x00\x01" * 1000)
    assert store.read("blob.bin", 10_000) == b"\x00\x01" * 1000


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("missing", "not found"),
        ("tampered", "sha256"),
        ("oversized", "over the"),
        ("no-bucket", "not found"),
    ],
)
def test_bad_versions_fail_cleanly(s3, bucket, case, needle):
    settings = StoreSettings(s3_endpoint_url=s3["url"])
    uri = f"s3://{bucket}/v/1"
    if case == "tampered":
        data = bytearray((DEMO_MODEL / "model.safetensors").read_bytes())
        data[100] ^= 0xFF
        _upload_demo(s3, bucket, "v/1", weights=bytes(data))
    elif case == "oversized":
        _upload_demo(s3, bucket, "v/1", manifest_override={"size_bytes": 1000})
    elif case == "no-bucket":
        uri = "s3://no-such-bucket-here/v/1"
    with pytest.raises(ModelLoadError, match=needle):
        fetch_version(uri, settings)


def test_unreachable_endpoint_is_a_load_error_not_a_hang(s3):
    settings = StoreSettings(s3_endpoint_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ModelLoadError, match="cannot read"):
        fetch_version("s3://b/v/1", settings)


def test_cache_serves_weights_after_the_object_is_gone(s3, bucket, tmp_path):
    _upload_demo(s3, bucket, "c/1")
    settings = StoreSettings(s3_endpoint_url=s3["url"])
    cache = WeightsCache(tmp_path)
    first = fetch_version(f"s3://{bucket}/c/1", settings, cache)
    s3["client"].delete_object(Bucket=bucket, Key="c/1/model.safetensors")
    second = fetch_version(f"s3://{bucket}/c/1", settings, cache)
    assert first.weights == second.weights
