"""Rebuilding the network from the trusted YAML + safetensors, without pickle."""

from __future__ import annotations

import pickle

import cv2
import pytest
import torch
from safetensors.torch import load as load_st
from safetensors.torch import save as save_st

from serve_app.errors import ModelLoadError
from serve_app.inference.loaded_model import LoadedModel
from serve_app.inference.networks import NetworkShelf
from serve_app.inference.policy import InferenceParams
from serve_app.models import engine
from serve_app.models.cache import WeightsCache
from serve_app.models.loader import build_yolo
from serve_app.models.manifest import build_manifest
from serve_app.models.store import fetch_version
from tests.conftest import SAMPLES, ground_truth, matched_shapes

PARAMS = InferenceParams(0.25, 0.7, 300, None, 1280, None, None)


@pytest.fixture(scope="module")
def demo():
    return fetch_version("file://models/demo/shapes/1")


def test_demo_model_rebuilds_without_unpickling_and_detects(demo, monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("pickle must not be used to load tenant weights")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    yolo = build_yolo(demo.manifest, demo.weights)
    assert yolo.model.names == {0: "circle", 1: "square", 2: "triangle"}
    truth = ground_truth()
    hits = total = 0
    for name in sorted(truth)[:4]:
        res = yolo.predict(
            cv2.imread(str(SAMPLES / name)), imgsz=demo.manifest.imgsz, verbose=False
        )[0]
        dets = [
            {"class_name": res.names[int(c)], "bbox": b}
            for b, c in zip(res.boxes.xyxy.tolist(), res.boxes.cls.tolist(), strict=True)
        ]
        hits += matched_shapes(truth[name], dets)
        total += len(truth[name])
    assert hits >= 0.9 * total, (hits, total)


def test_weights_for_another_class_count_do_not_fit(demo):
    manifest = build_manifest(
        architecture="yolov8n",
        class_names=["a", "b", "c", "d", "e"],
        imgsz=320,
        weights=demo.weights,
    )
    with pytest.raises(ModelLoadError, match="do not fit architecture yolov8n with 5 classes"):
        build_yolo(manifest, demo.weights)


def test_weights_for_another_architecture_do_not_fit(demo):
    manifest = demo.manifest.model_copy(update={"architecture": "yolov8s"})
    with pytest.raises(ModelLoadError, match="do not fit architecture yolov8s"):
        build_yolo(manifest, demo.weights)


def test_missing_or_extra_tensors_do_not_fit(demo):
    state = load_st(demo.weights)
    state.pop(next(iter(state)))
    state["backdoor.weight"] = torch.zeros(1)
    weights = save_st(state)
    manifest = build_manifest(
        architecture="yolov8n",
        class_names=["circle", "square", "triangle"],
        imgsz=320,
        weights=weights,
    )
    with pytest.raises(ModelLoadError, match="do not fit"):
        build_yolo(manifest, weights)


def test_garbage_bytes_are_not_safetensors(demo):
    weights = b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}" + b"\x00" * 64
    manifest = build_manifest(architecture="yolov8n", class_names=["a"], imgsz=320, weights=weights)
    with pytest.raises(ModelLoadError, match="not a valid safetensors"):
        build_yolo(manifest, weights)


@pytest.fixture(scope="module")
def demo_onnx(tmp_path_factory):
    from tests.conftest import export_demo_onnx

    return export_demo_onnx(tmp_path_factory.mktemp("onnx"))


def _onnx_manifest(weights: bytes, names=("circle", "square", "triangle")):
    return build_manifest(
        architecture=None, class_names=list(names), imgsz=320, weights=weights, format="onnx"
    )


