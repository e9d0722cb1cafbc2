from __future__ import annotations

import contextlib
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serve_app.constants import MAX_FORM_PARTS
from serve_app.errors import BadParameter, UnsupportedMediaType
from serve_app.http.body import image_bytes

IMAGE = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4 + b"\r\n--not-the-boundary\r\n"


def _multipart(
    field: str, payload: bytes, boundary: str = "XyZ123", note: bool = False
) -> tuple[bytes, str]:
    body = (
        (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="note"\r\n\r\nhello\r\n'
                if note
                else ""
            )
            + f"--{boundary}\r\n"
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
    with pytest.raises(BadParameter, match="field 'file': send only the 'image' field"):
        image_bytes(body, ctype)


def test_a_form_field_besides_the_image_is_refused_not_ignored():
    """``conf`` sent as a field would otherwise be silently ignored."""
    body, ctype = _multipart("image", IMAGE, note=True)
    with pytest.raises(BadParameter, match=r"field 'note'.*query string, e\.g\. \?conf=0\.4"):
        image_bytes(body, ctype)


def test_two_image_fields_are_ambiguous():
    part = b'--x\r\nContent-Disposition: form-data; name="image"\r\n\r\n' + IMAGE + b"\r\n"
    twice, ctype = part * 2 + b"--x--\r\n", "multipart/form-data; boundary=x"
    assert image_bytes(part + b"--x--\r\n", ctype) == IMAGE
    with pytest.raises(BadParameter, match="more than one 'image' field; send one"):
        image_bytes(twice, ctype)


def test_a_parameter_given_twice_is_ambiguous():
    body, _ = _multipart("image", IMAGE, boundary="b1")
    with pytest.raises(BadParameter, match="'boundary' is given twice"):
        image_bytes(body, "multipart/form-data; boundary=b1; boundary=b2")


def test_empty_body_is_400():
    with pytest.raises(BadParameter, match="empty body"):
        image_bytes(b"", "application/octet-stream")


def test_multipart_boundary_may_be_quoted():
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
    part = b'--x\r\nContent-Disposition: form-data; name="image"\r\n\r\nv\r\n'
    with pytest.raises(BadParameter, match="more than one 'image'"):
        image_bytes(part * 100_000 + b"--x--\r\n", "multipart/form-data; boundary=x")


# --------------------------------------------------------------- hostile bodies

FORM = "multipart/form-data; boundary=x"


@pytest.mark.parametrize(
    ("body", "ctype", "message"),
    [
        (b"--x\r\n" + b"H: v\r\n" * 9 + b"\r\nimg\r\n--x--", FORM, "over 8 header lines"),
        (b"--x\r\n" + b"H: " + b"v" * 9000 + b"\r\n\r\nimg\r\n--x--", FORM, "over 8192 bytes"),
        (b'--x\r\nContent-Disposition: form-data; name="image"\r\n\r\nimg', FORM, "not closed"),
        (b"--x junk\r\n\r\nimg\r\n--x--", FORM, "parsed"),
        (b"", "multipart/form-data; boundary=" + "b" * 71, "boundary"),
        (b"", "multipart/form-data; boundary=\u00e9", "ASCII"),
        (b"", "multipart/form-data; boundary*=utf-8''%ff", "boundary"),
        (b"", "multipart/form-data; boundary", "parameters"),
        (b"", "multipart/form-data; " + "a=b;" * 400, "at most 1024"),
    ],
)
def test_hostile_forms_are_400s_naming_the_fix(body, ctype, message):
    with pytest.raises(BadParameter, match=message):
        image_bytes(body, ctype)


def test_nested_multipart_is_not_walked_into():
    """A part that is itself multipart is just bytes: only the top level is read."""
    inner = b"--y\r\nContent-Type: multipart/mixed; boundary=z\r\n\r\n" * 2000
    head = b'--x\r\nContent-Disposition: form-data; name="image"\r\n'
    body = head + b"Content-Type: multipart/mixed; boundary=y\r\n\r\n" + inner + b"\r\n--x--"
    assert image_bytes(body, FORM) == inner


@pytest.mark.parametrize(
    "body",
    [
        b"\r\n--x" * 4_000_000,  # near-delimiters everywhere (16 MB)
        b"--x\r\n\r\n" * 2_000_000,  # as many tiny parts as fit
        b"--x\r\n" + b"\r\n" * 8_000_000,
        b"-" * 16_000_000,
        b"--x\r\n" + b"a:" * 6_000_000,
    ],
    ids=["near-delimiters", "tiny-parts", "blank-lines", "dashes", "colons"],
)
def test_a_crafted_form_costs_linear_c_speed_work(body):
    """What held the event loop for seconds: each such body is refused (or read) in well
    under a second (the bound is generous: a functional check, not a benchmark)."""
    started = time.perf_counter()
    with contextlib.suppress(BadParameter):
        image_bytes(body, FORM)
    assert time.perf_counter() - started < 1.0


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    parts=st.lists(
        st.tuples(
            st.sampled_from(["image", "note", "IMAGE", "file", 'ima"ge']),
            st.binary(max_size=64),
            st.lists(st.sampled_from([b"Content-Type: image/jpeg", b"X-A: 1", b"x"]), max_size=3),
        ),
        max_size=20,
    ),
    boundary=st.from_regex(r"[0-9A-Za-z'()+_,./:=?-]{1,70}", fullmatch=True),
    preamble=st.binary(max_size=8),
    noise=st.binary(max_size=16),
    cut=st.integers(min_value=0, max_value=4096),
)
def test_any_form_gets_its_image_field_or_a_400(parts, boundary, preamble, noise, cut):
    delimiter = b"--" + boundary.encode()
    body = (preamble + b"\r\n" if preamble else b"") + b"".join(
        delimiter + b"\r\n"
        + b"".join(h + b"\r\n" for h in headers)
        + f'Content-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        + content + b"\r\n"
        for name, content, headers in parts
    ) + delimiter + b"--\r\n"  # fmt: skip
    ctype = f'multipart/form-data; boundary="{boundary}"'
    only = parts[0] if len(parts) == 1 and parts[0][0] == "image" else None
    well_formed = (
        len(parts) <= MAX_FORM_PARTS
        and all(
            delimiter not in content and b"x" not in headers and '"' not in name
            for name, content, headers in parts
        )
        and delimiter not in preamble
    )
    if well_formed and only is not None and only[1]:
        assert image_bytes(body, ctype) == only[1]
    elif well_formed:  # no image field, an empty one, two, or another field
        with pytest.raises(BadParameter, match="'image'"):
            image_bytes(body, ctype)
    # and whatever the damage, only a 400
    for broken in (body[:cut] + noise + body[cut:], body[: len(body) - cut % max(len(body), 1)]):
        with contextlib.suppress(BadParameter):
            image_bytes(broken, ctype)


@settings(max_examples=300, deadline=None)
@given(ctype=st.text(max_size=200), body=st.binary(max_size=256))
def test_any_content_type_and_body_is_the_image_or_a_4xx(ctype, body):
    with contextlib.suppress(BadParameter, UnsupportedMediaType):
        image_bytes(body, ctype)
