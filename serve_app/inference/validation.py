"""Validation of a tenant's uploaded version, before any serving replica may load it.

The quota ledger starts ``validate_upload`` as a Ray task in a worker process of its
own (``max_calls=1``: the worker exits after it), and kills it past the upload spec's
``validation_timeout_s``. The task reads the version from the store (the weights must
match the sha256 recorded at upload) and hands them to a child process
(``python -m serve_app.inference.validation``) whose address space is limited to
``validation_memory_bytes`` beyond its imports. The child:

1. checks the format: safetensors that are really a pickle are refused as such (the
   platform never unpickles a tenant's file); an ONNX graph must keep its tensors in
   itself and use only the standard operators (``engine.check_graph``);
2. builds the model (the allowlisted architecture's network with the tensors loaded
   strictly, or an ONNX Runtime session) and checks its outputs against the manifest's
   classes;
3. runs the probe images, timing ``VALIDATION_LATENCY_RUNS`` predicts at the model's
   size, and, with labelled samples, measures mAP50 (``evaluation.py``).

It answers ``{"metrics": {...}}`` or ``{"error": "<reason in the customer's words>"}``.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from typing import Any

from serve_app.constants import IMGSZ_STRIDE_PX, VALIDATION_CPUS, VALIDATION_LATENCY_RUNS
from serve_app.errors import ModelLoadError, ServeAppError
from serve_app.models.manifest import ModelManifest
from serve_app.uploads_spec import UploadsSpec

SAMPLES_FILE = "samples.json"
MAX_SAMPLES_FILE_BYTES = 64 * 1024 * 1024
# How a pickle starts: protocol 2+ opcode, or the zip a torch.save() writes.
_PICKLE_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05", b"PK\x03\x04")
PICKLE_REFUSED = (
    "the weights are a pickled PyTorch checkpoint (.pt), not safetensors: the platform "
    "never loads a tenant's pickle. Convert it on your machine with "
    "`python scripts/convert_weights.py model.pt out/` and upload out/model.safetensors"
)


def check_format(manifest: ModelManifest, weights: bytes) -> None:
    """Refuse weights whose bytes are not the format the manifest says, with the fix.

    Raises:
        ModelLoadError: A pickle, or a file that is no safetensors at all.
    """
    if weights.startswith(_PICKLE_MAGIC):
        raise ModelLoadError(PICKLE_REFUSED)
    if manifest.format == "safetensors":
        size = int.from_bytes(weights[:8], "little") if len(weights) >= 8 else 0
        if not 2 <= size <= len(weights) - 8 or weights[8:9] != b"{":
            raise ModelLoadError(
                "the weights are not a safetensors file (no safetensors header): export "
                "them with scripts/convert_weights.py, or upload an .onnx without an "
                "architecture in the manifest"
            )


def validate_version(
    spec: UploadsSpec, manifest: ModelManifest, weights: bytes, samples: bytes
) -> dict[str, float]:
    """Metrics of a version that passed every check, measured in the limited child.

    Raises:
        ModelLoadError: Why it cannot be served.
    """
    from serve_app.models.sandbox import run_limited

    check_format(manifest, weights)
    header = {
        "manifest": manifest.model_dump(mode="json"),
        "memory": spec.validation_memory_bytes,
        "weights": len(weights),
    }
    said = run_limited(
        "serve_app.inference.validation",
        header,
        weights + samples,
        spec.validation_timeout_s,
        f"the model took more than {spec.validation_timeout_s:g} s to load and run the probe "
        "images: upload a smaller model",
        f"the model needed more than {spec.validation_memory_bytes // 2**20} MiB of memory "
        "to load and run the probe images: upload a smaller model",
    )
    return {str(k): float(v) for k, v in dict(said.get("metrics", {})).items()}


def _remote() -> Any:
    import ray

    @ray.remote(num_cpus=VALIDATION_CPUS, max_calls=1, max_retries=0)
    def validate_upload(spec_json: str, uri: str, sha256: str) -> dict[str, Any]:
        """In its own worker: ``{"metrics": ...}`` or ``{"error": reason}``."""
        from serve_app.blobs import open_store
        from serve_app.models.store import fetch_version

        spec = UploadsSpec.model_validate_json(spec_json)
        try:
            version = fetch_version(uri, spec.store, sha256=sha256)
            store = open_store(uri, spec.store)
            samples = (
                store.read(SAMPLES_FILE, MAX_SAMPLES_FILE_BYTES)
                if SAMPLES_FILE in store.names()
                else b""
            )
            metrics = validate_version(spec, version.manifest, version.weights, samples)
        except ModelLoadError as exc:
            return {"error": str(exc)}
        return {"metrics": {**metrics, "size_bytes": float(version.manifest.size_bytes)}}

    return validate_upload


def start(spec: UploadsSpec, uri: str, sha256: str) -> Any:
    """Start validating the version at ``uri``; the task's ObjectRef."""
    return _remote().remote(spec.model_dump_json(), uri, sha256)


