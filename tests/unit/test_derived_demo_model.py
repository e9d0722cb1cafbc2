"""`make run`'s triangles-only model (acme's `parts@1`) is the demo network cut down to
its triangle class: reproducible from the committed shapes model, and it finds exactly the
triangles the full model finds, with the same boxes and confidences."""

from __future__ import annotations

import sys

import cv2
import pytest

from serve_app import constants
from serve_app.models.loader import build_yolo
from serve_app.models.manifest import ModelManifest
from tests.conftest import DEMO_MODEL, ROOT, SAMPLES, ground_truth

sys.path.insert(0, str(ROOT / "scripts"))
from derive_demo_model import derive

TRIANGLES = ROOT / "models" / "demo" / "triangles" / "1"


def _model(folder):
    manifest = ModelManifest.model_validate_json((folder / constants.MANIFEST_FILE).read_text())
    return build_yolo(manifest, (folder / constants.SAFETENSORS_FILE).read_bytes()), manifest


def test_the_committed_model_is_what_the_script_derives():
    weights, manifest = derive(DEMO_MODEL, ["triangle"])
    assert weights == (TRIANGLES / constants.SAFETENSORS_FILE).read_bytes()
    committed = ModelManifest.model_validate_json((TRIANGLES / constants.MANIFEST_FILE).read_text())
    assert committed == manifest and manifest.class_names == ["triangle"]


def test_it_finds_the_full_models_triangles_and_nothing_else():
    full, manifest = _model(DEMO_MODEL)
    triangles, _ = _model(TRIANGLES)
    found = 0
    for name in sorted(ground_truth()):
        image = cv2.imread(str(SAMPLES / name))
        a = full.predict(image, imgsz=manifest.imgsz, conf=0.25, verbose=False)[0].boxes
        b = triangles.predict(image, imgsz=manifest.imgsz, conf=0.25, verbose=False)[0].boxes
        mine = a.cls == manifest.class_names.index("triangle")
        assert len(b) == int(mine.sum()), name
        if len(b):
            assert (b.cls == 0).all()
            assert b.xyxy.sub(a.xyxy[mine]).abs().max().item() <= 1.0, name
            assert b.conf.sub(a.conf[mine]).abs().max().item() <= 0.01, name
        found += len(b)
    assert found >= 8  # not a vacuous comparison: the samples hold 11 triangles


def test_keeping_an_unknown_class_says_which_exist():
    with pytest.raises(SystemExit, match="circle"):
        derive(DEMO_MODEL, ["hexagon"])
