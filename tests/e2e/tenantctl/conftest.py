"""A local Ray head started with `ray start --head` (dashboard on loopback), and an
empty registry in a temp folder, for the tenantctl end-to-end tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port

BIN = Path(sys.executable).parent


def _env() -> dict[str, str]:
    env = {
        **os.environ,
        "YOLO_OFFLINE": "1",
        "YOLO_AUTOINSTALL": "false",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    env.pop("RAY_ADDRESS", None)
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


@pytest.fixture(scope="package")
def ray_head():
    dashboard_port, gcs_port = free_port(), free_port()
    # Logical CPUs: replicas reserve fractions, and rolling restarts surge to twice that.
    started = subprocess.run(
        [
            str(BIN / "ray"),
            "start",
            "--head",
            f"--port={gcs_port}",
            "--node-ip-address=127.0.0.1",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard_port}",
            "--include-dashboard=true",
            "--num-cpus=4",
            "--num-gpus=0",
            "--disable-usage-stats",
        ],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert started.returncode == 0, started.stderr[-3000:]
    try:
        yield {"dashboard": f"http://127.0.0.1:{dashboard_port}", "gcs": f"127.0.0.1:{gcs_port}"}
    finally:
        subprocess.run(
            [str(BIN / "ray"), "stop", "--force"],
            env=_env(),
            capture_output=True,
            timeout=120,
            check=False,
        )


@pytest.fixture(scope="package")
def registry(tmp_path_factory, ray_head):
    db = tmp_path_factory.mktemp("registry") / "registry.db"
    http_port = free_port()

    def tenantctl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(BIN / "tenantctl"), "--db", str(db), *args],
            cwd=ROOT,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if check:
            assert proc.returncode == 0, f"tenantctl {' '.join(args)}: {proc.stderr[-2000:]}"
        return proc

    tenantctl("init", "--http-port", str(http_port))
    tenantctl(
        "platform", "set", "--ledger-state-path", str(db.parent / "ledger.db"),
        "--model-store-uri", f"file://{db.parent}/models",
    )  # fmt: skip
    return {"tenantctl": tenantctl, "url": f"http://127.0.0.1:{http_port}", "db": db, **ray_head}
