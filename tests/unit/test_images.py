from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from serve_app.errors import PayloadTooLarge, UndecodableImage, UnsupportedMediaType
from serve_app.inference.images import decode_image, inspect_image, sniff_format
from tests.conftest import png_header_only


def _encode(fmt: str, size=(40, 30), colour=(255, 0, 0)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("fmt", "name"), [("JPEG", "jpeg"), ("PNG", "png"), ("WEBP", "webp"), ("BMP", "bmp")]
)
def test_supported_formats_are_sniffed_and_decoded_to_rgb(fmt, name):
    data = _encode(fmt)
    assert sniff_format(data) == name
    info = inspect_image(data)
    assert (info.width, info.height) == (40, 30)
    array = decode_image(data)
    assert array.shape == (30, 40, 3) and array.dtype == np.uint8
    r, _g, b = array[15, 20].tolist()
    assert r > 200 and b < 60  # red in, red out: channels are RGB


@pytest.mark.parametrize(
    "data", [b"", b"hello world", b"%PDF-1.7 ...", b"GIF89a......", bytes(range(256))]
)
def test_non_images_are_415(data):
    with pytest.raises(UnsupportedMediaType, match="JPEG, PNG"):
        inspect_image(data)


def test_truncated_jpeg_is_422_not_a_grey_picture():
    data = _encode("JPEG", size=(200, 200))
    with pytest.raises(UndecodableImage, match="truncated"):
        decode_image(data[: len(data) // 2])


def test_truncated_png_is_422():
    data = _encode("PNG", size=(200, 200))
    with pytest.raises(UndecodableImage):
        decode_image(data[:60])


def test_garbage_after_magic_bytes_is_422():
    with pytest.raises(UndecodableImage):
        inspect_image(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)


def test_pixel_bomb_is_413_from_the_header_alone():
    with pytest.raises(PayloadTooLarge, match="pixels"):
        inspect_image(png_header_only(100_000, 100_000))


def test_tiny_images_are_422():
    with pytest.raises(UndecodableImage, match="at least"):
        inspect_image(_encode("PNG", size=(4, 4)))


def test_oversized_body_is_413():
    with pytest.raises(PayloadTooLarge, match="limit"):
        inspect_image(b"\xff\xd8\xff" + b"\x00" * (21 * 1024 * 1024))


def test_pixel_limits_are_set_for_pillow_and_opencv_before_decoding():
    import os

    from PIL import Image

    from serve_app.constants import MAX_IMAGE_PIXELS

    assert Image.MAX_IMAGE_PIXELS == MAX_IMAGE_PIXELS
    assert os.environ["CV_IO_MAX_IMAGE_PIXELS"] == str(MAX_IMAGE_PIXELS)


def test_a_bomb_pillow_itself_would_refuse_is_still_a_clear_413():
    import pytest

    from serve_app.errors import PayloadTooLarge
    from serve_app.inference.images import inspect_image
    from tests.conftest import png_header_only

    with pytest.raises(PayloadTooLarge, match="downscale"):
        inspect_image(png_header_only(20_000, 20_000))  # 400 Mpx: 10x the limit


def test_garbage_is_422_even_after_ultralytics_patched_pillow():
    # Detector replicas import ultralytics, which replaces PIL.Image.open with a version
    # that tries to import a HEIF plugin on unidentifiable data (ModuleNotFoundError here).
    import PIL.Image
    import ultralytics.utils.patches  # noqa: F401  (applies the patch)

    assert PIL.Image.open.__module__ == "ultralytics.utils.patches"
    with pytest.raises(UndecodableImage):
        inspect_image(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    with pytest.raises(UndecodableImage):
        decode_image(b"\xff\xd8\xff" + b"\x00" * 64)
