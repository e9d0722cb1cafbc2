"""Reading request bodies: bounded in size and time, in memory only.

``read_body`` refuses a body (413) as soon as it is over its limit, whether the client
declared the length or streams it chunked, and one that has not arrived whole within
``BODY_READ_TIMEOUT_S`` (408: a client trickling bytes holds a router slot no longer).
``image_bytes`` gets the image out of it: raw bodies are the image itself;
``multipart/form-data`` is read by ``form_field``, which finds part boundaries with
``bytes.find`` (C speed, linear in the body whatever its shape) and gives up after
``MAX_FORM_PARTS`` parts or ``MAX_FORM_PART_HEADERS`` header lines. Python's own and
python-multipart's parsers walk some inputs byte by byte in Python: a crafted 20 MB form
held the router's event loop for seconds. Images never touch a replica's disk.

Every refusal is a 4xx whose message names the fix; nothing here raises anything else
on any input (tests/unit/test_body.py fuzzes it).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence

from starlette.requests import Request

from serve_app.constants import (
    BODY_READ_TIMEOUT_S,
    MAX_BODY_BYTES,
    MAX_CONTENT_TYPE_CHARS,
    MAX_FORM_PART_HEADER_BYTES,
    MAX_FORM_PART_HEADERS,
    MAX_FORM_PARTS,
    MAX_IMAGE_BYTES,
)
from serve_app.errors import BadParameter, PayloadTooLarge, RequestTimeout, UnsupportedMediaType
from serve_app.numerals import is_integer

MULTIPART = "multipart/form-data"
IMAGE_FIELD = "image"
# RFC 2046 §5.1.1: 1 to 70 of these, not ending in a space.
_BOUNDARY = re.compile(rb"[0-9A-Za-z'()+_,./:=? -]{0,69}[0-9A-Za-z'()+_,./:=?-]", re.ASCII)
# A parameter of a header value: name=token or name="quoted" (no escapes in either: a
# browser percent-encodes quotes in field names and file names).
_PARAM = re.compile(rb';[ \t]*([A-Za-z0-9!#$%&\'*+.^_`|~-]+)[ \t]*=[ \t]*("[^"]*"|[^;\s"]*)[ \t]*')
_FORM_HELP = "send the file as image=@photo.jpg (curl -F) or the image bytes as the body"


def single_header(request: Request, name: str) -> str | None:
    """The value of a header that may be given once (two Content-Types are as
    ambiguous as two credentials: which one describes the body?).

    Raises:
        BadParameter: The header is given more than once.
    """
    values = request.headers.getlist(name)
    if len(values) > 1:
        raise BadParameter(f"the {name} header is given {len(values)} times; give it once")
    return values[0] if values else None


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The body, refused (413) as soon as it is over ``limit``, declared or streamed, or
    (408) when it has not arrived whole within ``BODY_READ_TIMEOUT_S``; a compressed
    body (``Content-Encoding`` other than identity) is a 415, not bytes misread."""
    encoding = single_header(request, "content-encoding")
    if encoding is not None and encoding.strip().lower() not in ("", "identity"):
        raise UnsupportedMediaType(
            f"Content-Encoding {encoding[:32]!r} is not accepted; send the body "
            "uncompressed (JPEG, PNG and WebP are compressed already)"
        )
    what = "image limit" if limit == MAX_BODY_BYTES else "limit for this call"
    shown = MAX_IMAGE_BYTES if limit == MAX_BODY_BYTES else limit
    declared = request.headers.get("content-length")
    if declared and is_integer(declared) and int(declared) > limit:
        raise PayloadTooLarge(f"body is {declared} bytes; the {what} is {shown}")
    chunks, size = [], 0
    try:
        async with asyncio.timeout(BODY_READ_TIMEOUT_S):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"body is over the {shown}-byte {what}")
                chunks.append(chunk)
    except TimeoutError:
        raise RequestTimeout(
            f"the body did not arrive within {BODY_READ_TIMEOUT_S:g} s; send it in one go"
        ) from None
    return b"".join(chunks)


def media_type(content_type: str | None) -> tuple[str, dict[bytes, bytes]]:
    """The lower-cased media type and the parameters of a ``Content-Type`` value."""
    if content_type is None:
        return "", {}
    if len(content_type) > MAX_CONTENT_TYPE_CHARS or not content_type.isascii():
        raise BadParameter(
            f"Content-Type must be ASCII and at most {MAX_CONTENT_TYPE_CHARS} characters"
        )
    raw = content_type.encode("ascii")
    kind, _, rest = raw.partition(b";")
    return kind.strip().lower().decode("ascii"), _params(b";" + rest if rest else b"")


def _params(text: bytes) -> dict[bytes, bytes]:
    """``; name=value`` parameters, names lower-cased, quotes removed. Anything that is
    not a parameter, or a parameter given twice (which boundary?), is a 400."""
    params: dict[bytes, bytes] = {}
    pos = 0
    while pos < len(text):
        found = _PARAM.match(text, pos)
        if found is None:
            if not text[pos:].strip(b" \t;"):
                break
            raise BadParameter("a header's parameters could not be read: use name=value; ...")
        name, value = found.group(1).lower(), found.group(2)
        if name in params:
            raise BadParameter(
                f"a header's parameter {name.decode('ascii')[:32]!r} is given twice; give it once"
            )
        params[name] = value[1:-1] if value.startswith(b'"') else value
        pos = found.end()
    return params


