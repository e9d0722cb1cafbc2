"""Hostile request bodies and query strings over HTTP.

Each gets its defined 4xx with a message that names the fix; none gets a 500,
kills a replica or grows a router's memory; and the platform keeps serving.
"""

from __future__ import annotations

import random
import socket
import threading
import zipfile
from io import BytesIO

import pytest

from serve_app.constants import MAX_BODY_BYTES
from tests.conftest import SAMPLES, png_header_only
from tests.platform_app import IMAGE
from tests.security.conftest import assert_no_leak, error_code

JPEG = (SAMPLES / "shapes_04.jpg").read_bytes()


def _zip_bytes() -> bytes:
    buffer = BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("payload.html", "<script>alert(1)</script>")
    return buffer.getvalue()


HOSTILE = {
    "pixel-bomb-50000x50000": (png_header_only(50_000, 50_000), {}, 413, "payload_too_large"),
    "garbage-bytes": (
        bytes(random.Random(5).randrange(256) for _ in range(4096)),
        {},
        415,
        "unsupported_media_type",
    ),
    "empty-body": (b"", {}, 400, "bad_parameter"),
    "truncated-jpeg": (JPEG[: len(JPEG) // 2], {}, 422, "undecodable_image"),
    "jpeg-magic-only": (b"\xff\xd8\xff" + b"\x00" * 64, {}, 422, "undecodable_image"),
    "zeros-labelled-image-jpeg": (
        b"\x00" * 512,
        {"Content-Type": "image/jpeg"},
        415,
        "unsupported_media_type",
    ),
    "html-labelled-image-png": (
        b"<!DOCTYPE html><script>alert(1)</script>",
        {"Content-Type": "image/png"},
        415,
        "unsupported_media_type",
    ),
    "svg-with-script": (
        b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>',
        {"Content-Type": "image/svg+xml"},
        415,
        "unsupported_media_type",
    ),
    "png-magic-then-html": (
        b"\x89PNG\r\n\x1a\n<html><script>alert(1)</script></html>",
        {},
        422,
        "undecodable_image",
    ),
    "zip-renamed": (_zip_bytes(), {"Content-Type": "image/jpeg"}, 415, "unsupported_media_type"),
    "multipart-without-boundary": (
        b"garbage",
        {"Content-Type": "multipart/form-data"},
        400,
        "bad_parameter",
    ),
    "multipart-with-no-image-field": (
        b"--x\r\nContent-Disposition: form-data; name=file\r\n\r\nabc\r\n--x--\r\n",
        {"Content-Type": "multipart/form-data; boundary=x"},
        400,
        "bad_parameter",
    ),
}

ABSURD_QUERIES = [
    {"conf": "nan"},
    {"conf": "7"},
    {"conf": "-1"},
    {"iou": "inf"},
    {"max_det": "0"},
    {"max_det": "9" * 40},
    {"imgsz": "-640"},
    {"imgsz": "1e9"},
    {"version": "-1"},
    {"version": "9" * 20},
    {"classes": "," * 5000},
    {"classes": ",".join(["circle"] * 2000)},
    {"confidence": "0.5"},
    {"model": "x" * 5000},
]


def _replica_pids(context) -> dict[str, set[int]]:
    from serve_app.ray_compat import serve_submission_client

    details = serve_submission_client(f"http://{context.dashboard_url}").get_serve_details()
    deployments = details["applications"]["yolo"]["deployments"]
    return {
        name: {r["pid"] for r in d["replicas"] if r["state"] == "RUNNING"}
        for name, d in deployments.items()
    }


@pytest.fixture(scope="module")
def pids_before(platform):
    return _replica_pids(platform.context)


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_bodies_get_their_4xx(platform, pids_before, case):
    body, headers, status, code = HOSTILE[case]
    response = platform.detect("alpha", data=body, headers=headers)
    assert error_code(response, status) == code
    assert_no_leak(response)


@pytest.mark.parametrize("query", ABSURD_QUERIES, ids=lambda q: next(iter(q)))
def test_absurd_query_values_are_400_or_404(platform, pids_before, query):
    response = platform.detect("alpha", params=query)
    expected = 404 if "model" in query else 400
    assert error_code(response, expected) in {"bad_parameter", "unknown_model"}
    assert_no_leak(response)


def test_content_type_is_ignored_for_a_real_image(platform):
    """Type comes from magic bytes: a JPEG labelled text/plain is still a JPEG."""
    labelled = platform.detect("alpha", data=JPEG, headers={"Content-Type": "text/plain"})
    plain = platform.detect("alpha", data=JPEG)
    assert labelled.status_code == plain.status_code == 200
    assert labelled.json()["detections"] == plain.json()["detections"]


def test_a_polyglot_image_is_only_ever_an_image(platform):
    """A real JPEG with HTML and a ZIP appended: decoded as the JPEG it starts with,
    same detections as the clean file, and the payload is never echoed back."""
    polyglot = JPEG + b"<html><script>alert(1)</script></html>" + _zip_bytes()
    response = platform.detect("alpha", data=polyglot)
    clean = platform.detect("alpha", data=JPEG)
    assert response.status_code == 200
    assert response.json()["detections"] == clean.json()["detections"]
    assert b"script" not in response.content and response.headers["content-type"].startswith(
        "application/json"
    )


def test_a_declared_oversized_body_is_413_before_it_is_read(platform):
    response = platform.detect("alpha", data=b"", headers={"Content-Length": str(10**10)})
    assert error_code(response, 413) == "payload_too_large"


def test_an_oversized_chunked_body_is_counted_while_streaming(platform):
    """No Content-Length to trust: the router counts bytes as they arrive and stops
    at the limit. Sent from one thread while another reads the answer, as a client
    that keeps sending would."""
    host, port = platform.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=60)
    head = (
        "POST /v1/detect HTTP/1.1\r\n"
        f"Host: {host}\r\n"
        f"Authorization: Bearer {platform.keys['alpha']}\r\n"
        "Content-Type: image/jpeg\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    chunk = b"\xff" * (1024 * 1024)
    framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    sent = {"bytes": 0}

    def send() -> None:
        try:
            sock.sendall(head)
            for _ in range(3 * MAX_BODY_BYTES // len(chunk)):
                sock.sendall(framed)
                sent["bytes"] += len(chunk)
            sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server stopped reading: expected once it has answered

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    received = b""
    while b"\r\n\r\n" not in received or not received.rstrip().endswith(b"}"):
        data = sock.recv(65536)
        if not data:
            break
        received += data
    sock.close()
    sender.join(timeout=60)
    status_line = received.split(b"\r\n", 1)[0]
    assert b" 413 " in status_line, received[:300]
    assert b"payload_too_large" in received
    assert sent["bytes"] < 3 * MAX_BODY_BYTES  # refused before the whole stream was taken


def test_after_all_that_no_replica_died_and_memory_stayed_flat(platform, pids_before):
    import psutil

    assert _replica_pids(platform.context) == pids_before
    routers = [psutil.Process(pid) for pid in pids_before["router"]]
    before = [p.memory_info().rss for p in routers]
    for _ in range(5):  # the biggest things a client may send, again
        assert platform.detect("alpha", data=png_header_only(50_000, 50_000)).status_code == 413
        big = b"\xff\xd8\xff" + b"\x00" * (MAX_BODY_BYTES - 70_000)
        assert platform.detect("alpha", data=big).status_code == 422
    after = [p.memory_info().rss for p in routers]
    growth_mb = max(a - b for a, b in zip(after, before, strict=True)) / 2**20
    assert growth_mb < 150, f"a router grew by {growth_mb:.0f} MiB"
    assert platform.detect("alpha", data=IMAGE).status_code == 200
