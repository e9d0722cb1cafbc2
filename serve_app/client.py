"""``DetectionClient``: detections from inside the Ray cluster, without HTTP.

Batch jobs (a driver, a Ray task, an actor) call the router's Python method
through ``serve.get_app_handle``, under the same API key, tenant identity and
checks as HTTP, and get the same ``DetectionResult`` objects back.

    client = DetectionClient(api_key="yk_...")
    result = client.detect("samples/shapes_00.png", conf=0.4)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from serve_app.constants import APP_NAME
from serve_app.errors import BadParameter, unwrap_error
from serve_app.inference.results import DetectionResult
from serve_app.ray_compat import handle_for_blocking_callers

ImageInput = bytes | bytearray | memoryview | str | os.PathLike[str] | np.ndarray


def encode_image(image: ImageInput) -> bytes:
    """Bytes to send for ``image``: encoded bytes as is, a file's contents, or an
    ``HxWx3`` uint8 BGR array (OpenCV's order) encoded losslessly as PNG."""
    if isinstance(image, bytes | bytearray | memoryview):
        return bytes(image)
    if isinstance(image, str | os.PathLike):
        return Path(image).read_bytes()
    if isinstance(image, np.ndarray):
        import cv2

        if image.dtype != np.uint8 or image.ndim not in (2, 3):
            raise BadParameter("arrays must be HxW or HxWx3 uint8 (BGR, as cv2.imread returns)")
        ok, buf = cv2.imencode(".png", image)
        if not ok:
            raise BadParameter("the array could not be encoded as PNG")
        return buf.tobytes()
    raise BadParameter(f"cannot send a {type(image).__name__}: pass bytes, a path or a numpy array")


class DetectionClient:
    """Calls the ``yolo`` application's router by handle with a tenant API key."""

    def __init__(self, api_key: str, app_name: str = APP_NAME) -> None:
        from ray import serve

        self._api_key = api_key
        self._handle = handle_for_blocking_callers(serve.get_app_handle(app_name))

    def __repr__(self) -> str:  # never show the key
        return f"DetectionClient(app={self._handle.deployment_name!r})"

    def submit(self, image: ImageInput, **params: Any) -> Any:
        """Start one detection; returns a ``DeploymentResponse`` (``.result()`` or ``await``)."""
        return self._handle.detect_image.remote(self._api_key, encode_image(image), params)

    def detect(self, image: ImageInput, **params: Any) -> DetectionResult:
        """Detect objects in one image (blocking; not inside a running event loop)."""
        try:
            result: DetectionResult = self.submit(image, **params).result()
        except Exception as exc:
            raise _typed(exc) from None
        return result

    def models(self) -> dict[str, object]:
        """The caller's models, as ``GET /v1/models`` returns them."""
        return self._ask("list_models")

    def usage(self) -> dict[str, object]:
        """The caller's own usage, as ``GET /v1/usage`` returns it."""
        return self._ask("usage")

    def _ask(self, method: str) -> dict[str, object]:
        """A router method that takes only the caller's key, errors typed."""
        try:
            out: dict[str, object] = getattr(self._handle, method).remote(self._api_key).result()
        except Exception as exc:
            raise _typed(exc) from None
        return out


def _typed(exc: Exception) -> Exception:
    """The API error (``Unauthenticated``, ``UnknownModel`` …) behind a Ray error."""
    return unwrap_error(exc) or exc
