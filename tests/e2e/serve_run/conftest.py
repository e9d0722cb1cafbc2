"""`serve run configs/serve.local.yaml` as a subprocess, exactly as `make run` runs it."""

from __future__ import annotations

import socket

import pytest

from tests.conftest import ROOT
from tests.e2e.conftest import serve_run

BASE_URL = "http://127.0.0.1:8000"


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture(scope="package")
def served(tmp_path_factory):
    if not _port_free(8000):
        pytest.fail("port 8000 is in use (a `make run` still up?): stop it before the e2e tests")
    log_path = tmp_path_factory.mktemp("serve") / "serve.log"
    with serve_run(ROOT / "configs" / "serve.local.yaml", BASE_URL, log_path) as proc:
        yield {"url": BASE_URL, "log": log_path, "proc": proc}
