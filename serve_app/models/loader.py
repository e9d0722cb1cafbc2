"""Rebuild a YOLO network from a trusted YAML and tenant tensors, with no pickle.

The architecture comes from the manifest (allowlisted), the network from the
YAML inside the ultralytics package, and the weights from safetensors, loaded
strictly: a tensor missing, extra or of the wrong shape fails the load.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import serve_app.constants  # noqa: F401  (forces YOLO_OFFLINE before ultralytics loads)
from serve_app.errors import ModelLoadError
from serve_app.models import architectures
from serve_app.models.manifest import ModelManifest

if TYPE_CHECKING:
    from ultralytics import YOLO


def build_yolo(manifest: ModelManifest, weights: bytes) -> YOLO:
    """A ready-to-predict torch ``YOLO`` for verified safetensors ``weights``.

    Raises:
        ModelLoadError: The file cannot be parsed, or its tensors do not fit the
            architecture.
    """
    assert manifest.format == "safetensors"  # ONNX uploads: serve_app.models.engine
    assert manifest.architecture is not None  # the manifest validator guarantees it
    from safetensors import SafetensorError
    from safetensors.torch import load as load_safetensors
    from ultralytics import YOLO
    from ultralytics.nn.tasks import DetectionModel, yaml_model_load

    yaml = architectures.yaml_name(manifest.architecture)
    try:
        state = load_safetensors(weights)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise ModelLoadError(f"weights are not a valid safetensors file: {exc}") from exc
    network = DetectionModel(cfg=yaml_model_load(yaml), nc=len(manifest.class_names), verbose=False)
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        # torch lists every missing/unexpected/mis-shaped tensor; keep the message short.
        first = str(exc).splitlines()[:4]
        raise ModelLoadError(
            f"weights do not fit architecture {manifest.architecture} "
            f"with {len(manifest.class_names)} classes: {' '.join(first)}"
        ) from exc
    network.names = dict(enumerate(manifest.class_names))
    network.eval()
    wrapper = YOLO(yaml, task="detect")
    network.args = wrapper.model.args  # type: ignore[union-attr]
    network.task = "detect"
    wrapper.model = network
    return wrapper


def inference_device() -> tuple[str, bool]:
    """``(device, half)``: the replica's CUDA GPU in half precision if torch sees one."""
    import torch

    if torch.cuda.is_available():
        return "cuda:0", True
    return "cpu", False


def threads_for(reserved_cpus: float) -> int:
    """Intra-op threads for a replica that reserved ``reserved_cpus`` CPUs: the whole CPUs
    it reserved, at least one. Rounding down keeps the replicas of a node from running
    more threads than it has cores (torch would otherwise start one per core of the whole
    machine); measured on 2 cores with the router and proxy beside a 1.5-CPU detector, one
    thread served 28 images/s at 16 concurrent requests and two threads 21.
    """
    return max(1, math.floor(reserved_cpus + 1e-9))


def set_threads(threads: int, torch_threads: int | None = None) -> None:
    """OpenCV's and torch's thread counts (``torch_threads``, default ``threads``), for the
    whole process."""
    import cv2
    import torch

    torch.set_num_threads(torch_threads or threads)
    cv2.setNumThreads(threads)


def match_threads_to_reservation(reserved_cpus: float) -> int:
    """Set torch's and OpenCV's thread counts to what the replica reserved. Ultralytics
    resets torch's whenever it sets up a predictor (each model load): ``load_model`` sets
    them again after its warm-up."""
    threads = threads_for(reserved_cpus)
    set_threads(threads)
    return threads
