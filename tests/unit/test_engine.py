"""The engine per hardware (``models.engine``): CPU replicas run a compiled ONNX Runtime
graph only when it reproduces the torch network; otherwise torch, with the reason."""

from __future__ import annotations

import pytest
import torch

from serve_app.errors import ModelLoadError
from serve_app.inference.loaded_model import load_model, prepare
from serve_app.inference.policy import InferenceParams
from serve_app.models import engine
from serve_app.models.cache import WeightsCache
from serve_app.models.loader import build_yolo
from serve_app.models.runner import OnnxRunner
from serve_app.models.store import fetch_version
from tests.conftest import SAMPLES

DEMO = "file://models/demo/shapes/1"
PARAMS = InferenceParams(0.25, 0.7, 300, None, 1280, None, None)


@pytest.fixture(scope="module")
def demo():
    return fetch_version(DEMO)


def _build(demo, tmp_path, device="cpu"):
    return engine.build(demo.manifest, demo.weights, device, WeightsCache(tmp_path), threads=1)


def test_cpu_replicas_run_a_verified_onnx_runtime_graph(demo, tmp_path):
    runner, chosen, device = _build(demo, tmp_path)
    assert (chosen.name, device) == (engine.ONNX_RUNTIME, "cpu")
    assert "verified" in chosen.reason
    assert isinstance(runner, OnnxRunner) and runner.fixed_side is None  # dynamic shapes
    assert list(tmp_path.glob("*.onnx")), "the compiled graph is cached on the node"


def test_platform_boxes_equal_the_torch_reference_on_the_samples(tmp_path, monkeypatch):
    # The oracle is the reference torch network, not the engine under test.
    monkeypatch.setenv("YOLOSERVE_CACHE_DIR", str(tmp_path))
    served = load_model("demo/shapes@1", DEMO)
    assert served.engine.name == engine.ONNX_RUNTIME
    reference = build_yolo(fetch_version(DEMO).manifest, fetch_version(DEMO).weights)
    compared = 0
    for path in sorted(SAMPLES.glob("shapes_*")):
        ours = served.detect([prepare(path.read_bytes(), 320)], PARAMS)[0]
        theirs = reference.predict(str(path), imgsz=320, conf=0.25, verbose=False)[0]
        want = sorted(
            zip(theirs.boxes.conf.tolist(), theirs.boxes.xyxy.tolist(), strict=True), reverse=True
        )
        assert len(ours.detections) == len(want), path.name
        for got, (conf, box) in zip(ours.detections, want, strict=True):
            assert got.confidence == pytest.approx(conf, abs=0.01)
            assert got.bbox == pytest.approx(box, abs=1.0)
            compared += 1
    assert compared >= 30


