"""``HttpDetectionClient`` against a real local HTTP server scripted to answer like the
router (the platform itself: tests/e2e/serve_run/test_http_client.py): results and typed
errors, retries that honour Retry-After and stop, one reused connection, timeouts."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import httpx
import pytest

from serve_app.client import HttpDetectionClient
from serve_app.errors import Overloaded, QuotaExceeded, Unauthenticated, UnknownModel

RESULT = {"model": "shapes@1", "image": {"width": 4, "height": 3}, "timing_ms": {"total": 1.0},
          "detections": [{"class_id": 0, "class_name": "circle", "confidence": 0.9,
                          "bbox": [0.0, 0.0, 2.0, 2.0]}]}  # fmt: skip


class _Scripted(BaseHTTPRequestHandler):
    """Answers the next scripted (status, headers, body) and records what it got."""

    protocol_version = "HTTP/1.1"  # keep-alive
    script: ClassVar[list[tuple[int, dict[str, str], object]]] = []
    seen: ClassVar[list[dict[str, object]]] = []
    connections: ClassVar[set[int]] = set()
    hold: ClassVar[threading.Event | None] = None  # set: answer; unset: a server that hangs

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        type(self).connections.add(id(self.connection))
        type(self).seen.append({"path": self.path, "auth": self.headers["Authorization"],
                                "body": body, "at": time.monotonic()})  # fmt: skip
        status, headers, payload = self.script.pop(0) if self.script else (200, {}, RESULT)
        if self.hold is not None:
            self.hold.wait(30)  # released when the test ends
        data = json.dumps(payload).encode()
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", **headers}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def server():
    _Scripted.script, _Scripted.seen, _Scripted.connections = [], [], set()
    _Scripted.hold = None
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Scripted)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    if _Scripted.hold is not None:
        _Scripted.hold.set()
    httpd.shutdown()


def _error(code: str, message: str = "fix it") -> dict[str, object]:
    return {"error": {"code": code, "message": message}}


def test_results_over_one_kept_alive_connection(server):
    with HttpDetectionClient(server, "yk_secret") as client:
        results = [client.detect(b"\x89PNG-bytes", conf=0.4, classes=["circle", 2])
                   for _ in range(3)]  # fmt: skip
    assert [r.detections[0].class_name for r in results] == ["circle"] * 3
    assert len(_Scripted.connections) == 1
    first = _Scripted.seen[0]
    assert first["auth"] == "Bearer yk_secret" and first["body"] == b"\x89PNG-bytes"
    assert first["path"] == "/v1/detect?conf=0.4&classes=circle%2C2"
    assert "yk_secret" not in repr(client)


def test_429_and_503_are_tried_again_after_retry_after(server):
    _Scripted.script = [(429, {"Retry-After": "1"}, _error("quota_exceeded")),
                        (503, {"Retry-After": "1"}, _error("overloaded"))]  # fmt: skip
    with HttpDetectionClient(server, "k") as client:
        result = client.detect(b"img")
    assert result.model == "shapes@1" and len(_Scripted.seen) == 3
    gaps = [b["at"] - a["at"] for a, b in zip(_Scripted.seen, _Scripted.seen[1:], strict=False)]
    assert all(gap >= 0.95 for gap in gaps), gaps  # waited as told each time


def test_retries_are_bounded_then_the_typed_error_is_raised(server):
    _Scripted.script = [(503, {"Retry-After": "1"}, _error("overloaded", "restarting"))] * 10
    with HttpDetectionClient(server, "k", retries=2) as client:
        client._sleep = lambda _s: None  # the waiting itself is the test above
        with pytest.raises(Overloaded) as caught:
            client.detect(b"img")
    assert caught.value.message == "restarting" and caught.value.retry_after_s == 1
    assert len(_Scripted.seen) == 3  # the first try and two more


def test_a_retry_after_past_the_waiting_budget_is_not_waited_for(server):
    _Scripted.script = [(429, {"Retry-After": "3600"}, _error("quota_exceeded", "monthly"))]
    started = time.monotonic()
    with HttpDetectionClient(server, "k", max_wait_s=30) as client, pytest.raises(QuotaExceeded):
        client.detect(b"img")
    assert time.monotonic() - started < 5 and len(_Scripted.seen) == 1


@pytest.mark.parametrize(
    ("status", "code", "error"),
    [(401, "unauthenticated", Unauthenticated), (404, "unknown_model", UnknownModel)],
)
def test_client_errors_are_typed_and_not_retried(server, status, code, error):
    _Scripted.script = [(status, {}, _error(code, "the message"))]
    with HttpDetectionClient(server, "k") as client, pytest.raises(error) as caught:
        client.detect(b"img")
    assert caught.value.message == "the message" and len(_Scripted.seen) == 1


def test_a_slow_answer_times_out(server):
    _Scripted.hold = threading.Event()
    with (
        HttpDetectionClient(server, "k", timeout_s=0.3) as client,
        pytest.raises(httpx.TimeoutException),
    ):
        client.detect(b"img")


def test_submit_returns_futures_of_results(server):
    with HttpDetectionClient(server, "k", max_in_flight=4) as client:
        futures = [client.submit(b"img") for _ in range(6)]
        assert [f.result().model for f in futures] == ["shapes@1"] * 6
    assert len(_Scripted.connections) <= 4


def test_a_refused_connection_is_tried_again_then_raised():
    with HttpDetectionClient("http://127.0.0.1:9", "k", retries=2) as client:
        slept: list[float] = []
        client._sleep = slept.append
        with pytest.raises(httpx.ConnectError):
            client.detect(b"img")
    assert slept == [0.25, 0.5]  # backing off between attempts
