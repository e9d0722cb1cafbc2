"""Ray Serve's switches (configs/ray-serve.env, ``constants.RAY_SERVE_ENV``) and
scripts/haproxy_loopback.sh: what `make run` changes in Ray's HAProxy config before HAProxy
starts (binds on this machine only, the client's address forwarded, the PID kept so the
stop can end it)."""

from __future__ import annotations

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
frontend prometheus
    bind :9101
frontend http_frontend
    bind 127.0.0.1:8000
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
    env = {**os.environ, "YOLOSERVE_HAPROXY_BINARY": str(fake), "YOLOSERVE_HAPROXY_PIDS": str(pids)}
    wrapper = str(ROOT / "scripts" / "haproxy_loopback.sh")
    args = ["-db", "-f", str(config), "-sf", "42"]
    run = subprocess.run(["bash", wrapper, *args], env=env, capture_output=True, text=True)
    out = run.stdout.split()
    assert run.returncode == 0, run.stderr
    assert out[1:] == args  # arguments passed through
    assert pids.read_text().split() == [out[0]]  # the PID HAProxy runs as (exec: the same)
    binds = [line.strip() for line in config.read_text().splitlines() if "bind" in line]
    assert binds == ["bind 127.0.0.1:9101", "bind 127.0.0.1:8000", "bind 127.0.0.1:8404"]
    assert "defaults\n    option forwardfor\n    mode http" in config.read_text()
