from __future__ import annotations

import pickle
from datetime import UTC, datetime

from serve_app.config import Quota
from serve_app.constants import LEASE_TTL_S
from serve_app.errors import QuotaExceeded, unwrap_error
from serve_app.quota.gcra import TenantState, admit, release, seconds_to_next_month

EPOCH = datetime(2026, 11, 25, 12, tzinfo=UTC).timestamp()


def _run(quota: Quota, times: list[float], state: TenantState | None = None) -> list[bool]:
    state = state or TenantState()
    return [admit(state, quota, 1, t, EPOCH).allowed for t in times]


def test_burst_then_steady_rate():
    quota = Quota(requests_per_s=10, burst=5)
    assert _run(quota, [0.0] * 7) == [True] * 5 + [False] * 2
    state = TenantState()
    _run(quota, [0.0] * 5, state)
    assert admit(state, quota, 1, 0.05, EPOCH).allowed is False  # half an interval later
    assert admit(state, quota, 1, 0.1, EPOCH).allowed is True  # one interval later


def test_long_run_admits_rate_times_time_plus_burst():
    quota = Quota(requests_per_s=20, burst=10)
    times = [i * 0.001 for i in range(10_000)]  # 10 s of 1000 req/s, 50x the rate
    admitted = sum(_run(quota, times))
    assert abs(admitted - (20 * 10 + 10)) <= 2


def test_refusal_says_when_to_retry_and_costs_nothing():
    quota = Quota(requests_per_s=2, burst=1)
    state = TenantState()
    assert admit(state, quota, 1, 0.0, EPOCH).allowed
    refused = admit(state, quota, 1, 0.1, EPOCH)
    assert (refused.allowed, refused.code, refused.remaining) == (False, "rate_limited", 0)
    assert abs(refused.retry_after_s - 0.4) < 1e-6
    assert state.monthly == {"2026-11": 1} and len(state.leases) == 1
    assert admit(state, quota, 1, 0.5, EPOCH).allowed


def test_remaining_and_limit_headers_values():
    quota = Quota(requests_per_s=10, burst=3)
    state = TenantState()
    decisions = [admit(state, quota, 1, 0.0, EPOCH) for _ in range(3)]
    assert [d.remaining for d in decisions] == [2, 1, 0]
    assert all(d.limit == 3 for d in decisions)


def test_concurrency_cap_and_release():
    quota = Quota(max_concurrent=2)
    state = TenantState()
    a, b = admit(state, quota, 1, 0.0, EPOCH), admit(state, quota, 1, 0.0, EPOCH)
    third = admit(state, quota, 1, 0.0, EPOCH)
    assert a.allowed and b.allowed and (third.allowed, third.code) == (False, "too_many_concurrent")
    release(state, a.lease_id)
    release(state, a.lease_id)  # twice is harmless
    assert admit(state, quota, 1, 0.0, EPOCH).allowed


def test_leases_of_crashed_routers_expire():
    quota = Quota(max_concurrent=1)
    state = TenantState()
    assert admit(state, quota, 1, 0.0, EPOCH).allowed
    assert not admit(state, quota, 1, LEASE_TTL_S - 1, EPOCH).allowed
    assert admit(state, quota, 1, LEASE_TTL_S + 1, EPOCH).allowed


def test_monthly_quota_counts_images_and_resets_next_month():
    quota = Quota(monthly_images=3)
    state = TenantState()
    assert [admit(state, quota, 1, float(i), EPOCH).allowed for i in range(4)] == [True] * 3 + [
        False
    ]
    refused = admit(state, quota, 1, 10.0, EPOCH)
    assert refused.code == "monthly_quota_exceeded"
    assert refused.retry_after_s == seconds_to_next_month(EPOCH) > 5 * 86400
    december = datetime(2026, 12, 1, 0, 0, 1, tzinfo=UTC).timestamp()
    assert admit(state, quota, 1, 11.0, december).allowed


def test_unlimited_quota_admits_everything_but_still_counts():
    state = TenantState()
    assert all(_run(Quota(), [0.0] * 100, state))
    assert state.monthly == {"2026-11": 100}


def test_typed_errors_keep_retry_after_and_headers_across_pickle():
    err = QuotaExceeded("slow down", retry_after_s=3, headers={"RateLimit-Limit": "5"})
    back = pickle.loads(pickle.dumps(err))
    assert (back.message, back.retry_after_s, back.headers) == (
        "slow down",
        3,
        {"RateLimit-Limit": "5"},
    )
    assert unwrap_error(back) is back


def test_grant_charges_the_batch_up_front_and_never_beyond_the_bucket():
    from serve_app.quota.gcra import grant

    quota = Quota(requests_per_s=10, burst=8)
    state = TenantState()
    first = grant(state, quota, 5, 0.0, EPOCH)
    assert (first.allowed, first.granted, first.month) == (True, 5, "2026-11")
    second = grant(state, quota, 5, 0.0, EPOCH)
    assert second.granted == 3  # only what is left of the burst
    refused = grant(state, quota, 5, 0.0, EPOCH)
    assert (refused.allowed, refused.code, refused.granted) == (False, "rate_limited", 0)
    assert state.monthly == {"2026-11": 8} and not state.leases


def test_granted_batches_admit_no_more_than_admit_would():
    from serve_app.quota.gcra import grant

    quota = Quota(requests_per_s=20, burst=10)
    one_by_one, batched = TenantState(), TenantState()
    admitted_single = admitted_batched = 0
    for i in range(2000):  # 2 s at 1000 req/s
        now = i * 0.001
        admitted_single += admit(one_by_one, quota, 1, now, EPOCH).allowed
        admitted_batched += grant(batched, quota, 4, now, EPOCH).granted
    assert admitted_batched <= admitted_single <= 20 * 2 + 10 + 1


def test_refund_gives_back_rate_and_monthly_room():
    from serve_app.quota.gcra import grant, refund

    quota = Quota(requests_per_s=10, burst=4, monthly_images=100)
    state = TenantState()
    assert grant(state, quota, 4, 0.0, EPOCH).granted == 4
    assert not grant(state, quota, 1, 0.0, EPOCH).allowed
    refund(state, quota, 3, "2026-11", 0.0)
    assert state.monthly == {"2026-11": 1}
    assert grant(state, quota, 4, 0.0, EPOCH).granted == 3


def test_monthly_quota_bounds_a_grant():
    from serve_app.quota.gcra import grant

    quota = Quota(monthly_images=5)
    state = TenantState()
    assert grant(state, quota, 32, 0.0, EPOCH).granted == 5
    refused = grant(state, quota, 32, 0.0, EPOCH)
    assert (refused.allowed, refused.code) == (False, "monthly_quota_exceeded")


def test_capped_tenants_are_never_granted_batches():
    import pytest

    from serve_app.quota.gcra import grant

    with pytest.raises(ValueError, match="one request at a time"):
        grant(TenantState(), Quota(max_concurrent=2), 4, 0.0, EPOCH)
