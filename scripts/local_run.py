"""`make run` under a program's control: `scripts/run_local.sh CONFIG` in its own process
group, ready when `/readyz` answers 200, stopped as Ctrl-C stops it (SIGINT to the group:
Serve's graceful shutdown, then Ray and HAProxy), by force past ``stop_timeout_s``.

Used by scripts/chaos.py and the e2e tests (tests/e2e/conftest.py), which check what
`stopped_in_time` and the HAProxy survivors say.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import requests

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@dataclass
class LocalRun:
    proc: subprocess.Popen[bytes]
    stopped_in_time: bool = True
    haproxy_survivors: list[int] = field(default_factory=list)


@contextlib.contextmanager
def local_run(
    config: Path,
    base_url: str,
    log_path: Path,
    verify: str | bool = True,
    ready_timeout_s: float = 300,
    stop_timeout_s: float = 90,
    command: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[LocalRun]:
    """Start `make run` with ``config``; yield once ``base_url``/readyz answers 200.

    ``command`` runs instead of `scripts/run_local.sh CONFIG` (docs/tour.md's literal
    `make run`), in ``env`` (default: this process's).

    Raises:
        RuntimeError: The script exited, or did not get ready in time (with its log).
    """
    env = {**(os.environ if env is None else env), "YOLO_OFFLINE": "1", "BIN": str(BIN),
           "YOLO_AUTOINSTALL": "false", "RAY_USAGE_STATS_ENABLED": "0"}  # fmt: skip
    env.pop("RAY_ADDRESS", None)
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            command or ["bash", str(ROOT / "scripts" / "run_local.sh"), str(config)],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    run = LocalRun(proc)
    try:
        deadline = time.monotonic() + ready_timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"serve run exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}"
                )
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{base_url}/readyz", timeout=5, verify=verify).ok:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"/readyz did not answer 200 in {ready_timeout_s:.0f} s")
            time.sleep(0.5)
        yield run
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # serve run stops Serve, the script's trap Ray
            try:
                proc.wait(timeout=stop_timeout_s)
            except subprocess.TimeoutExpired:
                run.stopped_in_time = False  # killed: the script's own stop never ran
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
        subprocess.run([str(BIN / "ray"), "stop", "--force"], capture_output=True, timeout=120,
                       check=False)  # fmt: skip
        # HAProxy outlives `ray stop --force`; run_local.sh must have ended it on its way out.
        for survivor in psutil.process_iter(["name", "status"]):
            # never leave port 8000 taken; a zombie holds no port (the understudy is a
            # daemon: init reaps it, and in a container PID 1 may never do so)
            if survivor.info["name"] == "haproxy" and survivor.info["status"] != "zombie":
                run.haproxy_survivors.append(survivor.pid)
                with contextlib.suppress(psutil.Error):
                    survivor.kill()
