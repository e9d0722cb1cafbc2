"""One model version loaded in a replica, and the blocking steps around it.

``load_model`` fetches, verifies, rebuilds and warms up a version; ``LoadedModel``
runs one predict call over images the decode threads have letterboxed (``prepare``),
and ``group_batch`` says which queued requests may share that call. No Ray here: the
``Detector`` deployment runs these in threads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from serve_app.config import ModelSource, StoreSettings
from serve_app.constants import IMGSZ_STRIDE_PX
from serve_app.errors import ModelUnavailable
from serve_app.inference.images import decode_image
from serve_app.inference.letterbox import Frame, letterbox
from serve_app.inference.networks import Network, NetworkShelf
from serve_app.inference.policy import InferenceParams, resolve_classes, resolve_imgsz
from serve_app.inference.results import DetectionResult, ImageSize, encode_detections
from serve_app.models import engine
from serve_app.models.cache import WeightsCache, default_cache_dir
from serve_app.models.engine import Engine
from serve_app.models.loader import inference_device, set_threads
from serve_app.models.manifest import ModelManifest
from serve_app.models.runner import Runner, Thresholds, TorchRunner
from serve_app.models.store import fetch_manifest, fetch_weights
from serve_app.wire import ModelId

# A decoded image letterboxed for its model, and how to map boxes back onto it.
Prepared = tuple[Any, Frame]


def prepare(data: bytes, imgsz: int, stride: int = IMGSZ_STRIDE_PX) -> Prepared:
    """Decode and letterbox one upload (blocking; runs beside inference)."""
    return letterbox(decode_image(data), imgsz, stride)


def group_batch(params: list[InferenceParams], prepared: list[Prepared]) -> list[list[int]]:
    """Indices of the requests that can share one predict call: same parameters and
    same letterboxed shape, so each gets exactly the result it would have had alone."""
    groups: dict[tuple[InferenceParams, tuple[int, ...]], list[int]] = {}
    for i, (p, (array, _)) in enumerate(zip(params, prepared, strict=True)):
        groups.setdefault((p, tuple(array.shape)), []).append(i)
    return list(groups.values())


@dataclass
class LoadedModel:
    """One multiplexed model version in a replica: its own manifest (class names, image
    size) over a network it may share with other ids (``networks.NetworkShelf``)."""

    model_id: str
    manifest: ModelManifest
    network: Network
    shelf: NetworkShelf
    # Told the id and whether its network went with it (counts LRU evictions).
    on_release: Callable[[str, bool], None] | None = None
    _released: bool = False
    label: str = field(init=False)

    def __post_init__(self) -> None:
        self.label = ModelId.parse(self.model_id).label  # what the tenant sees: model@version

    @property
    def runner(self) -> Runner | None:
        return self.network.runner

    @property
    def engine(self) -> Engine:
        return self.network.engine

    def imgsz(self, params: InferenceParams) -> int:
        """The letterbox side: the request's (within policy), or a static graph's own."""
        fixed = self.runner.fixed_side if self.runner is not None else None
        return fixed or resolve_imgsz(params, self.manifest.imgsz)

    def prepare(self, data: bytes, params: InferenceParams) -> Prepared:
        """Decode and letterbox an upload for this model (blocking: a decode thread)."""
        return self.prepare_keeping_original(data, params)[1]

    def prepare_keeping_original(
        self, data: bytes, params: InferenceParams
    ) -> tuple[Any, Prepared]:
        original = decode_image(data)
        imgsz = self.imgsz(params)
        static = self.runner is not None and self.runner.fixed_side is not None
        return original, letterbox(original, imgsz, imgsz if static else IMGSZ_STRIDE_PX)

    def detect(
        self, prepared: list[Prepared], params: InferenceParams, alone: bool = False
    ) -> list[DetectionResult]:
        """One predict call over letterboxed images of one shape (``group_batch``);
        ``alone``: nothing else waits on this replica (``Runner.predict``)."""
        found = self.predict([array for array, _ in prepared], params, alone)
        return [self._encode(frame, d) for (_, frame), d in zip(prepared, found, strict=True)]

    def _encode(self, frame: Frame, found: np.ndarray) -> DetectionResult:
        return DetectionResult(
            model=self.label,
            image=ImageSize(width=frame.width, height=frame.height),
            detections=encode_detections(
                frame.unscale(found[:, :4].tolist()),
                found[:, 4].tolist(),
                [int(c) for c in found[:, 5].tolist()],
                self.manifest.class_names,
                frame.width,
                frame.height,
            ),
            timing_ms={},
        )

    def predict(
        self, images: list[Any], params: InferenceParams, alone: bool = False
    ) -> list[np.ndarray]:
        """Per image, ``(n, 6)``: ``x1, y1, x2, y2, confidence, class`` in letterboxed px."""
        thresholds = Thresholds(
            conf=params.conf,
            iou=params.iou,
            max_det=params.max_det,
            classes=resolve_classes(params, self.manifest.class_names),
        )
        with self.network.lock:
            runner = self.network.runner
            if runner is None or self._released:
                raise ModelUnavailable(f"model {self.label} was unloaded; retry the request")
            return runner.predict(images, self.imgsz(params), thresholds, alone)

    def __del__(self) -> None:
        # Serve calls __del__ on eviction and the GC may call it again: idempotent.
        if self._released:
            return
        self._released = True
        dropped = self.shelf.release(self.network.key, self.model_id)
        if self.on_release is not None:
            self.on_release(self.model_id, dropped)
        runner = self.network.runner
        if dropped and isinstance(runner, TorchRunner) and runner.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()


def load_model(
    model_id: str,
    source: ModelSource | str,
    settings: StoreSettings | None = None,
    cache: WeightsCache | None = None,
    threads: int | None = None,
    shelf: NetworkShelf | None = None,
    burst: bool = True,
    manifest: ModelManifest | None = None,
) -> LoadedModel:
    """Fetch, verify, build on this hardware's engine and warm up one version (blocking);
    with a ``shelf`` already holding its network, only the manifest is read.

    ``threads``: the replica's inference threads (ONNX Runtime's, or torch's, set again
    after the warm-up because ultralytics' predictor setup resets torch to its own choice,
    cores - 1, for the whole process). ``burst``: also a session for lone images.
    ``manifest``: the version's, when the caller already read it (``fetch_manifest``).
    """
    cache = cache or WeightsCache(default_cache_dir())
    shelf = shelf or NetworkShelf()
    if isinstance(source, str):  # a bare URI: the manifest's digest is checked
        source = ModelSource(uri=source)
    if manifest is None:
        manifest = fetch_manifest(source.uri, settings, source.sha256)
    uri = source.uri

    def build() -> tuple[Runner, Engine]:
        weights = fetch_weights(uri, manifest, settings, cache)
        device, _ = inference_device()
        runner, chosen, _ = engine.build(manifest, weights, device, cache, threads or 1, burst)
        engine.warm_up(runner, manifest)
        if threads is not None:
            # Beside ONNX Runtime (its own pool of ``threads``) torch has nothing to run
            # (NMS is NumPy's): one thread, so that no torch pool spin-waits on a core the
            # graph needs (when torch ran NMS here, its second thread cost +4 ms of CPU per
            # image at 320).
            on_torch = isinstance(runner, TorchRunner)
            set_threads(threads, torch_threads=threads if on_torch else 1)
        return runner, chosen

    network, _ = shelf.acquire(engine.network_key(manifest), model_id, build)
    return LoadedModel(model_id=model_id, manifest=manifest, network=network, shelf=shelf)
