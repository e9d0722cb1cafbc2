"""One model version loaded in a replica, and the blocking steps around it.

``load_model`` fetches, verifies, rebuilds and warms up a version; ``LoadedModel``
runs one predict call over images the decode threads have letterboxed (``prepare``),
and ``group_batch`` says which queued requests may share that call. No Ray here: the
``Detector`` deployment runs these in threads.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from serve_app.config import StoreSettings
from serve_app.constants import WARMUP_SIDE_PX
from serve_app.inference.images import decode_image
from serve_app.inference.letterbox import Frame, letterbox
from serve_app.inference.policy import InferenceParams, resolve_classes, resolve_imgsz
from serve_app.inference.results import DetectionResult, ImageSize, encode_detections
from serve_app.models import engine
from serve_app.models.cache import WeightsCache, default_cache_dir
from serve_app.models.engine import Engine
from serve_app.models.loader import inference_device, set_threads
from serve_app.models.manifest import ModelManifest
from serve_app.models.store import fetch_version
from serve_app.wire import ModelId

# A decoded image letterboxed for its model, and how to map boxes back onto it.
Prepared = tuple[Any, Frame]


def prepare(data: bytes, imgsz: int) -> Prepared:
    """Decode and letterbox one upload (blocking; runs beside inference)."""
    return letterbox(decode_image(data), imgsz)


def prepare_keeping_original(data: bytes, imgsz: int) -> tuple[Any, Prepared]:
    original = decode_image(data)
    return original, letterbox(original, imgsz)


def group_batch(params: list[InferenceParams], prepared: list[Prepared]) -> list[list[int]]:
    """Indices of the requests that can share one predict call: same parameters and
    same letterboxed shape, so each gets exactly the result it would have had alone."""
    groups: dict[tuple[InferenceParams, tuple[int, ...]], list[int]] = {}
    for i, (p, (array, _)) in enumerate(zip(params, prepared, strict=True)):
        groups.setdefault((p, tuple(array.shape)), []).append(i)
    return list(groups.values())


@dataclass
class LoadedModel:
    """One multiplexed model version in a replica."""

    model_id: str
    manifest: ModelManifest
    yolo: Any  # ultralytics.YOLO; not thread-safe, hence the lock
    device: str
    half: bool
    engine: Engine  # what runs it here, and why
    lock: threading.Lock = field(default_factory=threading.Lock)
    on_release: Callable[[str], None] | None = None  # counts LRU evictions
    _released: bool = False
    label: str = field(init=False)

    def __post_init__(self) -> None:
        self.label = ModelId.parse(self.model_id).label  # what the tenant sees: model@version

    def imgsz(self, params: InferenceParams) -> int:
        return resolve_imgsz(params, self.manifest.imgsz)

    def detect(self, prepared: list[Prepared], params: InferenceParams) -> list[DetectionResult]:
        """One predict call over letterboxed images of one shape (``group_batch``)."""
        raw = self.predict([array for array, _ in prepared], params)
        return [self._encode(frame, res) for (_, frame), res in zip(prepared, raw, strict=True)]

    def _encode(self, frame: Frame, res: Any) -> DetectionResult:
        boxes = res.boxes
        return DetectionResult(
            model=self.label,
            image=ImageSize(width=frame.width, height=frame.height),
            detections=encode_detections(
                frame.unscale(boxes.xyxy.tolist()),
                boxes.conf.tolist(),
                [int(c) for c in boxes.cls.tolist()],
                self.manifest.class_names,
                frame.width,
                frame.height,
            ),
            timing_ms={},
        )

    def predict(self, images: list[Any], params: InferenceParams) -> list[Any]:
        classes = resolve_classes(params, self.manifest.class_names)
        with self.lock:
            return list(
                self.yolo.predict(
                    images,
                    imgsz=self.imgsz(params),
                    conf=params.conf,
                    iou=params.iou,
                    max_det=params.max_det,
                    classes=classes,
                    device=self.device,
                    half=self.half,
                    verbose=False,
                )
            )

    def __del__(self) -> None:
        # Serve calls __del__ on eviction and the GC may call it again: idempotent.
        if self._released:
            return
        self._released = True
        self.yolo = None
        if self.on_release is not None:
            self.on_release(self.model_id)
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()


def load_model(
    model_id: str,
    uri: str,
    settings: StoreSettings | None = None,
    cache: WeightsCache | None = None,
    threads: int | None = None,
) -> LoadedModel:
    """Fetch, verify, build on this hardware's engine and warm up one version (blocking).

    ``threads``: the replica's inference threads (ONNX Runtime's, and torch's, set again
    after the warm-up because ultralytics' predictor setup resets torch to its own choice,
    cores - 1, for the whole process).
    """
    import numpy as np

    cache = cache or WeightsCache(default_cache_dir())
    fetched = fetch_version(uri, settings, cache)
    device, half = inference_device()
    yolo, chosen, device = engine.build(
        fetched.manifest, fetched.weights, device, cache, threads or 1
    )
    half = half and chosen.name == engine.TORCH  # ONNX graphs fix their own dtype
    model = LoadedModel(
        model_id=model_id,
        manifest=fetched.manifest,
        yolo=yolo,
        device=device,
        half=half,
        engine=chosen,
    )
    # The first predict builds ultralytics' predictor and fuses layers; pay that here.
    warm = np.zeros((WARMUP_SIDE_PX, WARMUP_SIDE_PX, 3), dtype=np.uint8)
    yolo.predict(warm, imgsz=fetched.manifest.imgsz, device=device, half=half, verbose=False)
    if threads is not None:
        set_threads(threads)
    return model
