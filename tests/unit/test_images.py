from __future__ import annotations

import contextlib
import io
import struct
import time
import zlib
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from serve_app.constants import MAX_PNG_CHUNKS
from serve_app.errors import PayloadTooLarge, UndecodableImage, UnsupportedMediaType
from serve_app.inference import images
from serve_app.inference.images import decode_image, inspect_image, sniff_format
from tests.conftest import SAMPLES, png_header_only


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


# ------------------------------------------------------ headers Pillow walks in Python


def _png(width: int = 64, height: int = 48, noise: bool = False) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    image = Image.fromarray(pixels) if noise else Image.new("RGB", (width, height), (200, 30, 30))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (30, 200, 30)).save(buf, format="JPEG")
    return buf.getvalue()


def test_a_png_of_a_million_tiny_chunks_is_refused_at_once():
    """The router reads a PNG's size from its first chunk alone; the detector walks the
    chunks (capped) before Pillow does. Both take well under a second (Pillow alone took
    seconds: a functional bound, not a benchmark)."""
    png = _png()
    ihdr_end = 8 + 25  # signature + IHDR chunk
    body = png[:ihdr_end] + _chunk(b"tEXt", b"k\x00v") * 1_300_000 + png[ihdr_end:]
    started = time.perf_counter()
    assert inspect_image(body) == inspect_image(png)
    with pytest.raises(UndecodableImage, match="chunks; re-export"):
        decode_image(body)
    assert time.perf_counter() - started < 0.5


def test_a_png_without_its_header_chunk_first_is_422():
    png = _png()
    with pytest.raises(UndecodableImage, match="IHDR"):
        inspect_image(png[:8] + _chunk(b"tEXt", b"k\x00v") + png[8:])


