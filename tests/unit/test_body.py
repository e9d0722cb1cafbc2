from __future__ import annotations

import pytest

from serve_app.errors import BadParameter
from serve_app.http.body import image_bytes

IMAGE = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4 + b"\r\n--not-the-boundary\r\n"


def _multipart(field: str, payload: bytes, boundary: str = "XyZ123") -> tuple[bytes, str]:
    body = (
        (
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="note"\r\n\r\n'
            "hello\r\n"
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="{field}"; filename="a.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + payload
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def test_raw_body_is_the_image():
    assert image_bytes(IMAGE, "image/jpeg") == IMAGE
    assert image_bytes(IMAGE, None) == IMAGE


def test_multipart_image_field_is_extracted_byte_exact():
    body, ctype = _multipart("image", IMAGE)
    assert image_bytes(body, ctype) == IMAGE


def test_multipart_without_image_field_names_the_field():
    body, ctype = _multipart("file", IMAGE)
    with pytest.raises(BadParameter, match="'image' field"):
        image_bytes(body, ctype)


def test_empty_body_is_400():
    with pytest.raises(BadParameter, match="empty body"):
        image_bytes(b"", "application/octet-stream")


def test_multipart_boundary_may_be_quoted_and_the_first_image_field_wins():
    body, _ = _multipart("image", IMAGE, boundary="b-1")
    assert image_bytes(body, 'multipart/form-data; boundary="b-1"') == IMAGE


@pytest.mark.parametrize(
    ("body", "ctype", "message"),
    [
        (b"--x\r\n", "multipart/form-data", "boundary"),
        (b"no parts at all", "multipart/form-data; boundary=x", "parsed"),
        (b"--x--\r\n", "multipart/form-data; boundary=x", "'image' field"),
        (b"--x\r\nbroken header line\r\n\r\n", "multipart/form-data; boundary=x", "parsed"),
        (
            b'--x\r\nContent-Disposition: form-data; name="image"\r\n\r\n\r\n--x--\r\n',
            "multipart/form-data; boundary=x",
            "empty",
        ),
    ],
)
def test_malformed_multipart_is_400_naming_the_fix(body, ctype, message):
    with pytest.raises(BadParameter, match=message):
        image_bytes(body, ctype)


def test_a_form_of_many_parts_is_refused_before_it_is_collected():
    part = b'--x\r\nContent-Disposition: form-data; name="f"\r\n\r\nv\r\n'
    with pytest.raises(BadParameter, match="parts"):
        image_bytes(part * 100 + b"--x--\r\n", "multipart/form-data; boundary=x")
