"""``DetectionClient``: detections from inside the Ray cluster, without HTTP; and
``HttpDetectionClient``, the same calls over HTTP from anywhere.

Batch jobs (a driver, a Ray task, an actor) call the router's Python method
through ``serve.get_app_handle``, under the same API key, tenant identity and
checks as HTTP, and get the same ``DetectionResult`` objects back.

    client = DetectionClient(api_key="yk_...")
    result = client.detect("samples/shapes_00.png", conf=0.4)
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from serve_app.constants import (
    APP_NAME,
    HTTP_CLIENT_MAX_BACKOFF_S,
    HTTP_CLIENT_MAX_IN_FLIGHT,
    HTTP_CLIENT_MAX_WAIT_S,
    HTTP_CLIENT_RETRIES,
    HTTP_CLIENT_TIMEOUT_S,
)
from serve_app.errors import BadParameter, ServeAppError, error_class, unwrap_error
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


class HttpDetectionClient:
    """The same calls as ``DetectionClient`` over HTTP, for callers outside the cluster:

        with HttpDetectionClient("https://detect.example.com", api_key="yk_...") as client:
            result = client.detect("photo.jpg", conf=0.4)

    One keep-alive connection pool (``httpx``), safe to share between threads; a timeout
    per call; 429 and 503 answers are tried again after the ``Retry-After`` they carry,
    at most ``retries`` more times and ``max_wait_s`` of waiting in all (then the typed
    error is raised: ``QuotaExceeded``, ``Overloaded``…), as are connections that could
    not be made (nothing was sent). ``submit`` returns a ``concurrent.futures.Future``,
    as ``DetectionClient.submit`` returns a response with ``.result()``.
    """

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        timeout_s: float = HTTP_CLIENT_TIMEOUT_S,
        retries: int = HTTP_CLIENT_RETRIES,
        max_wait_s: float = HTTP_CLIENT_MAX_WAIT_S,
        max_in_flight: int = HTTP_CLIENT_MAX_IN_FLIGHT,
        verify: bool | str = True,
    ) -> None:
        import httpx

        self._http = httpx.Client(
            base_url=url.rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=timeout_s,
            verify=verify,
            limits=httpx.Limits(max_connections=max_in_flight,
                                max_keepalive_connections=max_in_flight),
        )  # fmt: skip
        self._retries, self._max_wait_s = retries, max_wait_s
        self._max_in_flight = max_in_flight
        self._pool: Any = None
        self._sleep = time.sleep

    def __repr__(self) -> str:  # never show the key
        return f"HttpDetectionClient(url={str(self._http.base_url)!r})"

    def __enter__(self) -> HttpDetectionClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self._http.close()

    def detect(self, image: ImageInput, **params: Any) -> DetectionResult:
        """Detect objects in one image (``POST /v1/detect``)."""
        query = {k: _query_value(v) for k, v in params.items() if v is not None}
        response = self._send("POST", "/v1/detect", content=encode_image(image), params=query)
        return DetectionResult.model_validate_json(response.content)

    def submit(self, image: ImageInput, **params: Any) -> Any:
        """Start one detection on the client's threads; a ``Future`` of its result."""
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(self._max_in_flight, "detect")
        return self._pool.submit(self.detect, image, **params)

    def models(self) -> dict[str, object]:
        """The caller's models (``GET /v1/models``)."""
        out: dict[str, object] = self._send("GET", "/v1/models").json()
        return out

    def usage(self) -> dict[str, object]:
        """The caller's own usage (``GET /v1/usage``)."""
        out: dict[str, object] = self._send("GET", "/v1/usage").json()
        return out

    def _send(self, method: str, path: str, **kwargs: Any) -> Any:
        """The answer, after the retries it earns; a typed error for any 4xx/5xx."""
        import httpx

        waited = 0.0
        for attempt in range(self._retries + 1):
            last = attempt == self._retries
            try:
                response = self._http.request(method, path, **kwargs)
            except (httpx.ConnectError, httpx.ConnectTimeout):
                wait = min(2.0**attempt * 0.25, HTTP_CLIENT_MAX_BACKOFF_S)
                if last or waited + wait > self._max_wait_s:
                    raise
            else:
                if response.is_success:
                    return response
                wait = _retry_after_s(response)
                if (
                    response.status_code not in (429, 503)
                    or last
                    or waited + wait > self._max_wait_s
                ):
                    raise http_error(response)
            self._sleep(wait)
            waited += wait
        raise AssertionError("unreachable: the last attempt returns or raises")


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def _retry_after_s(response: Any) -> float:
    raw = response.headers.get("Retry-After", "")
    return float(raw) if raw.isdigit() else 1.0


def http_error(response: Any) -> ServeAppError:
    """The typed API error of an error answer (v1's ``{"error": {"code", "message"}}``)."""
    code, message = "internal", f"HTTP {response.status_code}"
    try:
        body = response.json()["error"]
        code, message = str(body["code"]), str(body["message"])
    except (ValueError, KeyError, TypeError):
        pass
    cls = error_class(code, response.status_code)
    retry = response.headers.get("Retry-After", "")
    error = cls(message, retry_after_s=int(retry) if retry.isdigit() else None)
    if error.status != response.status_code:  # a status this client does not know
        error.status = response.status_code
    return error
