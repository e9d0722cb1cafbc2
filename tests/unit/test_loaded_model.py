"""The detector's per-model wrapper, driven directly (no Ray cluster)."""

from __future__ import annotations

import pytest

from serve_app.errors import BadParameter, ModelUnavailable
from serve_app.inference.loaded_model import group_batch, load_model, prepare
from serve_app.inference.policy import InferenceParams
from serve_app.inference.results import DetectionResult
from serve_app.models import engine
from serve_app.models.cache import WeightsCache
from tests.conftest import SAMPLES

DEMO = "file://models/demo/shapes/1"
PARAMS = InferenceParams(
    conf=0.25, iou=0.7, max_det=300, imgsz=None, max_imgsz=1280, classes=None, allowed_classes=None
)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def model(cache_dir):
    return load_model("demo/shapes@1", DEMO, cache=WeightsCache(cache_dir))


def _letterboxed(name: str):
    return prepare((SAMPLES / name).read_bytes(), 320)[0]


def test_predicts_a_batch_with_one_call(model):
    # shapes_01 and shapes_07 letterbox to the same shape (a batch never mixes shapes).
    images = [_letterboxed(n) for n in ("shapes_01.png", "shapes_07.png")]
    assert images[0].shape == images[1].shape
    results = model.predict(images, PARAMS)
    assert len(results) == 2
    assert [r.shape for r in results] == [(5, 6), (2, 6)]  # ground truth: 5 and 2 shapes
    assert model.label == "shapes@1" and model.engine.name == engine.ONNX_RUNTIME
    assert model.runner.largest_batch == 1  # one thread: the batcher sends single images


def test_a_lone_image_on_an_idle_replica_may_burst_onto_more_threads(model):
    import os

    if (os.cpu_count() or 1) < 2:
        assert model.runner.burst is None  # no second core to burst onto
        return
    burst = model.runner.burst
    assert burst is not None and burst.get_session_options().intra_op_num_threads == 2
    image = _letterboxed("shapes_02.jpg")
    narrow = model.predict([image], PARAMS)[0]
    wide = model.predict([image], PARAMS, alone=True)[0]
    assert wide.shape == narrow.shape == (5, 6)
    assert abs(wide - narrow).max() < 1e-3  # the same graph, another thread count


def test_class_filter_and_policy_errors_happen_before_inference(model):
    image = _letterboxed("shapes_02.jpg")
    square = PARAMS.__class__(**{**PARAMS.__dict__, "classes": ("square",)})
    only = model.predict([image], square)[0]
    assert {int(c) for c in only[:, 5].tolist()} == {1}
    with pytest.raises(BadParameter):
        model.predict([image], PARAMS.__class__(**{**PARAMS.__dict__, "classes": ("hexagon",)}))


def test_unload_is_idempotent_and_a_late_batch_gets_a_clear_error():
    loaded = load_model("demo/shapes@1", DEMO)
    loaded.__del__()  # what Serve calls on eviction
    loaded.__del__()  # and what the garbage collector may call again
    assert loaded.runner is None
    with pytest.raises(ModelUnavailable, match="unloaded"):
        loaded.predict([_letterboxed("shapes_02.jpg")], PARAMS)


def _sample_uploads() -> list[bytes]:
    return [p.read_bytes() for p in sorted(SAMPLES.glob("shapes_*"))]


def test_a_mixed_batch_gives_each_image_the_result_it_gets_alone(model):
    # Twelve samples of eleven different shapes: ultralytics alone would pad a mixed list
    # to the square and shift boxes by up to 1.3 px; grouping by letterboxed shape does not.
    uploads = _sample_uploads()
    params = [PARAMS] * len(uploads)
    prepared = [prepare(data, model.imgsz(PARAMS)) for data in uploads]
    groups = group_batch(params, prepared)
    assert sorted(i for g in groups for i in g) == list(range(len(uploads)))
    assert any(len(g) > 1 for g in groups)  # some share a predict call
    batched: dict[int, DetectionResult] = {}
    for g in groups:
        for i, result in zip(g, model.detect([prepared[i] for i in g], PARAMS), strict=True):
            batched[i] = result
    for i, data in enumerate(uploads):
        alone = model.detect([prepare(data, model.imgsz(PARAMS))], PARAMS)[0]
        assert batched[i].image == alone.image
        assert [d.class_name for d in batched[i].detections] == [
            d.class_name for d in alone.detections
        ]
        for got, want in zip(batched[i].detections, alone.detections, strict=True):
            assert got.bbox == pytest.approx(want.bbox, abs=0.11)  # bboxes are rounded to 0.1
            assert got.confidence == pytest.approx(want.confidence, abs=2e-4)


def test_results_agree_with_ultralytics_on_the_original_image(model, cache_dir):
    # The oracle: ultralytics' own predictor around the same ONNX Runtime graph, on the
    # original file (its decode, letterbox, tensors and Results, none of ours).
    from ultralytics import YOLO

    [graph] = cache_dir.glob("*.onnx")  # the verified graph the model runs
    reference = YOLO(str(graph), task="detect")
    for path in sorted(SAMPLES.glob("shapes_*"))[:4]:
        ours = model.detect([prepare(path.read_bytes(), 320)], PARAMS)[0]
        theirs = reference.predict(str(path), imgsz=320, conf=0.25, verbose=False)[0]
        pairs = zip(theirs.boxes.conf.tolist(), theirs.boxes.xyxy.tolist(), strict=True)
        want = sorted(pairs, reverse=True)
        assert len(ours.detections) == len(want)
        for got, (conf, box) in zip(ours.detections, want, strict=True):
            assert got.confidence == pytest.approx(conf, abs=2e-4)
            assert got.bbox == pytest.approx(box, abs=0.11)


def test_different_parameters_never_share_a_predict_call(model):
    data = _sample_uploads()[:2]
    prepared = [prepare(d, 320) for d in data * 2]
    strict = PARAMS.__class__(**{**PARAMS.__dict__, "conf": 0.6})
    groups = group_batch([PARAMS, PARAMS, strict, strict], prepared)
    for g in groups:
        assert len({[PARAMS, PARAMS, strict, strict][i] for i in g}) == 1


def test_a_torch_model_load_leaves_torch_at_the_replicas_threads(monkeypatch):
    # Ultralytics' predictor setup (in the warm-up) resets torch to its own NUM_THREADS
    # (cores - 1) for the whole process; the replica's own count must win.
    import torch
    from ultralytics.utils import NUM_THREADS

    monkeypatch.setattr(engine, "CPU_ENGINE", engine.TORCH)
    before = torch.get_num_threads()
    wanted = NUM_THREADS + 1
    try:
        loaded = load_model("demo/shapes@1", DEMO, threads=wanted)
        assert loaded.engine.name == engine.TORCH
        assert torch.get_num_threads() == wanted
    finally:
        torch.set_num_threads(before)


def test_an_onnx_runtime_load_gives_the_threads_to_its_session_not_torch(model):
    import torch

    before = torch.get_num_threads()
    try:
        loaded = load_model("demo/shapes@1", DEMO, threads=2)
        assert loaded.engine.name == engine.ONNX_RUNTIME
        options = loaded.runner.session.get_session_options()
        assert (options.intra_op_num_threads, options.inter_op_num_threads) == (2, 1)
        assert loaded.runner.largest_batch is None  # two threads: batches fill them
        assert torch.get_num_threads() == 1  # torch only runs NMS beside the session
    finally:
        torch.set_num_threads(before)
