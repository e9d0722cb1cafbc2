from __future__ import annotations

import json
import shutil

import pytest

from serve_app.blobs import resolve_file_uri
from serve_app.errors import ModelLoadError
from serve_app.models.store import fetch_version
from tests.conftest import DEMO_MODEL, ROOT


def test_relative_uris_resolve_against_the_project_root_not_the_cwd(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("YOLOSERVE_MODEL_ROOT", raising=False)
    assert resolve_file_uri("file://models/demo/shapes/1") == DEMO_MODEL
    assert resolve_file_uri(f"file://{tmp_path}") == tmp_path
    monkeypatch.setenv("YOLOSERVE_MODEL_ROOT", str(tmp_path))
    assert resolve_file_uri("file://x/1") == tmp_path / "x" / "1"


def test_demo_model_fetches_and_verifies():
    fetched = fetch_version("file://models/demo/shapes/1")
    assert fetched.manifest.class_names == ["circle", "square", "triangle"]
    assert fetched.manifest.architecture == "yolov8n"
    assert len(fetched.weights) == fetched.manifest.size_bytes


def _copy(tmp_path):
    dest = tmp_path / "v"
    shutil.copytree(DEMO_MODEL, dest)
    return dest


def test_tampered_weights_fail_verification(tmp_path):
    dest = _copy(tmp_path)
    data = bytearray((dest / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (dest / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="sha256"):
        fetch_version(f"file://{dest}")


def test_missing_files_and_unsupported_schemes(tmp_path):
    dest = _copy(tmp_path)
    (dest / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="not found"):
        fetch_version(f"file://{dest}")
    with pytest.raises(ModelLoadError, match="not found"):
        fetch_version(f"file://{tmp_path}/nothing")
    with pytest.raises(ModelLoadError, match="unsupported"):
        fetch_version("http://example.invalid/model")


def test_weights_larger_than_the_manifest_says_are_not_read_whole(tmp_path):
    dest = _copy(tmp_path)
    manifest = json.loads((dest / "manifest.json").read_text())
    manifest["size_bytes"] = 1000
    (dest / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelLoadError, match="over the 1000-byte limit"):
        fetch_version(f"file://{dest}")
    assert ROOT.exists()


def test_the_registrys_digest_decides_which_weights_a_version_is(tmp_path):
    """Someone who can write the model store replaces a version's weights *and* its
    manifest, consistently: the manifest alone would vouch for them; the digest the
    registry recorded at push (rendered into the detector's config) does not."""
    from serve_app.models.cache import WeightsCache
    from serve_app.models.manifest import sha256_hex

    version = tmp_path / "acme" / "shapes" / "1"
    shutil.copytree(DEMO_MODEL, version)
    uri = f"file://{version}"
    recorded = fetch_version(uri).manifest.sha256
    cache = WeightsCache(tmp_path / "cache")
    assert fetch_version(uri, cache=cache, sha256=recorded).manifest.sha256 == recorded
    # the swap: other weights, and a manifest made to match them
    swapped = (version / "model.safetensors").read_bytes() + b"\x00" * 16
    (version / "model.safetensors").write_bytes(swapped)
    manifest = json.loads((version / "manifest.json").read_text())
    manifest.update(sha256=sha256_hex(swapped), size_bytes=len(swapped))
    (version / "manifest.json").write_text(json.dumps(manifest))
    assert fetch_version(uri).manifest.sha256 == sha256_hex(swapped)  # self-consistent
    for with_cache in (None, cache):
        with pytest.raises(ModelLoadError, match="not the weights the registry recorded"):
            fetch_version(uri, cache=with_cache, sha256=recorded)