# ---------------------------------------------------------------- the child


def _child() -> int:
    import numpy as np

    import serve_app.constants  # noqa: F401  (YOLO_OFFLINE before ultralytics)
    from serve_app.models import engine
    from serve_app.models.sandbox import limit_memory, out_of_memory, read_request

    spec, payload = read_request()
    manifest = ModelManifest.model_validate(spec["manifest"])
    weights, samples = payload[: spec["weights"]], payload[spec["weights"] :]
    if manifest.format == "safetensors":
        import ultralytics  # noqa: F401  (imported before the limit: its own size)
        from ultralytics.nn.tasks import DetectionModel  # noqa: F401
    limit_memory(int(spec["memory"]))
    try:
        metrics = _measure(manifest, weights, samples, engine, np)
    except Exception as exc:  # torch, ONNX Runtime and Pillow raise many types
        if out_of_memory(exc):
            text = "the model needed more memory than allowed to load and run the probe images"
        elif isinstance(exc, ModelLoadError | ServeAppError):
            text = str(exc)
        else:
            text = str(engine.unloadable(exc))
        print(json.dumps({"error": text}))
        return 1
    print(json.dumps({"metrics": metrics}))
    return 0


def _measure(
    manifest: ModelManifest, weights: bytes, samples: bytes, engine: Any, np: Any
) -> dict[str, float]:
    from serve_app.models.runner import OnnxRunner, Thresholds, TorchRunner

    started = time.perf_counter()
    if manifest.format == "onnx":
        engine.check_graph(weights)
        session = engine.onnx_session(weights, 1)
        engine.check_class_count(session, manifest)
        runner: Any = OnnxRunner(session)
    else:
        from serve_app.models.loader import build_yolo

        runner = TorchRunner(build_yolo(manifest, weights), "cpu", False)
    engine.warm_up(runner, manifest)
    load_s = time.perf_counter() - started
    side = runner.fixed_side or manifest.imgsz
    probe = np.random.default_rng(0).integers(0, 255, (side, side, 3), dtype=np.uint8)
    everything = Thresholds(conf=0.001, iou=0.7, max_det=300, classes=None)
    timings = []
    for _ in range(VALIDATION_LATENCY_RUNS):
        began = time.perf_counter()
        (boxes,) = runner.predict([probe], side, everything)
        timings.append((time.perf_counter() - began) * 1e3)
        if boxes.shape[1:] != (6,) or (
            len(boxes) and boxes[:, 5].max() >= len(manifest.class_names)
        ):
            raise ModelLoadError(
                f"the model's output does not fit the manifest's {len(manifest.class_names)} "
                "classes"
            )
    metrics = {"load_s": round(load_s, 3), "latency_ms": round(statistics.median(timings), 2)}
    if samples:
        metrics["map50"] = round(_map50(runner, manifest, samples, everything, side), 4)
    return metrics


def _map50(
    runner: Any, manifest: ModelManifest, samples: bytes, thresholds: Any, side: int
) -> float:
    from serve_app.inference.images import decode_image
    from serve_app.inference.letterbox import letterbox
    from serve_app.models.evaluation import map50, parse_samples

    names = manifest.class_names
    predictions, labels = [], []
    for image, boxes in parse_samples(samples):
        # a graph of one fixed side takes the full square (a stride of the side)
        stride = side if runner.fixed_side else IMGSZ_STRIDE_PX
        padded, frame = letterbox(decode_image(image), side, stride)
        (found,) = runner.predict([padded], side, thresholds)
        unscaled = frame.unscale(found[:, :4].tolist())
        predictions.append(
            [
                (names[int(c)], float(s), b)
                for b, s, c in zip(unscaled, found[:, 4], found[:, 5], strict=True)
            ]
        )
        labels.append(boxes)
    return map50(predictions, labels)


if __name__ == "__main__":
    sys.exit(_child())
