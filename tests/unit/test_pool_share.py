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


def test_past_its_share_a_tenant_waits_for_its_oldest_pin_to_go_cold():
    clock = Clock()
    share = PoolShare(pinned=2, window_s=60, clock=clock)
    share.use("acme", "shapes@2")
    clock.now += 10
    share.use("acme", "shapes@3")
    share.use("acme", "shapes@2")  # already warm: no new slot
    with pytest.raises(QuotaExceeded) as refused:
        share.use("acme", "shapes@4")
    # both were last used at +10 s: the first frees 60 s after that
    assert refused.value.reason == "pool_share" and refused.value.retry_after_s == 60
    share.use("globex", "shapes@4")  # another tenant has its own share
    clock.now += 51  # 51 s after their last use: still warm
    with pytest.raises(QuotaExceeded):
        share.use("acme", "shapes@4")
    clock.now += 10  # now both are past the window
    share.use("acme", "shapes@4")
