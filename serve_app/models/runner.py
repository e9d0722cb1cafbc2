"""What turns letterboxed images into boxes on one engine: ``OnnxRunner`` or ``TorchRunner``.

Both take a list of RGB ``uint8`` images of one letterboxed shape (``inference.letterbox``)
and return, per image, an ``(n, 6)`` float array of ``x1, y1, x2, y2, confidence, class``
in letterboxed pixels, after the same non-maximum suppression (ultralytics' own function
for torch, its NumPy twin ``models.nms`` for ONNX Runtime).

``OnnxRunner`` calls the ONNX Runtime session directly: one ``transpose``/``divide`` into
the input tensor, ``session.run``, NMS in NumPy. Ultralytics' predictor around the same session
spent ~4 ms of Python per call here (its own letterbox pass, tensor conversions, a
``Results`` object per image) on top of ~21 ms in the graph; what the predictor adds
for a pre-letterboxed image is the identity, so the boxes are the same
(``tests/unit/test_engine.py`` compares them). ``TorchRunner`` keeps ultralytics'
``predict`` (GPU, fp16, or the operator's ``YOLOSERVE_CPU_ENGINE=torch``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

import serve_app.constants  # noqa: F401  (forces YOLO_OFFLINE before ultralytics loads)
from serve_app.errors import ModelLoadError
from serve_app.models.nms import suppress

if TYPE_CHECKING:
    from ultralytics import YOLO


@dataclass(frozen=True)
class Thresholds:
    """What NMS keeps: confidence and IoU thresholds, a cap, and the class ids (None: all)."""

    conf: float
    iou: float
    max_det: int
    classes: list[int] | None


class Runner(Protocol):
    # The square input side a static graph was exported at (images are letterboxed to
    # exactly that square); None when the engine takes any stride-aligned rectangle.
    fixed_side: int | None
    # The most images one call should get (None: the replica's batch setting decides).
    largest_batch: int | None

    def footprint(self) -> int:
        """Bytes the network keeps in memory (its weights, per session or device copy)."""
        ...

    def predict(
        self, images: list[np.ndarray], imgsz: int, thresholds: Thresholds, alone: bool = False
    ) -> list[np.ndarray]: ...


def _suppress(raw: np.ndarray, thresholds: Thresholds) -> list[np.ndarray]:
    """NMS in NumPy (``models.nms``: ultralytics' boxes without its torch round trip)."""
    return suppress(raw, thresholds.conf, thresholds.iou, thresholds.classes, thresholds.max_det)


def input_tensor(images: list[np.ndarray]) -> np.ndarray:
    """RGB ``uint8`` HWC images of one shape -> the float32 NCHW batch in [0, 1] the graph
    takes (a division, not a multiplication by 1/255: bit-equal to ultralytics')."""
    batch = np.stack(images) if len(images) > 1 else images[0][None]
    tensor = np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32)
    np.divide(tensor, np.float32(255), out=tensor)
    return tensor


@dataclass
class OnnxRunner:
    """An ONNX Runtime session (thread-safe) and the input it takes.

    Graphs exported with ``dynamic=True`` (what CPU replicas compile) take any batch and
    stride-aligned size; a tenant's static export takes exactly its square (``fixed_side``)
    and, with a fixed batch dimension, one image per run.

    Raises:
        ModelLoadError: The input is not ``(batch, 3, height, width)`` with a square or
            dynamic image size.
    """

    session: Any
    burst: Any = None  # the same graph on more threads, for a lone image on an idle replica
    graph_bytes: int = 0  # the graph's size: what each session keeps of it in memory
    fixed_side: int | None = field(init=False)
    one_at_a_time: bool = field(init=False)
    largest_batch: int | None = field(init=False)

    def __post_init__(self) -> None:
        graph_input = self.session.get_inputs()[0]
        self.input_name = graph_input.name
        self.output_name = self.session.get_outputs()[0].name
        shape = list(graph_input.shape)
        fixed = [d if isinstance(d, int) else None for d in shape]
        if len(shape) != 4 or fixed[1] not in (3, None):
            raise ModelLoadError(
                f"ONNX model input is {shape}; export an image model: (batch, 3, height, width)"
            )
        height, width = fixed[2], fixed[3]
        if height != width and None not in (height, width):
            raise ModelLoadError(
                f"ONNX model input is {height}x{width}; export with a square imgsz or dynamic=True"
            )
        self.fixed_side = height if height is not None and width is not None else None
        self.one_at_a_time = fixed[0] is not None
        # On one thread a batch costs more CPU per image than single images (measured at
        # 320: 19.9 ms at batch 1, 23.1 at 4, 21.5 at 16) and delays the first caller;
        # with more threads batches fill them (2 threads: 62 images/s at 1, 75 at 16).
        threads = self.session.get_session_options().intra_op_num_threads
        self.largest_batch = 1 if self.one_at_a_time or threads == 1 else None

    def footprint(self) -> int:
        # Measured: a nano graph of 12 MB adds ~11 MiB per session once its activations
        # come from the shared arena (engine._shared_arena).
        return self.graph_bytes * (2 if self.burst is not None else 1)

    def predict(
        self, images: list[np.ndarray], imgsz: int, thresholds: Thresholds, alone: bool = False
    ) -> list[np.ndarray]:
        """``alone``: the replica has nothing else to do, so a lone image may use the
        burst session's threads."""
        session = self.burst if alone and len(images) == 1 and self.burst else self.session
        batches = [[image] for image in images] if self.one_at_a_time else [images]
        out: list[np.ndarray] = []
        for batch in batches:
            feed = {self.input_name: input_tensor(batch)}
            out += _suppress(session.run([self.output_name], feed)[0], thresholds)
        return out


@dataclass
class TorchRunner:
    """Ultralytics' predictor on the torch network (not thread-safe: callers hold a lock)."""

    yolo: YOLO
    device: str
    half: bool
    fixed_side: int | None = None
    largest_batch: int | None = None

    def footprint(self) -> int:
        network = self.yolo.model
        tensors = [*network.parameters(), *network.buffers()]  # type: ignore[union-attr]
        return sum(t.numel() * t.element_size() for t in tensors)

    def predict(
        self, images: list[np.ndarray], imgsz: int, thresholds: Thresholds, alone: bool = False
    ) -> list[np.ndarray]:
        results = self.yolo.predict(
            [image[..., ::-1] for image in images],  # ultralytics takes OpenCV's BGR
            imgsz=imgsz,
            conf=thresholds.conf,
            iou=thresholds.iou,
            max_det=thresholds.max_det,
            classes=thresholds.classes,
            device=self.device,
            half=self.half,
            verbose=False,
        )
        return [r.boxes.data.float().cpu().numpy() for r in results]
