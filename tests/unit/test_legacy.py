"""Rolling upgrades across the sub-package move (``serve_app/legacy.py``): every object a
replica sends another pickles under module paths the previous, flat release has, and a
fresh process reads pickles that name those paths."""

from __future__ import annotations

import pickle
import re
import subprocess
import sys
import time

import pytest
from ray import cloudpickle

from serve_app.config import Quota
from serve_app.errors import (
    BadParameter,
    ModelUnavailable,
    Overloaded,
    QuotaExceeded,
    UndecodableImage,
    UnknownModel,
)
from serve_app.inference.policy import InferenceParams
from serve_app.inference.results import Annotated, Detection, DetectionResult, ImageSize
from serve_app.quota.gcra import Decision
from serve_app.quota.usage import Settlement, UsageMeter
from serve_app.wire import TenantDefaults
from tests.conftest import ROOT

# The flat release's modules (git show 4d4b0c7:serve_app/): what an old replica can import.
FLAT_RELEASE = frozenset(
    "serve_app." + name
    for name in (
        "admission",
        "annotate",
        "app",
        "architectures",
        "audit",
        "auth",
        "batcher",
        "client",
        "config",
        "config_file",
        "console",
        "constants",
        "detector",
        "errors",
        "images",
        "jwks",
        "jwt_auth",
        "ledger",
        "ledger_store",
        "letterbox",
        "load_status",
        "manifest",
        "model_cache",
        "model_loader",
        "model_store",
        "policy",
        "preferences",
        "quota",
        "results",
        "router",
        "settlement",
        "telemetry",
        "tenants",
        "uploads",
        "usage",
    )
)


def _result() -> DetectionResult:
    box = Detection(class_id=1, class_name="square", confidence=0.9, bbox=[1.0, 2.0, 3.0, 4.0])
    return DetectionResult(
        model="shapes@1", image=ImageSize(width=8, height=9), detections=[box], timing_ms={}
    )


def _settlement() -> Settlement:
    meter = UsageMeter()
    meter.record("acme", "shapes@1", 200, time.time(), 1, 0.02)
    return Settlement(
        batch_id="router-1-0",
        usage=meter.take(),
        refunds=(("acme", Quota(requests_per_s=5), 3, "2026-11"),),
        key_uses=(("key_a", "acme", time.time()),),
    )


# What crosses a handle: router -> detector, detector -> router, router <-> ledger.
CROSSING = {
    "params": InferenceParams(0.25, 0.7, 100, None, 1280, ("circle",), None),
    "result": _result(),
    "annotated": Annotated(result=_result(), jpeg=b"\xff\xd8"),
    "defaults": TenantDefaults(conf=0.4),
    "settlement": _settlement(),
    "decision": Decision(allowed=False, code="rate_limited", retry_after_s=0.5),
    "quota_error": QuotaExceeded("slow down", reason="rate_limited", retry_after_s=2),
    "client_errors": [BadParameter("b"), UnknownModel("u"), UndecodableImage("i")],
    "serving_errors": [ModelUnavailable("m", retry_after_s=30), Overloaded("o")],
}


@pytest.mark.parametrize("name", sorted(CROSSING))
def test_what_a_replica_sends_names_only_modules_the_flat_release_has(name):
    data = cloudpickle.dumps(CROSSING[name])
    named = set(re.findall(rb"serve_app(?:\.[a-z_]+)+", data))
    assert named, "pickled by value: the class must be importable by name"
    assert {n.decode() for n in named} <= FLAT_RELEASE, named
    assert pickle.loads(data) == CROSSING[name] or repr(pickle.loads(data)) == repr(CROSSING[name])


def test_a_fresh_process_reads_what_the_flat_release_pickled():
    data = cloudpickle.dumps(list(CROSSING.values()))
    script = (
        "import pickle, sys; objs = pickle.loads(sys.stdin.buffer.read()); "
        "print(repr(objs)); "
        "import serve_app.inference.results as r; print(type(objs[1]) is r.DetectionResult)"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], input=data, capture_output=True, cwd=ROOT, check=True
    ).stdout.decode()
    shown, same_class = out.strip().rsplit("\n", 1)
    assert shown == repr(list(CROSSING.values()))
    assert same_class == "True"  # the old path is the new module, not a copy


def test_the_old_paths_are_the_new_modules():
    import serve_app.inference.defaults
    import serve_app.inference.policy
    import serve_app.inference.results
    import serve_app.quota.usage

    assert sys.modules["serve_app.results"] is serve_app.inference.results
    assert sys.modules["serve_app.policy"] is serve_app.inference.policy
    assert sys.modules["serve_app.preferences"] is serve_app.inference.defaults
    assert sys.modules["serve_app.usage"] is serve_app.quota.usage
    assert sys.modules["serve_app.quota"].Decision is Decision
