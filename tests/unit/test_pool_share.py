"""A shared tenant's share of pinned versions on the shared pool (``inference.pool_share``)."""

from __future__ import annotations

import pytest

from serve_app.errors import QuotaExceeded
from serve_app.inference.pool_share import PoolShare


class Clock:
    def __init__(self) -> None:
        self.now = 10.0

    def __call__(self) -> float:
        return self.now


def _use(share: PoolShare, tenant: str, model_id: str) -> None:
    share.check(tenant, model_id)
    share.record(tenant, model_id)  # answered: it holds a slot


def test_past_its_share_a_tenant_waits_for_its_oldest_pin_to_go_cold():
    clock = Clock()
    share = PoolShare(pinned=2, window_s=60, clock=clock)
    _use(share, "acme", "shapes@2")
    clock.now += 10
    _use(share, "acme", "shapes@3")
    _use(share, "acme", "shapes@2")  # already warm: no new slot
    with pytest.raises(QuotaExceeded) as refused:
        share.check("acme", "shapes@4")
    # both were last used at +10 s: the first frees 60 s after that
    assert refused.value.reason == "pool_share" and refused.value.retry_after_s == 60
    _use(share, "globex", "shapes@4")  # another tenant has its own share
    clock.now += 51  # 51 s after their last use: still warm
    with pytest.raises(QuotaExceeded):
        share.check("acme", "shapes@4")
    clock.now += 10  # now both are past the window
    _use(share, "acme", "shapes@4")


def test_a_version_that_never_answered_holds_no_slot():
    share = PoolShare(pinned=1, window_s=60, clock=Clock())
    for broken in ("shapes@5", "shapes@6", "shapes@7"):
        share.check("acme", broken)  # each fails to load: never recorded
    _use(share, "acme", "shapes@2")
    with pytest.raises(QuotaExceeded):
        share.check("acme", "shapes@3")
