"""Running `scripts/run_local.sh CONFIG` (Ray with metrics on 8080, then `serve run`)
as a subprocess, exactly as `make run` does."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests

from tests.conftest import ROOT, wait_for

BIN = Path(sys.executable).parent
READY_TIMEOUT_S = 300
STOP_TIMEOUT_S = 90


@contextlib.contextmanager
def serve_run(
    config: Path, base_url: str, log_path: Path, verify: str | bool = True
) -> Iterator[subprocess.Popen[bytes]]:
    """Start `serve run config`, wait for /readyz, and stop it (and its Ray) afterwards."""
    env = {
        **os.environ,
        "YOLO_OFFLINE": "1",
        "YOLO_AUTOINSTALL": "false",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    env.pop("RAY_ADDRESS", None)
    env["BIN"] = str(BIN)
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            ["bash", str(ROOT / "scripts" / "run_local.sh"), str(config)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(
                f"serve run exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}"
            )
        return requests.get(f"{base_url}/readyz", timeout=5, verify=verify).status_code == 200

    try:
        try:
            wait_for(ready, READY_TIMEOUT_S, "/readyz to answer 200")
        except RuntimeError as exc:
            pytest.fail(str(exc))
        yield proc
    finally:
        stopped_in_time = True
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # serve run stops Serve, the script's trap Ray
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                stopped_in_time = False  # killed: the script's own stop never ran
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
        subprocess.run(
            [str(BIN / "ray"), "stop", "--force"], capture_output=True, timeout=120, check=False
        )
        # HAProxy outlives `ray stop --force`; run_local.sh must have ended it on its way out.
        left = [p for p in psutil.process_iter(["name"]) if p.info["name"] == "haproxy"]
        for survivor in left:  # never leave port 8000 taken for the next test
            survivor.kill()
        assert stopped_in_time, f"`make run` took over {STOP_TIMEOUT_S} s to stop on Ctrl-C"
        assert not left, f"HAProxy {[p.pid for p in left]} survived the stop of `make run`"
