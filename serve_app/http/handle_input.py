"""The Python handle API's arguments, checked like an HTTP request's.

Batch jobs in the cluster call ``Router.detect_image(api_key, image, params)`` (and
``list_models`` / ``usage``) with whatever Python objects they hold. A wrong type must be
a 400 naming the argument and the fix, like a malformed header or query over HTTP, and
never an ``AttributeError`` inside the router (a 500 and a traceback per call). The
parameters become the same strings a query string carries, so both paths share one
parser (``inference.policy``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from serve_app.constants import JWT_MAX_TOKEN_CHARS, MAX_CLASS_TOKENS
from serve_app.errors import BadParameter

MAX_PARAMS = 16  # more than the API has
MAX_PARAM_CHARS = 65536  # one value, as a query string could carry it


def credential(api_key: object) -> str:
    """The API key or token given to a handle call.

    Raises:
        BadParameter: Not a string, or longer than any credential.
    """
    if not isinstance(api_key, str):
        raise BadParameter(
            f"api_key must be a str (the tenant's API key or token), got {_kind(api_key)}"
        )
    if len(api_key) > JWT_MAX_TOKEN_CHARS:
        raise BadParameter(f"api_key is over {JWT_MAX_TOKEN_CHARS} characters")
    return api_key


def image_bytes(image: object) -> bytes:
    """The encoded image given to a handle call.

    Raises:
        BadParameter: Not bytes-like (a path or an array must be encoded by the caller:
            ``DetectionClient`` does it).
    """
    if isinstance(image, bytes):
        return image
    if isinstance(image, bytearray | memoryview):
        return bytes(image)
    raise BadParameter(
        f"image must be the encoded file's bytes (JPEG, PNG, WebP or BMP), got "
        f"{_kind(image)}; DetectionClient.detect also takes a path or an array"
    )


def query(params: object) -> dict[str, str]:
    """``params`` as the query string a request would carry: names to strings; ``None``
    values left out, booleans ``true``/``false``, lists comma-joined (``classes``).

    Raises:
        BadParameter: Not a mapping, too many entries, a name that is not a string, a
            value that is not a str, int, finite float, bool or a list of str/int, or
            ``annotate`` (handles return detections, not pictures).
    """
    if params is None:
        return {}
    if not isinstance(params, Mapping):
        raise BadParameter(f"params must be a dict of detection parameters, got {_kind(params)}")
    if len(params) > MAX_PARAMS:
        raise BadParameter(f"params has over {MAX_PARAMS} entries")
    out: dict[str, str] = {}
    for name, value in params.items():
        if not isinstance(name, str) or not name.isascii() or len(name) > 32:
            raise BadParameter(f"params names must be short ASCII strings, got {_kind(name)}")
        if value is None:
            continue
        text = _value(name, value)
        if len(text) > MAX_PARAM_CHARS:
            raise BadParameter(f"params[{name!r}] is over {MAX_PARAM_CHARS} characters")
        out[name] = text
    if "annotate" in out:
        raise BadParameter(
            "annotate is an HTTP option (POST /v1/detect?annotate=true returns a JPEG); "
            "handles return the detections only"
        )
    return out


def _value(name: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        if abs(value) >= 10**12:
            raise BadParameter(f"params[{name!r}] is out of range")
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise BadParameter(f"params[{name!r}] must be a finite number")
        # Positional notation: the query parser takes digits and a point, no exponent.
        return format(value, ".12f").rstrip("0").rstrip(".") or "0"
    if (
        isinstance(value, list | tuple)
        and len(value) <= MAX_CLASS_TOKENS
        and all(isinstance(v, str | int) and not isinstance(v, bool) for v in value)
    ):
        return ",".join(_value(name, v) for v in value)
    raise BadParameter(
        f"params[{name!r}] must be a str, int, float, bool or a list of names or ids, "
        f"got {_kind(value)}"
    )


def _kind(value: object) -> str:
    return type(value).__name__[:32]
