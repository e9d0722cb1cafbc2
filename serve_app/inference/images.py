"""Image checks: what a client sent, how big it is, and a strict decode.

The router calls ``inspect_image`` (magic bytes and header only: cheap) before
anything crosses a handle; the detector calls ``decode_image``, which refuses
truncated or corrupt files instead of inferring on half a picture. Nothing here
writes or logs image bytes.
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass

import numpy as np
import simplejpeg
from PIL import Image

from serve_app.constants import (
    MAX_IMAGE_BYTES,
    MAX_IMAGE_PIXELS,
    MAX_JPEG_FILL_BYTES,
    MAX_JPEG_MARKERS,
    MAX_JPEG_SCANS,
    MAX_PNG_CHUNKS,
    MIN_IMAGE_SIDE_PX,
)
from serve_app.errors import PayloadTooLarge, UndecodableImage, UnsupportedMediaType

SUPPORTED = "JPEG, PNG, WebP or BMP"
# Our check runs on the header's dimensions before any pixel is decoded, with a clear
# 413. Pillow's own guard stays on at the same limit as a second line (it raises
# DecompressionBombError from Image.open at twice the limit, mapped to the same 413).
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
_PIL_FORMATS = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP", "bmp": "BMP"}
_FAST_JPEG_MODES = frozenset({"RGB", "L"})


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


def _png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk, which must come first: a fixed-cost read
    (Pillow walks every chunk up to the image data, in Python)."""
    if len(data) < 24 or data[8:16] != b"\x00\x00\x00\x0dIHDR":
        raise UndecodableImage(
            "the PNG header could not be read (no IHDR chunk first); re-export the image"
        )
    width, height = struct.unpack_from(">II", data, 16)
    return int(width), int(height)


def _check_png_chunks(data: bytes) -> None:
    """Refuse (422) a PNG of more chunks than any encoder writes, before Pillow walks them
    one by one in Python (a PNG of a million tiny chunks took it seconds)."""
    pos, chunks = 8, 0
    while pos + 8 <= len(data):
        chunks += 1
        if chunks > MAX_PNG_CHUNKS:
            raise UndecodableImage(
                f"the PNG has over {MAX_PNG_CHUNKS} chunks; re-export it (any encoder writes "
                "far fewer)"
            )
        (length,) = struct.unpack_from(">I", data, pos)
        if data[pos + 4 : pos + 8] == b"IEND":
            return
        pos += 12 + length


def _check_jpeg_markers(data: bytes) -> None:
    """Refuse (422) a JPEG of more markers before its scan than any encoder writes, or of
    long runs of fill bytes between them: Pillow reads those byte by byte in Python."""
    pos, markers = 2, 0
    while pos + 4 <= len(data) and data[pos] == 0xFF:  # else Pillow refuses the file
        fill_end = pos
        while fill_end < len(data) and data[fill_end] == 0xFF:
            fill_end += 1
            if fill_end - pos > MAX_JPEG_FILL_BYTES:
                raise UndecodableImage(
                    f"the JPEG has a run of over {MAX_JPEG_FILL_BYTES} fill bytes; re-export it"
                )
        markers += 1
        if markers > MAX_JPEG_MARKERS:
            raise UndecodableImage(
                f"the JPEG has over {MAX_JPEG_MARKERS} markers before its image data; "
                "re-export it without the extra metadata"
            )
        if fill_end + 3 > len(data) or data[fill_end] in (0xDA, 0xD9):
            return  # start of scan (or end of image): the rest is entropy-coded, read in C
        (length,) = struct.unpack_from(">H", data, fill_end + 1)
        pos = fill_end + 1 + length


def _check_jpeg_scans(data: bytes) -> None:
    """Refuse (422) a JPEG of more scans than any encoder writes. Entropy-coded data
    stuffs every 0xFF as FF 00, so each FF DA is a start of scan (or sits in metadata,
    which only over-counts: an EXIF thumbnail's own scan, say)."""
    scans = data.count(b"\xff\xda")
    if scans > MAX_JPEG_SCANS:
        raise UndecodableImage(
            f"the JPEG has {scans} scans, over the {MAX_JPEG_SCANS} allowed; re-export it "
            "(baseline, or progressive with the encoder's default scans)"
        )


# BMP compression a client may send: none, bit fields, bit fields with alpha. RLE4/RLE8
# are decoded by Pillow in Python, holding the GIL: 20 MB of one-pixel runs took 2.6 s,
# during which the detector's event loop (every tenant on the replica) stood still.
_BMP_COMPRESSION_OK = frozenset({0, 3, 6})


