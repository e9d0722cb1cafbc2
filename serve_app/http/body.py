"""Reading request bodies: bounded while streaming, in memory only.

``read_body`` refuses a body (413) as soon as it is over its limit, whether the
client declared the length or streams it chunked. ``image_bytes`` gets the image out
of it: raw bodies are the image itself; ``multipart/form-data`` is parsed by
python-multipart's push parser with limits on parts and headers, collecting only the
``image`` field in memory (no form parser that spools files to disk: images never
touch a replica's disk).
"""

from __future__ import annotations

import logging

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from serve_app.constants import (
    MAX_BODY_BYTES,
    MAX_FORM_PART_HEADERS,
    MAX_FORM_PARTS,
    MAX_IMAGE_BYTES,
)
from serve_app.errors import BadParameter, PayloadTooLarge, UnsupportedMediaType

# The parser logs each malformed body at WARNING: a client could fill the logs with them.
logging.getLogger("python_multipart").setLevel(logging.ERROR)
MULTIPART = "multipart/form-data"
IMAGE_FIELD = "image"


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The body, refused (413) as soon as it is over ``limit``, declared or streamed."""
    what = "image limit" if limit == MAX_BODY_BYTES else "limit for this call"
    shown = MAX_IMAGE_BYTES if limit == MAX_BODY_BYTES else limit
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body is {declared} bytes; the {what} is {shown}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body is over the {shown}-byte {what}")
        chunks.append(chunk)
    return b"".join(chunks)


def expect_json(content_type: str | None, example: str) -> None:
    """415 unless the body is declared as JSON (a form cannot then be replayed here)."""
    media, _ = parse_options_header(content_type)
    if media.decode("latin-1").lower() != "application/json":
        raise UnsupportedMediaType(
            f"send the body as JSON with Content-Type: application/json, {example}"
        )


def image_bytes(body: bytes, content_type: str | None) -> bytes:
    """The image in ``body``: the body itself, or the ``image`` part of a multipart form."""
    media, options = parse_options_header(content_type)
    if media.decode("latin-1").lower() == MULTIPART:
        return _multipart_image(body, options.get(b"boundary"))
    if not body:
        raise BadParameter(
            "empty body: send the image bytes, or multipart/form-data with an 'image' field"
        )
    return body


class _ImageField:
    """Callbacks for the push parser: keeps the bytes of the ``image`` part only."""

    def __init__(self) -> None:
        self.parts = 0
        self.found: bytearray | None = None
        self._header_field = b""
        self._header_value = b""
        self._in_image = False

    def on_part_begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_FORM_PARTS:
            raise BadParameter(f"multipart body has over {MAX_FORM_PARTS} parts; send the image")
        self._in_image = False

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        if self._header_field.lower() == b"content-disposition":
            _, params = parse_options_header(self._header_value)
            if params.get(b"name") == IMAGE_FIELD.encode() and self.found is None:
                self._in_image = True
                self.found = bytearray()
        self._header_field = self._header_value = b""

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_image and self.found is not None:
            self.found += data[start:end]

    def on_part_end(self) -> None:
        self._in_image = False


def _multipart_image(body: bytes, boundary: bytes | None) -> bytes:
    if not boundary:
        raise BadParameter("multipart body needs a boundary parameter in its Content-Type")
    field = _ImageField()
    callbacks = {
        name: getattr(field, name)
        for name in (
            "on_part_begin",
            "on_header_field",
            "on_header_value",
            "on_header_end",
            "on_part_data",
            "on_part_end",
        )
    }
    try:
        parser = MultipartParser(
            boundary,
            callbacks,  # type: ignore[arg-type]
            max_size=MAX_BODY_BYTES,
            max_header_count=MAX_FORM_PART_HEADERS,
        )
        parser.write(body)
        parser.finalize()
    except MultipartParseError:
        raise BadParameter("multipart body could not be parsed: check the boundary") from None
    if field.found is None:
        raise BadParameter("multipart body has no 'image' field: send the file as image=@photo.jpg")
    if not field.found:
        raise BadParameter("the 'image' field is empty")
    return bytes(field.found)