def _uploaded(weights: bytes, tmp_path, names=("circle", "square", "triangle")):
    """A tenant's ONNX upload as a replica builds it: ONNX Runtime on CPU, from the cache."""
    manifest = _onnx_manifest(weights, names)
    runner, chosen, device = engine.build(
        manifest, weights, "cpu", WeightsCache(tmp_path), threads=1
    )
    assert (chosen.name, device) == (engine.ONNX_RUNTIME, "cpu")
    shelf = NetworkShelf()
    network, _ = shelf.acquire(engine.network_key(manifest), "tenant/upload@1",
                               lambda: (runner, chosen))  # fmt: skip
    return LoadedModel("tenant/upload@1", manifest, network, shelf)


def _detect(model: LoadedModel, name: str):
    return model.detect([model.prepare((SAMPLES / name).read_bytes(), PARAMS)], PARAMS)[0]


def test_onnx_runs_under_onnxruntime_and_detects(demo_onnx, tmp_path):
    model = _uploaded(demo_onnx, tmp_path)
    # ultralytics' default export: a static 1x3x320x320 input, so one image per run.
    assert (model.runner.fixed_side, model.runner.one_at_a_time) == (320, True)
    assert model.runner.largest_batch == 1
    truth = ground_truth()
    for name in ("shapes_02.jpg", "shapes_04.jpg"):  # wide, and square
        found = _detect(model, name)
        dets = [d.model_dump() for d in found.detections]
        assert matched_shapes(truth[name], dets) == len(truth[name])


def test_a_static_onnx_upload_gives_ultralytics_own_boxes(demo_onnx, tmp_path):
    # The oracle: ultralytics' predictor around the same file (its letterbox to the
    # graph's square, its tensors, its scaling back), on the original image.
    from ultralytics import YOLO

    model = _uploaded(demo_onnx, tmp_path)
    graph = tmp_path / "upload.onnx"
    graph.write_bytes(demo_onnx)
    reference = YOLO(str(graph), task="detect")
    for name in ("shapes_01.png", "shapes_02.jpg", "shapes_06.jpg"):
        ours = _detect(model, name)
        theirs = reference.predict(str(SAMPLES / name), imgsz=320, conf=0.25, verbose=False)[0]
        want = sorted(
            zip(theirs.boxes.conf.tolist(), theirs.boxes.xyxy.tolist(), strict=True), reverse=True
        )
        assert len(ours.detections) == len(want), name
        for got, (conf, box) in zip(ours.detections, want, strict=True):
            assert got.confidence == pytest.approx(conf, abs=0.01)
            assert got.bbox == pytest.approx(box, abs=1.0)


def test_a_batch_of_uploads_runs_through_a_batch_one_graph(demo_onnx, tmp_path):
    model = _uploaded(demo_onnx, tmp_path)
    prepared = [model.prepare((SAMPLES / n).read_bytes(), PARAMS) for n in ("shapes_02.jpg",) * 3]
    results = model.detect(prepared, PARAMS)
    assert len(results) == 3 and results[0] == results[1] == results[2]
    assert results[0] == _detect(model, "shapes_02.jpg")


def test_onnx_names_come_from_the_manifest(demo_onnx, tmp_path):
    model = _uploaded(demo_onnx, tmp_path, ("hole", "scratch", "dent"))
    found = _detect(model, "shapes_02.jpg")
    assert found.detections
    assert {d.class_name for d in found.detections} <= {"hole", "scratch", "dent"}


def test_corrupt_onnx_is_a_load_error(demo_onnx, tmp_path):
    truncated = demo_onnx[: len(demo_onnx) // 3]
    with pytest.raises(ModelLoadError, match="ONNX model could not be loaded"):
        _uploaded(truncated, tmp_path)


def test_onnx_class_count_must_match_the_manifest(demo_onnx, tmp_path):
    with pytest.raises(ModelLoadError, match="outputs 3 classes but the manifest lists 5"):
        _uploaded(demo_onnx, tmp_path, list("abcde"))


def test_replica_threads_follow_the_cpus_it_reserved():
    from serve_app.models.loader import threads_for

    assert [threads_for(c) for c in (0.1, 0.5, 1.0, 1.5, 2.0, 2.99, 4.0)] == [1, 1, 1, 1, 2, 2, 4]