def _check_bmp_compression(data: bytes) -> None:
    if len(data) < 34:
        return  # too short for a header: Pillow refuses it
    (header_size,) = struct.unpack_from("<I", data, 14)
    if header_size < 40:
        return  # an OS/2 core header: always uncompressed
    (compression,) = struct.unpack_from("<I", data, 30)
    if compression not in _BMP_COMPRESSION_OK:
        raise UnsupportedMediaType(
            "run-length or otherwise compressed BMP is not accepted; send an uncompressed "
            "BMP, or PNG, JPEG or WebP"
        )


def _open(data: bytes, fmt: str) -> Image.Image:
    if fmt == "jpeg":
        _check_jpeg_markers(data)
    elif fmt == "bmp":
        _check_bmp_compression(data)
    try:
        with warnings.catch_warnings():
            # Between 1x and 2x the limit Pillow only warns; _check_dimensions refuses.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data), formats=[_PIL_FORMATS[fmt]])
    except Image.DecompressionBombError:
        raise PayloadTooLarge(
            f"image has more than {MAX_IMAGE_PIXELS} pixels — downscale it"
        ) from None
    except Exception as exc:
        # Whatever Pillow raises on these bytes (UnidentifiedImageError, OSError,
        # SyntaxError, struct.error, IndexError, ...) is the client's bad file, a 422. So
        # is ImportError: once ultralytics is imported (detector replicas), Image.open is
        # its patch, which answers unidentifiable data by importing a HEIF plugin we do
        # not ship (and, with YOLO_AUTOINSTALL=false, never install).
        raise UndecodableImage(
            f"the {fmt.upper()} header could not be read ({type(exc).__name__}); "
            "re-export the image and send the whole file"
        ) from None


def inspect_image(data: bytes) -> ImageInfo:
    """Format and size from the header, without decoding pixels; bounded work whatever
    the bytes (the router calls it on its event loop)."""
    return _inspect(data)[0]


def _inspect(data: bytes) -> tuple[ImageInfo, str]:
    """``inspect_image``, and Pillow's mode for the pixels ("" for PNG, not read)."""
    check_size(len(data))
    fmt = sniff_format(data)
    mode = ""
    if fmt == "png":
        width, height = _png_size(data)
    else:
        with _open(data, fmt) as img:
            width, height = img.size
            mode = img.mode
    _check_dimensions(width, height)
    return ImageInfo(format=fmt, width=width, height=height), mode


def _decode_jpeg_fast(data: bytes, info: ImageInfo, mode: str) -> np.ndarray | None:
    """A YCbCr or greyscale JPEG decoded by libjpeg-turbo straight to an RGB array: the
    same pixels as Pillow's, bit for bit, in ~65 % of its CPU (no file object or chunked
    reads in Python, no 4-byte-per-pixel image to copy out of). Strict: any damage
    libjpeg would only warn about (a truncated file, a corrupt segment) and any other
    mode (CMYK: the conversions differ) return None, and Pillow decides, as before, so
    what is refused and what is accepted do not change. EXIF orientation is ignored, as
    Pillow does: boxes are in the stored pixels."""
    if mode not in _FAST_JPEG_MODES:
        return None
    try:
        array: np.ndarray = simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True)
    except Exception:  # ValueError is what it raises; whatever else it might: Pillow decides
        return None
    if array.shape != (info.height, info.width, 3):
        return None
    return array


def decode_image(data: bytes) -> np.ndarray:
    """Decode to a contiguous RGB ``uint8`` array (what the model's input tensor is built
    from; OpenCV's BGR is made only where OpenCV draws).

    Raises:
        UndecodableImage: Truncated or corrupt data (PIL refuses truncated files
            by default, where OpenCV would fill the missing rows with grey).
    """
    info, mode = _inspect(data)
    if info.format == "png":
        _check_png_chunks(data)
    elif info.format == "jpeg":
        _check_jpeg_scans(data)
        fast = _decode_jpeg_fast(data, info, mode)
        if fast is not None:
            return fast
    try:
        with _open(data, info.format) as img:
            img.load()
            rgb = img if img.mode == "RGB" else img.convert("RGB")
            return np.asarray(rgb)
    except (UndecodableImage, PayloadTooLarge):
        raise
    except Exception as exc:  # anything Pillow raises on the client's bytes: see _open
        raise UndecodableImage(
            f"the {info.format.upper()} data is truncated or corrupt ({type(exc).__name__}); "
            "send the complete file"
        ) from None
