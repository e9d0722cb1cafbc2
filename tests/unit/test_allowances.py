"""Router-local allowances (pure; a fake clock is just numbers)."""

from __future__ import annotations

from serve_app.config import Quota
from serve_app.constants import ALLOWANCE_BURST_SHARE, ALLOWANCE_MAX, ALLOWANCE_TTL_S
from serve_app.quota.allowances import Allowances, Refund, uses_allowances


def test_tokens_are_spent_locally_until_gone():
    allowances = Allowances()
    assert allowances.take("acme", 0.0) is None  # nothing granted yet: ask the ledger
    assert allowances.store("acme", 3, "2026-11", 0.0) == []
    assert [allowances.take("acme", 0.01) for _ in range(3)] == ["2026-11", "2026-11", None]


def test_unspent_tokens_expire_and_are_refunded_once():
    allowances = Allowances()
    allowances.take("acme", 0.0)
    allowances.store("acme", 5, "2026-11", 0.0)
    assert allowances.take("acme", 0.01)
    assert allowances.expired(ALLOWANCE_TTL_S / 2) == []
    late = ALLOWANCE_TTL_S + 0.01
    assert allowances.take("acme", late) is None  # expired tokens are not spent
    assert allowances.expired(late) == [Refund("acme", 3, "2026-11")]
    assert allowances.expired(late + 1) == []


def test_a_new_grant_refunds_what_it_replaces():
    allowances = Allowances()
    allowances.store("acme", 4, "2026-11", 0.0)
    assert allowances.store("acme", 2, "2026-11", 0.1) == [Refund("acme", 3, "2026-11")]


def test_the_batch_follows_demand_and_its_caps():
    allowances = Allowances()
    unlimited = Quota()
    assert allowances.want("acme", unlimited) == 1  # no history: one at a time
    for i in range(100):  # 100 requests within one window
        allowances.take("acme", i * ALLOWANCE_TTL_S / 200)
    assert allowances.want("acme", unlimited) == ALLOWANCE_MAX
    small_burst = Quota(requests_per_s=100, burst=8)
    assert allowances.want("acme", small_burst) == 2  # a quarter of the burst
    assert allowances.want("acme", Quota(requests_per_s=2, burst=2)) == 1


def test_drain_returns_everything_for_a_table_change():
    allowances = Allowances()
    allowances.store("acme", 4, "2026-11", 0.0)
    allowances.store("globex", 1, "2026-11", 0.0)  # spent by its own request
    assert allowances.drain() == [Refund("acme", 3, "2026-11")]
    assert allowances.take("acme", 0.01) is None


def test_capped_tenants_do_not_use_allowances():
    assert uses_allowances(Quota(requests_per_s=5))
    assert not uses_allowances(Quota(max_concurrent=2))


def test_one_default_burst_rule_for_ledger_and_allowances():
    # 2.5 requests/s with no burst set: the ledger lets 3 arrive at once, so a router's
    # allowance must be sized from the same 3 (it used to take int(2.5) = 2).
    quota = Quota(requests_per_s=2.5)
    assert quota.burst_size == 3
    assert Quota(requests_per_s=0.2).burst_size == 1
    assert Quota(requests_per_s=40, burst=7).burst_size == 7
    allowances = Allowances()
    for i in range(100):
        allowances.take("acme", i * ALLOWANCE_TTL_S / 200)
    # 7.5/s: a burst of 8, a quarter of it per grant (int(7.5) // 4 would give 1)
    assert allowances.want("acme", Quota(requests_per_s=7.5)) == 8 // ALLOWANCE_BURST_SHARE == 2
