"""``/readyz`` (``http.readiness``) with fake detector handles."""

from __future__ import annotations

import asyncio

from serve_app.config import TenantEntry
from serve_app.inference.detector_client import DetectorClient
from tests.unit.fakes import FakeHandle


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def _tenant(tenant_id: str, tier: str = "dedicated", status: str = "active") -> TenantEntry:
    return TenantEntry.model_validate(
        {
            "id": tenant_id,
            "name": tenant_id,
            "tier": tier,
            "status": status,
            "models": [{"name": "m", "versions": [3], "active_version": 3}],
            "default_model": "m",
        }
    )


def _setup(ready=lambda: True, scale_to_zero=()):
    from serve_app.http.readiness import Readiness

    calls: list = []
    handles = {
        t: FakeHandle({"ready": ready}, f"tenant-{t}", calls=calls) for t in ("acme", "sleepy")
    }
    pool = FakeHandle({"ready": ready}, "shared-pool", calls=calls)
    clock = Clock()
    return Readiness(DetectorClient(handles, pool), scale_to_zero, clock), calls, clock


TENANTS = [
    _tenant("acme"),
    _tenant("sleepy"),
    _tenant("shared-a", "shared"),
    _tenant("shared-b", "shared"),
    _tenant("gone", status="suspended"),
]


def test_ready_probes_always_on_tenants_and_one_shared_and_caches_success():
    readiness, calls, clock = _setup(scale_to_zero=["sleepy"])
    status, body = asyncio.run(readiness.check(TENANTS))
    assert (status, body) == (200, {"status": "ready"})  # nothing about tenants
    assert sorted(model for _, model, _ in calls) == ["acme/m@3", "shared-a/m@3"]
    asyncio.run(readiness.check(TENANTS))
    assert len(calls) == 2  # a recent success stands
    clock.now += 60
    asyncio.run(readiness.check(TENANTS))
    assert len(calls) == 4


def test_not_ready_without_tenants_or_when_a_model_fails_or_a_detector_is_missing(caplog):
    """The public probe says ready or not; why is in the operator's log only."""
    readiness, _, _ = _setup()
    assert asyncio.run(readiness.check([])) == (503, {"status": "not_ready"})

    def fail():
        raise RuntimeError("weights missing")

    failing, _, _ = _setup(ready=fail)
    assert asyncio.run(failing.check(TENANTS)) == (503, {"status": "not_ready"})
    assert asyncio.run(readiness.check([*TENANTS, _tenant("newcomer")]))[0] == 503
    logged = [r.getMessage() for r in caplog.records]
    assert logged == [
        "router: not ready: no tenants configured",
        "router: not ready: a model failed to load (RuntimeError)",
        "router: not ready: a detector is missing",
    ]
