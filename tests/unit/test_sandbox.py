"""A tenant's ONNX graph is loaded and run in a limited child process before a replica
loads it (``models.sandbox``): graphs that would take a replica's memory or cores are
refused with a reason, real ones pass, and a pass is remembered per node cache."""

from __future__ import annotations

import time

import pytest

from serve_app.errors import ModelLoadError
from serve_app.models import engine, sandbox
from serve_app.models.cache import WeightsCache
from serve_app.models.manifest import build_manifest
from tests.onnx_bombs import endless_loop as _time_bomb
from tests.onnx_bombs import memory_bomb as _memory_bomb

CLASSES = ["circle", "square"]


def _manifest(weights: bytes, classes=CLASSES, imgsz=64):
    return build_manifest(
        architecture=None, class_names=classes, imgsz=imgsz, weights=weights, format="onnx"
    )


def test_a_graph_asking_for_more_memory_than_allowed_is_refused_quickly():
    bomb = _memory_bomb()
    assert len(bomb) < 1024
    engine.check_graph(bomb)  # nothing structural to object to
    started = time.monotonic()
    with pytest.raises(ModelLoadError, match="needed more than 256 MiB of memory"):
        sandbox.probe(_manifest(bomb), bomb, memory_bytes=256 * 2**20, timeout_s=60)
    assert time.monotonic() - started < 30


def test_a_graph_that_runs_too_long_is_killed_at_the_deadline():
    bomb = _time_bomb()
    started = time.monotonic()
    with pytest.raises(ModelLoadError, match="took more than 3 s to load and run one image"):
        sandbox.probe(_manifest(bomb), bomb, timeout_s=3)
    assert time.monotonic() - started < 10


def test_the_childs_own_verdicts_keep_their_words():
    from tests.unit.test_engine import _graph

    with pytest.raises(ModelLoadError, match="but the manifest lists 2"):
        sandbox.probe(_manifest(_graph()), _graph(), timeout_s=60)  # a [1, 3] output
    with pytest.raises(ModelLoadError, match=r"ONNX model could not be loaded \(\w+\)"):
        sandbox.probe(_manifest(b"not a graph"), b"not a graph", timeout_s=60)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from tests.conftest import export_demo_onnx

    return export_demo_onnx(tmp_path_factory.mktemp("export"))


def test_an_exported_detector_passes_and_the_pass_is_remembered_per_node(
    exported, tmp_path, monkeypatch
):
    from serve_app.models.store import fetch_version

    demo = fetch_version("file://models/demo/shapes/1")
    manifest = _manifest(exported, demo.manifest.class_names, demo.manifest.imgsz)
    wrong = _manifest(exported, [*demo.manifest.class_names, "extra"], demo.manifest.imgsz)
    with pytest.raises(ModelLoadError, match="but the manifest lists"):
        sandbox.probe(wrong, exported)
    cache = WeightsCache(tmp_path)
    runs = []
    real = sandbox.probe
    monkeypatch.setattr(sandbox, "probe", lambda *a, **k: runs.append(1) or real(*a, **k))
    for _ in range(2):
        runner, chosen, _ = engine.build(manifest, exported, "cpu", cache, threads=1)
        assert chosen.reason == "uploaded as ONNX" and runner.fixed_side is not None
    assert len(runs) == 1 and list(tmp_path.glob("probe-*.passed"))


def test_a_replica_never_builds_a_session_for_a_graph_the_child_refused(tmp_path, monkeypatch):
    bomb = _memory_bomb()
    monkeypatch.setattr(sandbox, "ONNX_LOAD_MAX_BYTES", 256 * 2**20)
    sessions = []
    monkeypatch.setattr(engine, "onnx_runner", lambda *a: sessions.append(a))
    with pytest.raises(ModelLoadError, match="needed more than"):
        engine.build(_manifest(bomb), bomb, "cpu", WeightsCache(tmp_path), threads=1)
    assert sessions == [] and not list(tmp_path.glob("probe-*.passed"))


def test_model_push_refuses_the_bomb_before_uploading_it(tmp_path, monkeypatch):
    """``tenantctl model push`` checks an ONNX file with the same child: the operator's
    own process never builds the session."""
    from tenant_registry.errors import InvalidInput
    from tenant_registry.push import prepare

    monkeypatch.setattr(sandbox, "ONNX_LOAD_MAX_BYTES", 256 * 2**20)
    bomb = tmp_path / "bomb.onnx"
    bomb.write_bytes(_memory_bomb())
    with pytest.raises(InvalidInput, match=r"bomb\.onnx cannot be served: ONNX model needed more"):
        prepare(bomb, class_names=CLASSES, imgsz=64)
