"""scripts/bench.py's load generator: one keep-alive connection per thread, the body and
headers as given, any status but 200 an error (a refused request is never counted as a
served one)."""

from __future__ import annotations

import http.client
import http.server
import select
import sys
import threading
from collections.abc import Iterator
from typing import ClassVar

import pytest

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import bench


class _Echo(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    seen: ClassVar[list[tuple[str, str, bytes, int]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        port = self.client_address[1]
        self.seen.append((self.path, self.headers.get("Authorization", ""), body, port))
        if self.path.startswith("/hang-up"):  # the request read, no answer, the socket closed
            self.close_connection = True
            return
        status = 429 if self.path.startswith("/refuse") else 200
        reply = b"no" if status != 200 else body[::-1]
        self.send_response(status)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)
        if self.path.startswith("/then-drop"):  # as an idle keep-alive timeout would, unsaid
            self.close_connection = True

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    _Echo.seen = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_posts_go_over_one_kept_alive_connection_with_their_query_and_headers(server):
    local = threading.local()
    first = bench.post(local, f"{server}/v1/detect?imgsz=320", b"abc", {"Authorization": "B k"})
    second = bench.post(local, f"{server}/v1/detect", b"xyz", {})
    assert (first, second) == (b"cba", b"zyx")
    [(path1, auth1, body1, port1), (path2, auth2, body2, port2)] = _Echo.seen
    assert (path1, auth1, body1) == ("/v1/detect?imgsz=320", "B k", b"abc")
    assert (path2, auth2, body2) == ("/v1/detect", "", b"xyz")
    assert port1 == port2  # the same client socket: the connection was reused


def test_a_refused_request_raises_with_its_status(server):
    with pytest.raises(RuntimeError, match="429"):
        bench.post(threading.local(), f"{server}/refuse", b"abc", {})


def test_each_thread_has_its_own_connection(server):
    local = threading.local()
    bench.post(local, f"{server}/a", b"1", {})
    worker = threading.Thread(target=bench.post, args=(local, f"{server}/b", b"2", {}))
    worker.start()
    worker.join()
    assert len({port for *_, port in _Echo.seen}) == 2


def test_a_connection_the_server_closed_while_idle_is_replaced_before_sending(server):
    local = threading.local()
    bench.post(local, f"{server}/then-drop", b"1", {})
    assert select.select([local.conn.sock], [], [], 10)[0]  # the server's close arrived
    assert bench.post(local, f"{server}/b", b"2", {}) == b"2"
    assert len({port for *_, port in _Echo.seen}) == 2


def test_a_request_that_failed_halfway_leaves_no_broken_connection_behind(server):
    local = threading.local()
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        bench.post(local, f"{server}/hang-up", b"1", {})
    assert bench.post(local, f"{server}/b", b"2", {}) == b"2"


def test_a_refused_connection_is_retried_fresh_once_the_server_is_up():
    # What `_wait` does while a server starts: the first tries are refused mid-request.
    port = bench._free_port()
    local = threading.local()
    with pytest.raises(ConnectionRefusedError):
        bench.post(local, f"http://127.0.0.1:{port}/a", b"1", {})
    _Echo.seen = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Echo)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:  # was: CannotSendRequest('Request-sent'), forever
        assert bench.post(local, f"http://127.0.0.1:{port}/b", b"2", {}) == b"2"
    finally:
        httpd.shutdown()


def test_connections_are_kept_across_threads_that_come_and_go(server):
    connections = bench.Connections()
    for block in range(3):  # each block its own threads, as bench_rounds.run_block starts
        workers = [
            threading.Thread(target=connections.post, args=(f"{server}/{block}", b"x", {}))
            for _ in range(2)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    assert len(_Echo.seen) == 6
    assert len({port for *_, port in _Echo.seen}) <= 2  # never more than were in use at once