def expect_json(content_type: str | None, example: str) -> None:
    """415 unless the body is declared as JSON (a form cannot then be replayed here)."""
    if media_type(content_type)[0] != "application/json":
        raise UnsupportedMediaType(
            f"send the body as JSON with Content-Type: application/json, {example}"
        )


def image_bytes(body: bytes, content_type: str | None) -> bytes:
    """The image in ``body``: the body itself, or the ``image`` part of a multipart form."""
    kind, params = media_type(content_type)
    if kind == MULTIPART:
        image = form_field(body, params.get(b"boundary"), IMAGE_FIELD)
        if not image:
            raise BadParameter("the 'image' field is empty")
        return image
    if not body:
        raise BadParameter(
            "empty body: send the image bytes, or multipart/form-data with an 'image' field"
        )
    return body


def form_field(body: bytes, boundary: bytes | None, name: str) -> bytes:
    """The content of the part named ``name`` of a ``multipart/form-data`` body, its one
    field: another field would be silently ignored (``conf`` sent as a field instead of
    in the query) and a second ``name`` is ambiguous, so either is a 400.

    Raises:
        BadParameter: As ``form_parts``, or no such field.
    """
    only = (
        f"send only the '{name}' field (curl -F {name}=@photo.jpg); detection parameters "
        "go in the query string, e.g. ?conf=0.4"
    )
    found = form_parts(body, boundary, (name,), _FORM_HELP, only).get(name)
    if found is None:
        raise BadParameter(f"multipart body has no '{name}' field: {_FORM_HELP}")
    return found


def form_parts(
    body: bytes,
    boundary: bytes | None,
    names: Sequence[str],
    help_text: str,
    only: str | None = None,
) -> dict[str, bytes]:
    """The parts of a ``multipart/form-data`` body, by name, each of ``names`` at most
    once (``only``: what to say of a part with another name; by default, the names).

    Raises:
        BadParameter: No or a malformed boundary, a malformed or unclosed part, over
            ``MAX_FORM_PARTS`` parts or ``MAX_FORM_PART_HEADERS`` header lines in one,
            a field twice, or a part that is none of ``names``.
    """
    if not boundary or _BOUNDARY.fullmatch(boundary) is None:
        raise BadParameter(
            "multipart body needs a boundary parameter in its Content-Type (1 to 70 "
            f"letters, digits or '()+_,-./:=?); {help_text}"
        )
    only = only or "send only " + ", ".join(f"'{n}'" for n in names)
    delimiter = b"--" + boundary
    if body.startswith(delimiter):
        pos = len(delimiter)
    else:  # a preamble (RFC 2046) ends with the line break before the first delimiter
        first = body.find(b"\r\n" + delimiter)
        if first < 0:
            raise BadParameter(
                f"multipart body could not be parsed: check the boundary; {help_text}"
            )
        pos = first + 2 + len(delimiter)
    found: dict[str, bytes] = {}
    for _ in range(MAX_FORM_PARTS + 1):
        if body.startswith(b"--", pos):  # the close delimiter: done
            break
        line_end = body.find(b"\r\n", pos)
        if line_end < 0 or body[pos:line_end].strip(b" \t"):
            raise BadParameter(
                f"multipart body could not be parsed: check the boundary; {help_text}"
            )
        headers_end = body.find(b"\r\n\r\n", line_end, line_end + MAX_FORM_PART_HEADER_BYTES + 4)
        if headers_end < 0:
            raise BadParameter(
                f"a multipart part's headers are missing their blank line or over "
                f"{MAX_FORM_PART_HEADER_BYTES} bytes; {help_text}"
            )
        part = _part_name(body[line_end + 2 : headers_end + 2])
        name = part.decode("ascii", "replace") if part is not None else None
        if name not in names:
            shown = (
                "a part without a form-data name"
                if part is None
                else f"field {part[:32].decode('ascii', 'replace')!r}"
            )
            raise BadParameter(f"multipart body has {shown}: {only}")
        assert name is not None
        if name in found:
            raise BadParameter(f"multipart body has more than one '{name}' field; send one")
        part_end = body.find(b"\r\n" + delimiter, headers_end + 2)
        if part_end < 0:
            raise BadParameter(f"multipart body is not closed by its boundary; {help_text}")
        # (a delimiter right after the headers: empty)
        found[name] = body[headers_end + 4 : part_end] if part_end > headers_end + 4 else b""
        pos = part_end + 2 + len(delimiter)
    else:
        raise BadParameter(f"multipart body has over {MAX_FORM_PARTS} parts; {help_text}")
    return found


def _part_name(headers: bytes) -> bytes | None:
    """The ``name`` of a part's ``Content-Disposition: form-data``, from its header
    lines (each ending in CRLF)."""
    lines = headers.split(b"\r\n")[:-1]
    if len(lines) > MAX_FORM_PART_HEADERS:
        raise BadParameter(f"a multipart part has over {MAX_FORM_PART_HEADERS} header lines")
    for line in lines:
        field, colon, value = line.partition(b":")
        if not colon or not field or field.strip() != field:
            raise BadParameter(
                f"multipart body could not be parsed: a header line has no name; {_FORM_HELP}"
            )
        if field.lower() == b"content-disposition":
            kind, _, rest = value.strip().partition(b";")
            if kind.strip().lower() != b"form-data":
                return None
            return _params(b";" + rest).get(b"name")
    return None
