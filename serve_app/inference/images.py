"""Image checks: what a client sent, how big it is, and a strict decode.

The router calls ``inspect_image`` (magic bytes and header only: cheap) before
anything crosses a handle; the detector calls ``decode_image``, which refuses
truncated or corrupt files instead of inferring on half a picture. Nothing here
writes or logs image bytes.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from serve_app.constants import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS, MIN_IMAGE_SIDE_PX
from serve_app.errors import PayloadTooLarge, UndecodableImage, UnsupportedMediaType

SUPPORTED = "JPEG, PNG, WebP or BMP"
# Our check runs on the header's dimensions before any pixel is decoded, with a clear
# 413. Pillow's own guard stays on at the same limit as a second line (it raises
# DecompressionBombError from Image.open at twice the limit, mapped to the same 413).
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
_PIL_FORMATS = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP", "bmp": "BMP"}


@dataclass(frozen=True)
class ImageInfo:
    format: str  # jpeg | png | webp | bmp
    width: int
    height: int


def sniff_format(data: bytes) -> str:
    """The image format from magic bytes; anything else is a 415."""
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data.startswith(b"BM"):
        return "bmp"
    raise UnsupportedMediaType(f"body is not a supported image: send {SUPPORTED} bytes")


def check_size(n_bytes: int) -> None:
    if n_bytes > MAX_IMAGE_BYTES:
        raise PayloadTooLarge(
            f"image is {n_bytes} bytes; the limit is {MAX_IMAGE_BYTES} — downscale or recompress it"
        )


def _check_dimensions(width: int, height: int) -> None:
    if width < MIN_IMAGE_SIDE_PX or height < MIN_IMAGE_SIDE_PX:
        raise UndecodableImage(
            f"image is {width}x{height}; each side must be at least {MIN_IMAGE_SIDE_PX} px"
        )
    if width * height > MAX_IMAGE_PIXELS:
        raise PayloadTooLarge(
            f"image is {width}x{height} = {width * height} pixels; the limit is "
            f"{MAX_IMAGE_PIXELS} — downscale it"
        )


def _open(data: bytes, fmt: str) -> Image.Image:
    try:
        with warnings.catch_warnings():
            # Between 1x and 2x the limit Pillow only warns; _check_dimensions refuses.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data), formats=[_PIL_FORMATS[fmt]])
    except Image.DecompressionBombError:
        raise PayloadTooLarge(
            f"image has more than {MAX_IMAGE_PIXELS} pixels — downscale it"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, ImportError) as exc:
        # ImportError: once ultralytics is imported (detector replicas), Image.open is its
        # patch, which answers unidentifiable data by importing a HEIF plugin we do not
        # ship (and, with YOLO_AUTOINSTALL=false, never install): still the client's bad file.
        raise UndecodableImage(
            f"the {fmt.upper()} header could not be read ({type(exc).__name__}); "
            "re-export the image and send the whole file"
        ) from None


def inspect_image(data: bytes) -> ImageInfo:
    """Format and size from the header, without decoding pixels."""
    check_size(len(data))
    fmt = sniff_format(data)
    with _open(data, fmt) as img:
        width, height = img.size
    _check_dimensions(width, height)
    return ImageInfo(format=fmt, width=width, height=height)


def decode_image(data: bytes) -> np.ndarray:
    """Decode to a contiguous RGB ``uint8`` array (what the model's input tensor is built
    from; OpenCV's BGR is made only where OpenCV draws).

    Raises:
        UndecodableImage: Truncated or corrupt data (PIL refuses truncated files
            by default, where OpenCV would fill the missing rows with grey).
    """
    info = inspect_image(data)
    try:
        with _open(data, info.format) as img:
            img.load()
            rgb = img if img.mode == "RGB" else img.convert("RGB")
            return np.asarray(rgb)
    except UndecodableImage:
        raise
    except (OSError, SyntaxError, ValueError) as exc:
        raise UndecodableImage(
            f"the {info.format.upper()} data is truncated or corrupt ({type(exc).__name__}); "
            "send the complete file"
        ) from None
