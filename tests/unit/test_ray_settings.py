"""Ray Serve's switches (configs/ray-serve.env, ``constants.RAY_SERVE_ENV``) and
scripts/haproxy_loopback.sh: what `make run` changes in Ray's HAProxy config before HAProxy
starts (binds on this machine only, the client's address forwarded, the PID kept so the
stop can end it)."""

from __future__ import annotations

import json
import os
import subprocess

from serve_app.constants import RAY_SERVE_ENV
from tests.conftest import ROOT


def test_the_env_file_run_local_reads_is_the_one_the_manifest_renders():
    lines = (ROOT / "configs" / "ray-serve.env").read_text().splitlines()
    pairs = dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))
    assert pairs == RAY_SERVE_ENV


RAY_CONFIG = """global
    nbthread 1
defaults
    mode http
    option splice-request
    option splice-response
    errorfile 502 /tmp/haproxy-serve/n1/500.http
    errorfile 503 /tmp/haproxy-serve/n1/500.http
    errorfile 504 /tmp/haproxy-serve/n1/500.http
frontend prometheus
    bind :9101
frontend http_frontend
    bind 127.0.0.1:8000
backend default_backend
    http-request return status 404 content-type text/plain lf-string "Path '%[path]' not found."
backend http-yolo
    server router 127.0.0.1:30000 check
listen stats
  bind *:8404
"""


def test_binds_become_loopback_the_client_is_forwarded_and_the_pid_is_kept(tmp_path):
    config = tmp_path / "haproxy.cfg"
    config.write_text(RAY_CONFIG)
    fake = tmp_path / "haproxy"  # stands in for the real binary: prints what it was given
    fake.write_text('#!/usr/bin/env bash\necho "$$ $*"\n')
    fake.chmod(0o755)
    pids = tmp_path / "pids"
    bufsize = RAY_SERVE_ENV["RAY_SERVE_HAPROXY_TUNE_BUFSIZE"]
    env = {
        **os.environ,
        "YOLOSERVE_HAPROXY_BINARY": str(fake),
        "YOLOSERVE_HAPROXY_PIDS": str(pids),
        "RAY_SERVE_HAPROXY_TUNE_BUFSIZE": bufsize,
        "YOLOSERVE_HAPROXY_UNDERSTUDY": "0",
    }  # fmt: skip  (tested with a real HAProxy below)
    wrapper = str(ROOT / "scripts" / "haproxy_loopback.sh")
    args = ["-db", "-f", str(config), "-sf", "42"]
    run = subprocess.run(["bash", wrapper, *args], env=env, capture_output=True, text=True)
    out = run.stdout.split()
    assert run.returncode == 0, run.stderr
    assert out[1:] == args  # arguments passed through
    assert pids.read_text().split() == [out[0]]  # the PID HAProxy runs as (exec: the same)
    binds = [
        b
        for b in (line.strip() for line in config.read_text().splitlines())
        if b.startswith("bind ")
    ]
    assert binds == ["bind 127.0.0.1:9101", "bind 127.0.0.1:8000", "bind 127.0.0.1:8404"]
    text = config.read_text()
    assert "defaults\n    option forwardfor\n    mode http" in text
    # a dying router's requests can be sent again: a body that fits the buffer is kept
    # whole (waited for, briefly); a bigger declared one goes on at once (the router's 413)
    wait = "http-request wait-for-body time 2s if { req.hdr_val(content-length) le 262144 }"
    assert f"    {wait}\n" in text
    # the client's own X-Forwarded-For and any wild X-Request-Id are dropped first
    # (tests/unit/test_haproxy_understudy.py sends them through a real HAProxy)
    assert "frontend http_frontend\n    http-request del-header x-forwarded-for\n" in text
    assert "http-request del-header x-request-id if" in text
    assert "splice-request" not in text and "option splice-response" in text
    # what HAProxy answers itself: our 503 with Retry-After, not Ray's 500 or a 404
    unavailable = tmp_path / "yoloserve-503.http"
    assert text.count("errorfile 50") == 3 and text.count(str(unavailable)) == 3
    head, body = unavailable.read_bytes().split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 503 ") and b"\r\nRetry-After: 1" in head
    assert json.loads(body)["error"]["code"] == "overloaded"
    assert "retry" in json.loads(body)["error"]["message"]
    long_url = tmp_path / "yoloserve-414.json"
    assert f"return status 414 content-type application/json file {long_url} if" in text
    assert "url,length gt 16384" in json.dumps(text) and json.loads(long_url.read_text())
    assert "status 404" not in text
    assert 'return status 503 content-type application/json hdr Retry-After 1 string "{' in text
