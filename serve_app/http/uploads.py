"""Getting the image bytes out of a request body, in memory only.

Raw bodies are the image itself. ``multipart/form-data`` bodies are parsed with
the standard library's email parser rather than a form parser that spools large
files to disk: images must never touch a replica's disk.
"""

from __future__ import annotations

from email.message import Message
from email.parser import BytesParser
from email.policy import HTTP

from serve_app.errors import BadParameter

MULTIPART = "multipart/form-data"
IMAGE_FIELD = "image"


def image_bytes(body: bytes, content_type: str | None) -> bytes:
    """The image in ``body``: the body itself, or the ``image`` part of a multipart form."""
    if content_type and content_type.split(";", 1)[0].strip().lower() == MULTIPART:
        return _multipart_image(body, content_type)
    if not body:
        raise BadParameter(
            "empty body: send the image bytes, or multipart/form-data with an 'image' field"
        )
    return body


def _multipart_image(body: bytes, content_type: str) -> bytes:
    header = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1")
    message = BytesParser(policy=HTTP).parsebytes(header + body)
    if not message.is_multipart():
        raise BadParameter("multipart body could not be parsed: check the boundary parameter")
    for part in message.iter_parts():  # type: ignore[attr-defined]
        if _field_name(part) == IMAGE_FIELD:
            payload = part.get_payload(decode=True)
            if not isinstance(payload, bytes) or not payload:
                raise BadParameter("the 'image' field is empty")
            return payload
    raise BadParameter("multipart body has no 'image' field: send the file as image=@photo.jpg")


def _field_name(part: Message) -> str | None:
    disposition = part.get("Content-Disposition")
    if disposition is None:
        return None
    name = part.get_param("name", header="content-disposition")
    return name if isinstance(name, str) else None