def test_the_compiled_graph_is_built_and_verified_once_per_node(demo, tmp_path, monkeypatch):
    calls: list[str] = []
    for name in ("export_onnx", "build_yolo", "verify"):
        real = getattr(engine, name)

        def counting(*args, _real=real, _name=name, **kwargs):
            calls.append(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(engine, name, counting)
    _build(demo, tmp_path)
    assert sorted(calls) == ["build_yolo", "export_onnx", "verify"]
    _, chosen, _ = _build(demo, tmp_path)  # another replica, or a reload after eviction
    assert chosen.name == engine.ONNX_RUNTIME
    assert len(calls) == 3  # opened from the cache: no torch network, export or probe run


def test_a_graph_that_does_not_reproduce_torch_is_refused_for_torch(demo, tmp_path, monkeypatch):
    # A graph compiled from other weights (every tensor nudged) stands for a broken export.
    other = build_yolo(demo.manifest, demo.weights)
    with torch.no_grad():
        for tensor in other.model.state_dict().values():
            if tensor.is_floating_point():
                tensor.mul_(1.05)
    wrong = engine.export_onnx(other, demo.manifest.imgsz)
    monkeypatch.setattr(engine, "export_onnx", lambda *_: wrong)
    runner, chosen, device = _build(demo, tmp_path)
    assert (chosen.name, device) == (engine.TORCH, "cpu")
    assert "boxes differ" in chosen.reason or "scores" in chosen.reason
    assert type(runner.yolo.model).__name__ == "DetectionModel"  # the torch network serves


def test_an_export_that_fails_serves_torch_and_says_why(demo, tmp_path, monkeypatch):
    def broken(*_):
        raise RuntimeError("exporter crashed\nsecond line")

    monkeypatch.setattr(engine, "export_onnx", broken)
    _, chosen, _ = _build(demo, tmp_path)
    assert chosen.name == engine.TORCH
    assert chosen.reason == "ONNX Runtime refused: export failed (RuntimeError): exporter crashed"


def test_gpus_and_the_operators_choice_keep_torch(demo, tmp_path, monkeypatch):
    _, on_gpu, device = _build(demo, tmp_path, device="cuda:0")
    assert (on_gpu.name, device) == (engine.TORCH, "cuda:0")
    monkeypatch.setattr(engine, "CPU_ENGINE", engine.TORCH)
    _, chosen, _ = _build(demo, tmp_path)
    assert (chosen.name, chosen.reason) == (engine.TORCH, "YOLOSERVE_CPU_ENGINE=torch")
    assert not list(tmp_path.glob("*.onnx"))


def test_a_cached_graph_corrupted_on_disk_is_rebuilt(demo, tmp_path):
    _build(demo, tmp_path)
    [graph] = tmp_path.glob("*.onnx")
    graph.write_bytes(graph.read_bytes()[:1000])
    _, chosen, _ = _build(demo, tmp_path)
    assert chosen.name == engine.ONNX_RUNTIME
    assert graph.stat().st_size > 1000


def test_a_cached_graph_never_stands_in_for_weights_declared_otherwise(demo, tmp_path):
    # The same tensors declared as another architecture must fail as they would without a
    # cache, not find the verified graph of the right declaration (found by an
    # integration test: "wrong shapes" was served).
    _build(demo, tmp_path)
    wrong = demo.manifest.model_copy(update={"architecture": "yolov8s"})
    with pytest.raises(ModelLoadError, match="do not fit architecture yolov8s"):
        engine.build(wrong, demo.weights, "cpu", WeightsCache(tmp_path), threads=1)


# ----------------------------------------------------- a tenant's graph stays inside itself


def _graph(*, external: bool = False, domain: str = "", nested: bool = False) -> bytes:
    """A one-node ONNX graph: Add(x, w), with ``w`` an initializer."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((1, 3), dtype=np.float32), "w")
    if external:  # what onnx.save(..., save_as_external_data=True) writes: a path to read
        weight.ClearField("raw_data")
        weight.data_location = TensorProto.EXTERNAL
        weight.external_data.add(key="location", value="../../other-tenant/weights.bin")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    add = helper.make_node("Add", ["x", "w"], ["y"], domain=domain)
    inner = helper.make_graph([add], "inner", [x], [y], [weight])
    if nested:  # the tensor hidden in an If's branch
        plain = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "p", [], [y])
        cond = numpy_helper.from_array(np.array(True), "c")
        node = helper.make_node("If", ["c"], ["y"], then_branch=inner, else_branch=plain)
        graph = helper.make_graph([node], "outer", [x], [y], [cond])
    else:
        graph = inner
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    return onnx.helper.make_model(graph, opset_imports=opsets).SerializeToString()


def test_an_exported_yolo_graph_passes_the_graph_check(tmp_path):
    from tests.conftest import export_demo_onnx

    engine.check_graph(export_demo_onnx(tmp_path))
    engine.check_graph(_graph())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"external": True}, "external files"),
        ({"external": True, "nested": True}, "external files"),
        ({"domain": "com.evil.ops"}, "'com.evil.ops'"),
    ],
    ids=["external-data", "external-data-in-a-branch", "custom-op-domain"],
)
def test_a_graph_that_reaches_outside_itself_is_refused(kwargs, message):
    with pytest.raises(ModelLoadError, match=message):
        engine.check_graph(_graph(**kwargs))


def test_bytes_that_are_no_graph_are_refused():
    with pytest.raises(ModelLoadError, match="could not be loaded"):
        engine.check_graph(b"\x08\x07garbage-that-is-not-protobuf" * 10)
