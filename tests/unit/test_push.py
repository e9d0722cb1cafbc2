"""Converting trusted .pt files, refusing untrusted ones, and checking pushes."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import cv2
import pytest

from serve_app.models.store import fetch_version
from tenant_registry.cli import main
from tenant_registry.convert import convert_pt, max_box_difference
from tenant_registry.errors import InvalidInput
from tenant_registry.push import prepare
from tests.conftest import DEMO_MODEL, ROOT, SAMPLES


@pytest.fixture(scope="module")
def demo_pt(tmp_path_factory):
    """A real ultralytics checkpoint (a pickle) of the demo model, as a tenant has one."""
    from serve_app.models.loader import build_yolo

    demo = fetch_version("file://models/demo/shapes/1")
    path = tmp_path_factory.mktemp("pt") / "shapes.pt"
    build_yolo(demo.manifest, demo.weights).save(path)
    return path


class _Evil:
    def __init__(self, sentinel: str) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return (os.system, (f"touch {self.sentinel}",))


@pytest.fixture
def evil(tmp_path):
    sentinel = tmp_path / "PWNED"
    payload = pickle.dumps(_Evil(str(sentinel)))
    (tmp_path / "evil.pt").write_bytes(payload)
    (tmp_path / "evil.safetensors").write_bytes(payload)
    return tmp_path, sentinel


def test_converted_weights_find_the_same_boxes(demo_pt):
    manifest, weights, original = convert_pt(demo_pt)
    assert manifest.architecture == "yolov8n"
    assert manifest.class_names == ["circle", "square", "triangle"]
    images = [cv2.imread(str(SAMPLES / n)) for n in ("shapes_01.png", "shapes_02.jpg")]
    assert max_box_difference(original, manifest, weights, images) <= 1.0


def test_converter_script_writes_a_pushable_folder(demo_pt, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "scripts/convert_weights.py",
            str(demo_pt),
            str(out),
            "--check-image",
            str(SAMPLES / "shapes_02.jpg"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    manifest, weights = prepare(out)
    assert manifest.sha256 and len(weights) == manifest.size_bytes


def test_untrusted_pt_is_refused_without_being_opened(evil):
    folder, sentinel = evil
    with pytest.raises(InvalidInput, match=r"convert_weights\.py"):
        prepare(folder / "evil.pt")
    assert not sentinel.exists()


def test_a_pickle_renamed_to_safetensors_is_refused_and_never_run(evil):
    folder, sentinel = evil
    with pytest.raises(InvalidInput, match="not a valid safetensors"):
        prepare(folder / "evil.safetensors", arch="yolov8n", class_names=["a"])
    assert not sentinel.exists()


def test_operator_may_admit_a_trusted_pt(demo_pt):
    manifest, _ = prepare(demo_pt, trusted_pt=True)
    assert manifest.class_names == ["circle", "square", "triangle"]


def test_weights_that_do_not_fit_are_refused_before_upload():
    with pytest.raises(InvalidInput, match="do not fit architecture yolov8n with 5 classes"):
        prepare(DEMO_MODEL / "model.safetensors", arch="yolov8n", class_names=list("abcde"))
    with pytest.raises(InvalidInput, match="not allowed"):
        prepare(DEMO_MODEL / "model.safetensors", arch="resnet50", class_names=list("abc"))


def test_push_uploads_and_records_a_new_version(tmp_path, capsys):
    db, store = str(tmp_path / "r.db"), tmp_path / "store"
    assert main(["--db", db, "init"]) == 0
    assert main(["--db", db, "platform", "set", "--model-store-uri", f"file://{store}"]) == 0
    assert main(["--db", db, "tenant", "create", "acme"]) == 0
    assert main(["--db", db, "model", "push", "acme", "shapes", str(DEMO_MODEL), "--activate"]) == 0
    pushed = fetch_version(f"file://{store}/acme/shapes/2")
    assert pushed.weights == (DEMO_MODEL / "model.safetensors").read_bytes()
    capsys.readouterr()
    assert main(["--db", db, "model", "list", "acme", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed[0]["active_version"] == 2 and listed[0]["previous_version"] == 1
    assert (
        main(["--db", db, "model", "push", "acme", "shapes", str(DEMO_MODEL / "manifest.json")])
        == 2
    )
