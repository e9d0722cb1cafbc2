"""`make run`'s ingress: HAProxy in front of the router (configs/ray-serve.env), on this
machine only, and what the router must still see through it."""

from __future__ import annotations

import ipaddress
import json
import uuid

import psutil
import requests

from tests.conftest import DEMO_KEY, ROOT, SAMPLES, listening_sockets, wait_for

DIRECT_INGRESS_PORTS = range(30000, 31001)  # the router's own uvicorn (Ray 2.60)


def _listeners() -> list[tuple[str, int, str]]:
    """(address, port, process name) of every listening TCP socket on this machine."""
    found = []
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status != psutil.CONN_LISTEN or conn.pid is None:
            continue
        try:
            name = psutil.Process(conn.pid).name()
        except psutil.Error:
            continue
        found.append((conn.laddr.ip, conn.laddr.port, name))
    return found


def test_haproxy_answers_and_everything_http_listens_on_this_machine_only(served):
    listeners = _listeners()
    # Ray's HAProxy and its understudy (scripts/haproxy_understudy.sh): one socket, both
    [holders] = listening_sockets(8000).values()
    assert sorted(psutil.Process(pid).name() for pid in holders) == ["haproxy", "haproxy"]
    http = [
        (ip, port)
        for ip, port, name in listeners
        if name == "haproxy" or port in DIRECT_INGRESS_PORTS or port == 8000
    ]
    assert len(http) >= 3, http  # the API, HAProxy's stats page and the router's own port
    for ip, port in http:
        assert ipaddress.ip_address(ip.removeprefix("::ffff:")).is_loopback, (ip, port)


def test_request_id_and_client_address_reach_the_audit_log_through_haproxy(served):
    request_id = f"e2e-{uuid.uuid4()}"
    resp = requests.post(
        f"{served['url']}/v1/detect",
        data=(SAMPLES / "shapes_02.jpg").read_bytes(),
        headers={"Authorization": f"Bearer {DEMO_KEY}", "X-Request-Id": request_id},
        timeout=60,
    )
    assert resp.status_code == 200 and resp.headers["X-Request-Id"] == request_id

    def audited() -> dict | None:
        for path in (ROOT / "var" / "audit").glob("api-*.jsonl"):
            for line in path.read_text().splitlines():
                if request_id in line:
                    return json.loads(line)
        return None

    wait_for(lambda: audited() is not None, 30, "the call's audit line")
    line = audited()
    assert line is not None and line["source_ip"] == "127.0.0.1" and line["status"] == 200
    # a forged address and a wild request id do not reach the audit log
    forged = requests.post(
        f"{served['url']}/v1/detect",
        data=(SAMPLES / "shapes_02.jpg").read_bytes(),
        headers={
            "Authorization": f"Bearer {DEMO_KEY}",
            "X-Request-Id": "<img src=x> " + request_id,
            "X-Forwarded-For": "203.0.113.9",
        },
        timeout=60,
    )
    request_id = forged.headers["X-Request-Id"]  # the one Serve made instead
    assert forged.status_code == 200 and "<" not in request_id and len(request_id) <= 64
    wait_for(lambda: audited() is not None, 30, "the forged call's audit line")
    line = audited()
    assert line is not None and line["source_ip"] == "127.0.0.1"
