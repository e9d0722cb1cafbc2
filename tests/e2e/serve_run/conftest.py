"""`serve run configs/serve.local.yaml` as a subprocess, exactly as `make run` runs it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT, wait_for

BASE_URL = "http://127.0.0.1:8000"
SERVE = Path(sys.executable).parent / "serve"
READY_TIMEOUT_S = 300


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture(scope="package")
def served(tmp_path_factory):
    if not _port_free(8000):
        pytest.fail("port 8000 is in use (a `make run` still up?): stop it before the e2e tests")
    log_path = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {
        **os.environ,
        "YOLO_OFFLINE": "1",
        "YOLO_AUTOINSTALL": "false",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    env.pop("RAY_ADDRESS", None)
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [str(SERVE), "run", "configs/serve.local.yaml"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def ready():
        if proc.poll() is not None:
            raise RuntimeError(
                f"serve run exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}"
            )
        return requests.get(f"{BASE_URL}/readyz", timeout=5).status_code == 200

    try:
        try:
            wait_for(ready, READY_TIMEOUT_S, "/readyz to answer 200")
        except RuntimeError as exc:
            pytest.fail(str(exc))
        yield {"url": BASE_URL, "log": log_path, "proc": proc}
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # serve run shuts Serve and its Ray down
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
        subprocess.run(
            [str(Path(sys.executable).parent / "ray"), "stop", "--force"],
            capture_output=True,
            timeout=120,
            check=False,
        )
