"""A shared tenant's share of pinned versions on the shared pool (``inference.pool_share``)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from serve_app.errors import QuotaExceeded
from serve_app.inference.pool_share import PoolShare, Room, evictions


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


# ------------------------------------------------------------------ in the pool replica

ACTIVE = {"acme/shapes@1", "globex/shapes@1", "initech/shapes@1"}


MiB = 1024 * 1024


def _room(held, new, capacity=4, limit=2, budget=10**12, networks=None, new_network=None):
    networks = networks if networks is not None else {m: (m, MiB) for m in held}
    return evictions(
        held,
        new,
        room=Room(models=capacity, bytes=budget),
        networks=networks,
        new_network=new_network or (new, MiB),
        active=ACTIVE,
        pinned_limit=limit,
    )


def test_a_tenants_third_pinned_version_displaces_its_own_oldest_not_the_lru():
    held = ["globex/shapes@1", "acme/shapes@2", "acme/shapes@3", "initech/shapes@1"]
    # full, and globex's model is the least recently used: still, acme pays
    assert _room(held, "acme/shapes@4") == ["acme/shapes@2"]
    # with room to spare acme still may not hold a third pinned version
    assert _room(held, "acme/shapes@4", capacity=8) == ["acme/shapes@2"]


def test_active_versions_and_other_tenants_follow_plain_lru():
    held = ["globex/shapes@1", "acme/shapes@2", "acme/shapes@3", "initech/shapes@1"]
    assert _room(held, "acme/shapes@1") == ["globex/shapes@1"]  # active: not a pin
    assert _room(held, "globex/shapes@7") == ["globex/shapes@1"]  # its first pin
    assert _room(held, "initech/shapes@1", capacity=5) == []
    assert _room(held, "acme/shapes@4", limit=None) == ["globex/shapes@1"]  # dedicated


def test_a_replica_over_its_size_comes_back_within_it():
    held = [f"t{i}/m@1" for i in range(6)]  # the LRU size was lowered live
    assert _room(held, "t9/m@1", capacity=3) == [f"t{i}/m@1" for i in range(4)]


def test_capacity_is_counted_in_bytes_and_a_shared_network_counts_once():
    held = ["acme/shapes@1", "globex/shapes@1", "initech/shapes@1"]
    # 30 MiB each, 100 MiB of room: a fourth distinct network pushes out the LRU
    distinct = {m: (m, 30 * MiB) for m in held}
    assert _room(held, "t9/m@1", capacity=64, budget=100 * MiB, networks=distinct,
                 new_network=("k9", 30 * MiB)) == ["acme/shapes@1"]  # fmt: skip
    # a big one pushes out two
    assert _room(held, "t9/m@1", capacity=64, budget=100 * MiB, networks=distinct,
                 new_network=("k9", 50 * MiB)) == ["acme/shapes@1", "globex/shapes@1"]  # fmt: skip
    # the same weights as a held model: nothing to free, whatever the budget
    same = {m: ("demo", 30 * MiB) for m in held}
    assert _room(held, "t9/m@1", capacity=64, budget=30 * MiB, networks=same,
                 new_network=("demo", 30 * MiB)) == []  # fmt: skip


@given(
    st.lists(
        st.tuples(st.sampled_from(["acme", "globex", "initech"]), st.integers(1, 9)),
        max_size=60,
    ),
    st.integers(1, 6),
    st.integers(1, 3),
)
def test_any_sequence_of_loads_keeps_every_share_and_the_size(loads, capacity, limit):
    held: list[str] = []  # least recently used first, as Serve's wrapper keeps it
    for tenant, version in loads:
        new = f"{tenant}/shapes@{version}"
        if new in held:
            held.remove(new)
        else:
            victims = _room(held, new, capacity=capacity, limit=limit)
            assert set(victims) <= set(held) and len(set(victims)) == len(victims)
            # another tenant's model goes only when the replica is full
            others = [v for v in victims if not v.startswith(f"{tenant}/")]
            assert not others or len(held) - len(victims) + len(others) >= capacity
            held = [m for m in held if m not in victims]
        held.append(new)
        assert len(held) <= capacity
        for name in ("acme", "globex", "initech"):
            pinned = [m for m in held if m.startswith(f"{name}/") and m not in ACTIVE]
            assert len(pinned) <= limit
