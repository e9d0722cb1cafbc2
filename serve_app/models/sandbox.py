"""A tenant's ONNX graph is first loaded and run in a child process with a memory and
time limit; only a graph that passed there is loaded by a serving replica.

ONNX Runtime folds constants and plans memory when it builds a session, and the graph
decides how much: a ``ConstantOfShape`` of a few billion elements (a 300-byte file) or a
``Loop`` of a billion iterations would take a replica's memory (the kernel's OOM killer
then ends the replica and every model and request in it) or its cores for minutes. The
child (``python -m serve_app.models.sandbox``) reads the manifest and the graph on
stdin, limits its own address space to what it needs after its imports plus
``ONNX_LOAD_MAX_BYTES``, builds the session the replica would, checks the class count
and runs one image at the model's size; the parent kills it after
``ONNX_LOAD_TIMEOUT_S``. A pass is remembered per node cache by the graph's digest and
the limits, so only the first load of a graph on a node pays the ~0.5 s.

The graph has already passed ``engine.check_graph`` (no external files, no custom
operators), so the child runs nothing but ONNX Runtime's own kernels.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from serve_app.constants import ONNX_LOAD_MAX_BYTES, ONNX_LOAD_TIMEOUT_S
from serve_app.errors import ModelLoadError
from serve_app.models.manifest import ModelManifest

if TYPE_CHECKING:
    from serve_app.models.cache import WeightsCache

_PROJECT_ROOT = Path(__file__).resolve().parents[2]
_PASSED = b"loaded and ran one image within the limits\n"
# What a child prints on its last line: {"error": "..."} for a graph it could judge.
_OUT_OF_MEMORY = "needed more than {mib} MiB of memory to load and run one image"


def probe(
    manifest: ModelManifest,
    weights: bytes,
    *,
    memory_bytes: int | None = None,
    timeout_s: float | None = None,
) -> None:
    """Load and run ``weights`` in a limited child process (by default within
    ``ONNX_LOAD_MAX_BYTES`` and ``ONNX_LOAD_TIMEOUT_S``).

    Raises:
        ModelLoadError: Over the memory or time limit, or ONNX Runtime refused the
            graph; the message says which, in words for the model's owner.
    """
    memory_bytes = memory_bytes or ONNX_LOAD_MAX_BYTES
    timeout_s = timeout_s or ONNX_LOAD_TIMEOUT_S
    header = {"manifest": manifest.model_dump(mode="json"), "memory": memory_bytes}
    timed_out = (
        f"ONNX model took more than {timeout_s:g} s to load and run one image: "
        "simplify the graph (no huge loops or constants) and upload it again"
    )
    too_big = "ONNX model " + _OUT_OF_MEMORY.format(mib=memory_bytes // 2**20)
    run_limited("serve_app.models.sandbox", header, weights, timeout_s, timed_out, too_big)


def run_limited(
    module: str,
    header: dict[str, Any],
    payload: bytes,
    timeout_s: float,
    timed_out: str,
    out_of_memory: str,
) -> dict[str, Any]:
    """Run ``python -m module`` with ``header`` (a JSON line) and ``payload`` on stdin,
    no environment but what ultralytics needs offline, killed after ``timeout_s``.

    Returns:
        The child's last stdout line, a JSON object, when it exited 0.

    Raises:
        ModelLoadError: ``timed_out``; the child's ``{"error": ...}``; or, killed or
            aborted with nothing said (a failed allocation), ``out_of_memory``.
    """
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(_PROJECT_ROOT),
        "OMP_NUM_THREADS": "1",
        "YOLO_OFFLINE": "1",
        "YOLO_AUTOINSTALL": "false",
    }
    try:
        done = subprocess.run(
            [sys.executable, "-m", module],
            input=json.dumps(header).encode() + b"\n" + payload,
            capture_output=True,
            timeout=timeout_s,
            env=env,
            cwd=_PROJECT_ROOT,
            check=False,
        )
    except subprocess.TimeoutExpired:  # run() has killed the child
        raise ModelLoadError(timed_out) from None
    lines = done.stdout.decode(errors="replace").strip().splitlines()
    try:
        said = json.loads(lines[-1]) if lines else {}
    except ValueError:
        said = {}
    if not isinstance(said, dict):
        said = {}
    if done.returncode == 0:
        return said
    reason = str(said.get("error") or "")
    raise ModelLoadError(reason or out_of_memory)  # killed, or aborted on an allocation


def probed(cache: WeightsCache, manifest: ModelManifest, weights: bytes) -> None:
    """``probe`` once per node cache for this graph, manifest and the limits in force.

    Raises:
        ModelLoadError: As ``probe``; a failure is not remembered (the replica's own
            ``FAILED_LOAD_RETRY_S`` spaces out retries).
    """
    key = f"probe-{manifest.sha256}-{len(manifest.class_names)}-{manifest.imgsz}"
    limits = f"{ONNX_LOAD_MAX_BYTES}-{ONNX_LOAD_TIMEOUT_S:g}"

    def run() -> bytes:
        probe(manifest, weights)
        return _PASSED

    cache.derived(f"{key}-{limits}", run, ".passed")


def read_request() -> tuple[dict[str, Any], bytes]:
    """In a child: the header line and the payload ``run_limited`` sent."""
    header = sys.stdin.buffer.readline()
    return json.loads(header), sys.stdin.buffer.read()


def limit_memory(memory: int) -> None:
    """In a child, after its imports: at most ``memory`` more bytes of address space,
    and no core file."""
    limit = _address_space() + memory
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _address_space() -> int:
    """This process's virtual memory size in bytes (``VmSize``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise OSError("no VmSize in /proc/self/status")


# How ONNX Runtime words an allocation it could not make (its arena, or the C++ runtime).
_ALLOCATION_FAILED = ("bad_alloc", "Failed to allocate", "bfc_arena", "out of memory")


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc``, or what it was raised from, is a failed allocation."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, MemoryError) or any(m in str(seen) for m in _ALLOCATION_FAILED):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _child() -> int:
    """In the child: read, limit, load, run; the verdict is the last line of stdout."""
    import numpy as np  # noqa: F401  (imported before the limit is set)
    import onnxruntime  # noqa: F401

    from serve_app.models import engine
    from serve_app.models.runner import OnnxRunner

    spec, weights = read_request()
    manifest = ModelManifest.model_validate(spec["manifest"])
    memory = int(spec["memory"])
    limit_memory(memory)
    try:
        session = engine.onnx_session(weights, 1)
        engine.check_class_count(session, manifest)
        engine.warm_up(OnnxRunner(session), manifest)
    except Exception as exc:  # ONNX Runtime raises many types for a bad graph
        if out_of_memory(exc):
            text = "ONNX model " + _OUT_OF_MEMORY.format(mib=memory // 2**20)
        elif isinstance(exc, ModelLoadError):
            text = str(exc)
        else:
            text = str(engine.unloadable(exc))
        print(json.dumps({"error": text}))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_child())