def test_a_png_with_a_few_thousand_idat_chunks_still_decodes():
    """What encoders write for big images: the pixel data split in many IDAT chunks."""
    png = _png(128, 128, noise=True)
    ihdr_end = 8 + 25
    chunks, pos = [], ihdr_end
    while pos < len(png):
        (length,) = struct.unpack_from(">I", png, pos)
        chunks.append((png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    idat = b"".join(d for k, d in chunks if k == b"IDAT")
    split = b"".join(_chunk(b"IDAT", idat[i : i + 16]) for i in range(0, len(idat), 16))
    assert 2000 < len(idat) // 16 < MAX_PNG_CHUNKS
    body = png[:ihdr_end] + split + _chunk(b"IEND", b"")
    assert (decode_image(body) == decode_image(png)).all()


@pytest.mark.parametrize(
    "insert",
    [b"\xff\xfe\x00\x03x" * 1000, b"\xff" * 5_000_000 + b"\xfe\x00\x03x"],
    ids=["thousands-of-comments", "fill-bytes"],
)
def test_a_jpeg_of_endless_markers_is_refused_at_once(insert):
    jpeg = _jpeg()
    body = jpeg[:2] + insert + jpeg[2:]
    started = time.perf_counter()
    with pytest.raises(UndecodableImage, match="re-export it"):
        inspect_image(body)
    assert time.perf_counter() - started < 0.5


def test_ordinary_metadata_is_far_inside_the_caps():
    jpeg = _jpeg()
    with_exif = jpeg[:2] + b"\xff\xfe\x00\x03x" * 20 + b"\xff\xff\xff" + jpeg[2:]
    assert inspect_image(with_exif).width == 64


@settings(max_examples=300, deadline=None)
@given(cut=st.integers(min_value=0, max_value=4000), noise=st.binary(min_size=1, max_size=32))
def test_any_damage_to_a_header_is_a_4xx(cut, noise):
    for good in (_png(), _jpeg()):
        damaged = good[: cut % len(good)] + noise + good[cut % len(good) + len(noise) :]
        with contextlib.suppress(UndecodableImage, UnsupportedMediaType, PayloadTooLarge):
            decode_image(damaged)


def _progressive(size=(1200, 1200)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (120, 120, 120)).save(buf, format="JPEG", progressive=True)
    return buf.getvalue()


def test_a_jpeg_of_a_thousand_tiny_scans_is_refused_before_decoding():
    """libjpeg decodes each scan over the whole image: 1,000 copies of a 59-byte scan in
    a 270 KB file took 13.8 s to decode here."""
    jpeg = _progressive()
    last_scan = jpeg.rindex(b"\xff\xda")
    bomb = jpeg[:-2] + jpeg[last_scan:-2] * 1000 + b"\xff\xd9"
    started = time.perf_counter()
    with pytest.raises(UndecodableImage, match=r"has 10\d\d scans, over the 100 allowed"):
        decode_image(bomb)
    assert time.perf_counter() - started < 0.5
    # what encoders write decodes: progressive (10 scans) with a progressive thumbnail
    assert 8 <= jpeg.count(b"\xff\xda") <= 20
    assert decode_image(jpeg).shape == (1200, 1200, 3)


def _bmp(compression: int, rows: bytes, width: int, height: int) -> bytes:
    palette = b"\x00\x00\x00\x00" * 256
    offset = 14 + 40 + len(palette)
    info = struct.pack(
        "<IiiHHIIiiII", 40, width, height, 1, 8, compression, len(rows), 2835, 2835, 256, 0
    )
    return b"BM" + struct.pack("<IHHI", offset + len(rows), 0, 0, offset) + info + palette + rows


def test_run_length_bmp_is_refused_before_pillow_decodes_it_in_python():
    """Pillow decodes RLE8 in Python holding the GIL: 20 MB of one-pixel runs took 2.6 s,
    stalling the detector's event loop for every tenant on the replica."""
    row = b"".join(bytes([1, i % 256]) for i in range(64)) + b"\x00\x00"
    rle = _bmp(1, row * 48 + b"\x00\x01", 64, 48)
    with Image.open(io.BytesIO(rle)) as img:  # a valid file Pillow would decode
        assert img.size == (64, 48)
    for data in (rle, _bmp(2, row * 48 + b"\x00\x01", 64, 48)):
        with pytest.raises(UnsupportedMediaType, match="send an uncompressed BMP"):
            inspect_image(data)
    plain = _bmp(0, bytes(64 * 48), 64, 48)
    assert decode_image(plain).shape == (48, 64, 3)


# --- JPEG decoding: libjpeg-turbo straight to RGB (simplejpeg, strict), Pillow otherwise ---


def _pillow_rgb(data: bytes) -> np.ndarray:
    """What decode_image returned before the fast path: Pillow's pixels, converted to RGB."""
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        return np.asarray(img if img.mode == "RGB" else img.convert("RGB"))


def _noise_jpeg(mode: str = "RGB", **save: object) -> bytes:
    pixels = np.random.default_rng(3).integers(0, 256, (75, 101, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buf, format="JPEG", **save)
    return buf.getvalue()


_ENCODINGS = {
    "baseline 4:2:0": {},
    "4:4:4": {"subsampling": 0},
    "4:2:2": {"subsampling": 1},
    "progressive": {"progressive": True},
    "optimised huffman": {"optimize": True, "quality": 40},
    "restart markers": {"restart_marker_blocks": 2},
}


@pytest.mark.parametrize("save", _ENCODINGS.values(), ids=_ENCODINGS.keys())
@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_the_fast_jpeg_path_gives_pillows_pixels_bit_for_bit(mode, save):
    data = _noise_jpeg(mode, **save)
    info, pil_mode = images._inspect(data)
    fast = images._decode_jpeg_fast(data, info, pil_mode)
    assert fast is not None, "the fast path declined an ordinary JPEG"
    assert fast.shape == (75, 101, 3) and fast.dtype == np.uint8
    assert (fast == _pillow_rgb(data)).all()
    assert (decode_image(data) == fast).all()


def test_the_samples_take_the_fast_path():
    for path in sorted(SAMPLES.glob("*.jpg")):
        data = path.read_bytes()
        info, mode = images._inspect(data)
        assert images._decode_jpeg_fast(data, info, mode) is not None, path.name


def test_cmyk_and_exif_rotated_jpegs_decode_as_pillow_does():
    cmyk = _noise_jpeg("CMYK")
    info, mode = images._inspect(cmyk)
    assert mode == "CMYK" and images._decode_jpeg_fast(cmyk, info, mode) is None
    assert (decode_image(cmyk) == _pillow_rgb(cmyk)).all()
    # EXIF orientation 6 (rotate 90) is not applied, by either decoder: boxes are in the
    # stored pixels, whose size the router reported.
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated = _noise_jpeg(exif=exif.tobytes())
    assert decode_image(rotated).shape == (75, 101, 3)
    assert (decode_image(rotated) == _pillow_rgb(rotated)).all()


def _decoded(data: bytes) -> np.ndarray | None:
    try:
        return decode_image(data)
    except (UndecodableImage, UnsupportedMediaType, PayloadTooLarge):
        return None


@settings(max_examples=400, deadline=None)
@given(
    which=st.sampled_from(sorted(_ENCODINGS)),
    cut=st.integers(min_value=0, max_value=10_000),
    noise=st.binary(max_size=32),
    truncate=st.booleans(),
)
def test_a_damaged_jpeg_is_accepted_or_refused_exactly_as_without_the_fast_path(
    which, cut, noise, truncate
):
    """The fast path only answers when libjpeg decoded without a warning; everything
    else (truncated, corrupt segments, bad markers) is Pillow's call, as before."""
    good = _noise_jpeg(**_ENCODINGS[which])
    at = cut % len(good)
    damaged = good[:at] if truncate else good[:at] + noise + good[at + len(noise) :]
    got = _decoded(damaged)
    with mock.patch.object(images, "_decode_jpeg_fast", return_value=None):
        expected = _decoded(damaged)
    if expected is None:
        assert got is None
    else:
        assert got is not None and got.shape == expected.shape and (got == expected).all()
