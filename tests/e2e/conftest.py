"""Running `scripts/run_local.sh CONFIG` (Ray with metrics on 8080, then `serve run`)
as a subprocess, exactly as `make run` does."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
from local_run import local_run

READY_TIMEOUT_S = 300
STOP_TIMEOUT_S = 90


@contextlib.contextmanager
def serve_run(
    config: Path, base_url: str, log_path: Path, verify: str | bool = True
) -> Iterator[subprocess.Popen[bytes]]:
    """Start `serve run config`, wait for /readyz, and stop it (and its Ray) afterwards."""
    run = None
    try:
        with local_run(config, base_url, log_path, verify, READY_TIMEOUT_S, STOP_TIMEOUT_S) as run:
            yield run.proc
    except RuntimeError as exc:
        if run is None:  # it never got ready
            pytest.fail(str(exc))
        raise
    finally:
        if run is not None:
            assert run.stopped_in_time, f"`make run` took over {STOP_TIMEOUT_S} s to stop on Ctrl-C"
            assert not run.haproxy_survivors, (
                f"HAProxy {run.haproxy_survivors} survived the stop of `make run`"
            )
