"""The engine that runs a model on this replica's hardware.

* **CPU**: ONNX Runtime. A tenant's safetensors weights are compiled to ONNX at their first
  load on a node (the torch network rebuilt from its trusted YAML, exported by ultralytics
  with dynamic batch and image size) and verified: on a fixed probe set the ONNX graph's
  raw detections (every candidate box and class score) must equal the torch network's
  within ``ENGINE_MAX_BOX_DIFF_PX`` pixels and ``ENGINE_MAX_SCORE_DIFF``. Only a verified
  graph is cached (by ``network_key``: the weights, what shapes the network, the tools'
  versions) in the form ONNX Runtime optimised it for this machine, so later loads open it
  with no optimiser pass (nano: built and warm in under 150 ms). If the export or the check
  fails, the replica serves torch and says why (a log line, the load board, the load's
  ``engine`` label). Tenant ONNX uploads run on ONNX Runtime as they are.
* **GPU**: torch in half precision (only the CPU build of ONNX Runtime is installed).

``build`` returns a ``runner.Runner``: ``OnnxRunner`` calls the session itself (no
ultralytics predictor around it), ``TorchRunner`` is ultralytics' predictor.

Sessions are built from the cached file with the replica's threads (the CPUs it reserved),
one inter-op thread and no spinning: ONNX Runtime's spin-waiting burns about a fifth of a
core per thread that the router and proxy need (measured here).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import platform
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

import serve_app.constants  # noqa: F401  (forces YOLO_OFFLINE before ultralytics loads)
from serve_app.constants import (
    BURST_THREADS,
    CPU_ENGINE,
    ENGINE_MAX_BOX_DIFF_PX,
    ENGINE_MAX_SCORE_DIFF,
    ENGINE_PROBE_SEED,
    ONNX_DOMAINS,
)
from serve_app.errors import ModelLoadError
from serve_app.models import sandbox
from serve_app.models.cache import WeightsCache
from serve_app.models.loader import build_yolo, inference_device
from serve_app.models.manifest import ModelManifest
from serve_app.models.runner import OnnxRunner, Runner, Thresholds, TorchRunner

if TYPE_CHECKING:
    from ultralytics import YOLO

logger = logging.getLogger("ray.serve")
ONNX_RUNTIME = "onnxruntime"
TORCH = "torch"


@dataclass(frozen=True)
class Engine:
    """What runs a model, and why (shown to operators and counted in metrics)."""

    name: str  # ONNX_RUNTIME or TORCH
    reason: str


class EngineMismatch(Exception):
    """The compiled graph does not reproduce the reference network (the reason says how)."""


def network_key(manifest: ModelManifest) -> str:
    """What identifies a network: the weights' sha256, their format, and the architecture and
    class count that shape it (the same tensors declared as another architecture must fail
    to load, not find the graph of the right one), with every tool that shapes a compiled
    graph. Class names, image size and metrics are left out: tenants whose manifests differ
    only there run one network (``inference/networks.py``) and one cached graph."""
    import onnx
    import onnxruntime
    import torch
    import ultralytics

    tools = f"{ultralytics.__version__}/{torch.__version__}/{onnx.__version__}"
    tools += f"/{onnxruntime.__version__}/{platform.machine()}"
    shape = f"{manifest.format}/{manifest.architecture}/{len(manifest.class_names)}"
    return hashlib.sha256(f"{manifest.sha256}/{shape}/{tools}".encode()).hexdigest()


def export_onnx(torch_yolo: YOLO, imgsz: int) -> bytes:
    """The network as an ONNX graph with dynamic batch, height and width (blocking)."""
    with tempfile.TemporaryDirectory(prefix="yoloserve-export-") as tmp:
        network = torch_yolo.model
        # The exporter writes beside pt_path: a folder of ours, never the working directory.
        network.pt_path = str(Path(tmp) / "model.pt")  # type: ignore[union-attr]
        try:
            path = torch_yolo.export(
                format="onnx", imgsz=imgsz, dynamic=True, simplify=False, verbose=False
            )
        finally:
            network.pt_path = None  # type: ignore[union-attr]
        return Path(path).read_bytes()


def onnx_session(path: Path | bytes, threads: int, optimized: bool = False) -> Any:
    """An ONNX Runtime CPU session (from a file or the graph's bytes) with the replica's
    threads and no spinning, drawing its working memory from the process's one arena
    (``_shared_arena``). ``optimized``: the graph was saved already optimised here
    (``optimize``), so opening it skips the optimiser (half the session's build time)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if _shared_arena():
        options.add_session_config_entry("session.use_env_allocators", "1")
    levels = ort.GraphOptimizationLevel
    options.graph_optimization_level = (
        levels.ORT_DISABLE_ALL if optimized else levels.ORT_ENABLE_ALL
    )
    source = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


@functools.cache
def _shared_arena() -> bool:
    """One CPU arena for every session of this process: a replica's models share one pool of
    activations (measured, nano at batch 4 and 640 px: 70 MiB per model, 27 shared)."""
    import onnxruntime as ort

    arena = ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR
    try:
        memory = ort.OrtMemoryInfo("Cpu", arena, 0, ort.OrtMemType.DEFAULT)
        ort.create_and_register_allocator(memory, None)
    except Exception as exc:  # an ONNX Runtime build without it: an arena per session
        logger.warning("no shared ONNX Runtime arena: %s", _first_line(exc))
        return False
    return True


def optimize(graph: bytes) -> bytes:
    """``graph`` as ONNX Runtime optimises it for this CPU (kept in this node's cache only)."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="yoloserve-ort-") as tmp:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        return Path(options.optimized_model_filepath).read_bytes()


def onnx_runner(
    path: Path | bytes, threads: int, burst: bool = True, optimized: bool = False
) -> OnnxRunner:
    """The runner of a graph: a session with the replica's threads and, where the node has
    the cores and ``burst`` is wanted, a burst session for lone images (``BURST_THREADS``)."""
    burst_threads = min(BURST_THREADS, os.cpu_count() or 1)
    session = onnx_session(path, threads, optimized)
    extra = burst and burst_threads > threads
    second = onnx_session(path, burst_threads, optimized) if extra else None
    size = len(path) if isinstance(path, bytes) else path.stat().st_size
    return OnnxRunner(session, burst=second, graph_bytes=size)


def probe_inputs(imgsz: int) -> list[Any]:
    """A fixed probe set: seeded noise and flat frames at the model's size, a batch of
    two at a letterboxed rectangle, and a small square (dynamic shapes are checked too)."""
    rng = np.random.default_rng(ENGINE_PROBE_SEED)
    rect = max(32, (imgsz * 3 // 4) // 32 * 32)
    return [
        rng.random((1, 3, imgsz, imgsz), dtype=np.float32),
        np.full((1, 3, imgsz, imgsz), 114 / 255, dtype=np.float32),
        rng.random((2, 3, rect, imgsz), dtype=np.float32),
        rng.random((1, 3, 64, 64), dtype=np.float32),
    ]


def verify(torch_yolo: YOLO, session: Any, imgsz: int) -> None:
    """Check the session against the torch network on the probe set.

    Raises:
        EngineMismatch: A box coordinate or a class score differs by more than allowed.
    """
    import torch

    network = torch_yolo.model
    name = session.get_inputs()[0].name
    for probe in probe_inputs(imgsz):
        with torch.no_grad():
            reference = network(torch.from_numpy(probe))  # type: ignore[operator]
        if isinstance(reference, list | tuple):
            reference = reference[0]
        expected = reference.numpy()
        got = session.run(None, {name: probe})[0]
        if got.shape != expected.shape:
            raise EngineMismatch(f"output shape {got.shape} != torch's {expected.shape}")
        box = float(np.abs(got[:, :4] - expected[:, :4]).max())
        score = float(np.abs(got[:, 4:] - expected[:, 4:]).max()) if got.shape[1] > 4 else 0.0
        if box > ENGINE_MAX_BOX_DIFF_PX or score > ENGINE_MAX_SCORE_DIFF:
            raise EngineMismatch(
                f"probe {tuple(probe.shape)}: boxes differ by {box:.3f} px, scores by {score:.4f}"
            )


def warm_up(runner: Runner, manifest: ModelManifest) -> None:
    """One predict at the model's size, paid at load and not by the first request (ONNX
    Runtime plans its kernels per shape; ultralytics builds its predictor and fuses layers).

    Raises:
        ModelLoadError: A tenant's ONNX graph loads but cannot run an image.
    """
    side = runner.fixed_side or manifest.imgsz
    warm = [np.full((side, side, 3), 114, dtype=np.uint8)]
    thresholds = Thresholds(conf=0.25, iou=0.7, max_det=1, classes=None)
    try:
        runner.predict(warm, side, thresholds)
        if isinstance(runner, OnnxRunner) and runner.burst is not None:
            runner.predict(warm, side, thresholds, alone=True)  # the burst session too
    except Exception as exc:
        if isinstance(runner, OnnxRunner):  # ONNX Runtime raises many types for a bad graph
            raise unloadable(exc) from None
        raise


def compiled_for_cpu(
    manifest: ModelManifest, weights: bytes, cache: WeightsCache, threads: int, burst: bool = True
) -> OnnxRunner:
    """The ONNX Runtime graph of verified safetensors ``weights``, compiled and checked
    against the torch network once per node: only a graph that passed ``verify`` enters
    the cache, so later loads (other replicas, an LRU reload) open it directly, with no
    torch network, export or probe run.

    Raises:
        ModelLoadError: The weights do not fit their architecture (no engine takes them).
        EngineMismatch: The export failed or the graph does not reproduce the network.
    """

    def compile_and_verify() -> bytes:
        torch_yolo = build_yolo(manifest, weights)
        try:
            graph = export_onnx(torch_yolo, manifest.imgsz)
            session = onnx_session(graph, threads)
        except Exception as exc:  # the exporter and ONNX Runtime raise many types
            raise EngineMismatch(
                f"export failed ({type(exc).__name__}): {_first_line(exc)}"
            ) from None
        verify(torch_yolo, session, manifest.imgsz)
        return optimize(graph)

    path = cache.derived(network_key(manifest), compile_and_verify, ".onnx")
    return onnx_runner(path, threads, burst, optimized=True)


def wants_onnx_runtime(device: str) -> bool:
    """CPU replicas run ONNX Runtime unless ``YOLOSERVE_CPU_ENGINE=torch``."""
    return device == "cpu" and CPU_ENGINE == ONNX_RUNTIME


def check_class_count(session: Any, manifest: ModelManifest) -> None:
    """A tenant ONNX graph's output has ``4 + classes`` channels; the manifest must agree."""
    channels = session.get_outputs()[0].shape[1]
    if isinstance(channels, int) and channels != 4 + len(manifest.class_names):
        raise ModelLoadError(
            f"ONNX model outputs {channels - 4} classes but the manifest lists "
            f"{len(manifest.class_names)}"
        )


def build(
    manifest: ModelManifest,
    weights: bytes,
    device: str,
    cache: WeightsCache,
    threads: int,
    burst: bool = True,
) -> tuple[Runner, Engine, str]:
    """``(runner, engine, device)`` for verified ``weights`` on this replica's hardware;
    ``burst``: also a session on more threads for a lone image (``onnx_runner``).

    Raises:
        ModelLoadError: The weights cannot be loaded at all (no engine takes them).
    """
    if manifest.format == "onnx":
        return (
            _uploaded_onnx(manifest, weights, threads, cache, burst),
            Engine(ONNX_RUNTIME, "uploaded as ONNX"),
            "cpu",
        )
    if not wants_onnx_runtime(device):
        why = "GPU: torch fp16" if device != "cpu" else "YOLOSERVE_CPU_ENGINE=torch"
        return _torch(manifest, weights, device), Engine(TORCH, why), device
    try:
        compiled = compiled_for_cpu(manifest, weights, cache, threads, burst)
    except EngineMismatch as exc:
        logger.warning("ONNX Runtime refused for %s, serving torch: %s", manifest.sha256[:12], exc)
        refused = Engine(TORCH, f"ONNX Runtime refused: {exc}")
        return _torch(manifest, weights, device), refused, device
    return compiled, Engine(ONNX_RUNTIME, "compiled and verified against torch"), "cpu"


def _torch(manifest: ModelManifest, weights: bytes, device: str) -> TorchRunner:
    """Ultralytics' predictor on the torch network (fp16 on a GPU)."""
    _, half = inference_device()
    return TorchRunner(build_yolo(manifest, weights), device, half and device != "cpu")


def check_graph(weights: bytes) -> None:
    """Refuse a tenant's ONNX graph that reaches outside itself.

    * external-data tensors name files by path, resolved next to wherever the graph is
      loaded from: a graph could read another tenant's cached weights, or any file,
      into its own tensors (and so into its outputs);
    * operators from a domain other than ONNX's own need a custom-op library: code the
      platform did not ship.

    Raises:
        ModelLoadError: Either, or bytes that are not an ONNX model.
    """
    import onnx

    try:
        model = onnx.load_model_from_string(weights)  # no path: external data stays unread
    except Exception as exc:  # protobuf raises DecodeError and others on garbage
        raise unloadable(exc) from None
    domains = {o.domain for o in model.opset_import} | {
        node.domain for graph in _graphs(model.graph) for node in graph.node
    }
    custom = sorted(domains - ONNX_DOMAINS)
    if custom:
        raise ModelLoadError(
            f"ONNX model uses operators from {custom[0][:64]!r}: only the standard ONNX "
            "operator set can run here; re-export without custom operators"
        )
    for graph in _graphs(model.graph):
        for tensor in graph.initializer:
            if tensor.data_location == onnx.TensorProto.EXTERNAL or tensor.external_data:
                raise ModelLoadError(
                    "ONNX model keeps tensors in external files: re-export it as one file "
                    "(onnx.save(model, path, save_as_external_data=False))"
                )


def _graphs(graph: Any) -> Iterator[Any]:
    """A graph and every subgraph in its nodes' attributes (If, Loop, Scan bodies)."""
    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.g.node or attribute.g.initializer:
                yield from _graphs(attribute.g)
            for sub in attribute.graphs:
                yield from _graphs(sub)


def check_loadable(manifest: ModelManifest, weights: bytes) -> None:
    """What ``tenantctl model push`` checks before an upload: some engine takes the weights
    (the torch network for safetensors; for an ONNX graph, ONNX Runtime in a limited
    child process: ``sandbox.probe``).

    Raises:
        ModelLoadError: Neither would load them, the class count does not match, or the
            graph needs more memory or time than a replica allows.
    """
    if manifest.format != "onnx":
        build_yolo(manifest, weights)
        return
    check_graph(weights)
    sandbox.probe(manifest, weights)


def _uploaded_onnx(
    manifest: ModelManifest, weights: bytes, threads: int, cache: WeightsCache, burst: bool
) -> OnnxRunner:
    """A tenant's ONNX graph (already sha256-verified), on CPU, loaded from its bytes: never
    from a path in the node cache, where other tenants' weights lie beside it; and only
    once it loaded and ran within the limits in a child process (``sandbox.probed``)."""
    check_graph(weights)
    sandbox.probed(cache, manifest, weights)
    try:
        runner = onnx_runner(weights, threads, burst)
    except ModelLoadError:
        raise
    except Exception as exc:  # ONNX Runtime raises many types for a bad graph
        raise unloadable(exc) from None
    check_class_count(runner.session, manifest)
    return runner


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:200]


def unloadable(exc: BaseException) -> ModelLoadError:
    return ModelLoadError(
        f"ONNX model could not be loaded ({type(exc).__name__}): {_first_line(exc)}"
    )
