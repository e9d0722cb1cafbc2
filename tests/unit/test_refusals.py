"""Refusals a router repeats without the ledger (``quota.refusals``), with a fake clock;
and ``Admission`` using them against a fake ledger."""

from __future__ import annotations

import asyncio

import pytest

from serve_app.config import Quota
from serve_app.errors import QuotaExceeded
from serve_app.quota.admission import Admission
from serve_app.quota.gcra import Decision
from serve_app.quota.refusals import Refusals
from tests.unit.fakes import FakeHandle

QUOTA = Quota(requests_per_s=4, burst=1)
RATE_REFUSAL = Decision(
    allowed=False, code="rate_limited", limit=1, remaining=0, reset_s=0.25, retry_after_s=0.25
)


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _refusals(**kwargs):
    clock = Clock()
    return Refusals(clock=clock, jitter=lambda: 0.0, **kwargs), clock


def test_inside_a_rate_refusal_window_the_router_refuses_and_holds_until_it_ends():
    refusals, clock = _refusals()
    assert refusals.check("acme", QUOTA) is None  # nothing known: ask the ledger
    refusals.remember("acme", QUOTA, RATE_REFUSAL)
    clock.t += 0.1
    local = refusals.check("acme", QUOTA)
    assert local is not None
    assert local.hold_s == pytest.approx(0.9)  # until the Retry-After it was told (1 s)
    error = local.error()
    assert error.status == 429 and error.reason == "rate_limited"
    assert error.retry_after_s == 1  # whole seconds, at least one
    assert error.headers == {"RateLimit-Limit": "1", "RateLimit-Remaining": "0",
                             "RateLimit-Reset": "1"}  # fmt: skip
    clock.t += 0.15  # the window is over: the ledger decides again
    assert refusals.check("acme", QUOTA) is None
    assert len(refusals) == 0


def test_a_window_applies_to_its_own_tenant_and_quota_only():
    refusals, _ = _refusals()
    refusals.remember("acme", QUOTA, RATE_REFUSAL)
    assert refusals.check("globex", QUOTA) is None
    raised = Quota(requests_per_s=40, burst=10)  # the operator raised acme's quota
    assert refusals.check("acme", raised) is None
    assert refusals.check("acme", QUOTA) is None  # the old window is gone for good


def test_concurrency_refusals_are_not_remembered_monthly_ones_briefly():
    refusals, clock = _refusals()
    refusals.remember("acme", QUOTA, Decision(allowed=False, code="too_many_concurrent",
                                              retry_after_s=1))  # fmt: skip
    assert refusals.check("acme", QUOTA) is None  # a lease may free any moment
    month = Decision(allowed=False, code="monthly_quota_exceeded", retry_after_s=86400)
    refusals.remember("acme", QUOTA, month)
    clock.t += 0.5
    local = refusals.check("acme", QUOTA)
    assert local is not None
    assert local.error().retry_after_s == 86400  # Retry-After still says next month
    assert local.hold_s == 1.0  # held the most a refusal is held
    clock.t += 0.3  # refunds from other routers may have freed the month's last images
    assert refusals.check("acme", QUOTA) is None


def test_held_refusals_are_capped_per_tenant_past_that_answered_at_once():
    refusals, _ = _refusals(max_held=2, max_hold_s=0.1)
    refusals.remember("acme", Quota(requests_per_s=0.01, burst=1),
                      Decision(allowed=False, code="rate_limited", retry_after_s=100))  # fmt: skip
    slow = Quota(requests_per_s=0.01, burst=1)
    first, second = refusals.check("acme", slow), refusals.check("acme", slow)
    assert first is not None and second is not None
    assert first.hold_s == second.hold_s == 0.1  # the cap on a hold, not the 100 s
    with first.holding(), second.holding():
        third = refusals.check("acme", slow)
        assert third is not None and third.hold_s == 0  # two held already
    again = refusals.check("acme", slow)
    assert again is not None and again.hold_s == 0.1  # slots free again
    assert refusals.held == 2 and refusals.local == 4


def test_holds_are_spread_so_held_refusals_do_not_come_back_together():
    refusals = Refusals(clock=Clock())  # the real jitter
    refusals.remember("acme", QUOTA, RATE_REFUSAL)
    holds = set()
    for _ in range(8):
        local = refusals.check("acme", QUOTA)
        assert local is not None
        holds.add(local.hold_s)
    assert len(holds) == 8 and all(1.0 <= h <= 1.25 for h in holds)


def test_held_refusals_are_capped_across_tenants_too():
    refusals, _ = _refusals(max_held=2, max_held_total=3)
    for tenant in ("acme", "globex"):
        refusals.remember(tenant, QUOTA, RATE_REFUSAL)
    a1, a2, g1 = (refusals.check(t, QUOTA) for t in ("acme", "acme", "globex"))
    assert a1 and a2 and g1 and a1.hold_s > 0 and g1.hold_s > 0
    with a1.holding(), a2.holding(), g1.holding():
        g2 = refusals.check("globex", QUOTA)  # globex holds one of its two, the router 3
        assert g2 is not None and g2.hold_s == 0
    assert refusals.holding_now == 0


def test_retry_after_counts_down_while_a_refusal_is_held():
    refusals, clock = _refusals()
    refusals.remember("acme", QUOTA, Decision(allowed=False, code="rate_limited",
                                              retry_after_s=3.5, reset_s=3.5))  # fmt: skip
    local = refusals.check("acme", QUOTA)
    assert local is not None and local.error().retry_after_s == 4
    clock.t += 1.0  # held a second
    assert local.error().retry_after_s == 3
    assert local.error().headers["RateLimit-Reset"] == "3"


def test_admission_refuses_inside_the_window_without_asking_the_ledger():
    """The ledger says no once; the next requests inside the window are refused by the
    router (held to the end of the window), and the first after it asks again."""
    answers = iter([RATE_REFUSAL])

    def grant(tenant, quota, want, origin):
        return next(answers, Decision(allowed=True, granted=want, month="2026-11"))

    ledger = FakeHandle({"grant": grant, "settle": lambda s: None})

    async def run():
        admission = Admission(ledger, {"acme": QUOTA}.get)
        loop = asyncio.get_running_loop()
        with pytest.raises(QuotaExceeded):
            await admission.admit("acme", QUOTA, "key_a")
        started = loop.time()
        # three connections back at once, before the window ends
        refused = await asyncio.gather(
            *(admission.admit("acme", QUOTA, "key_a") for _ in range(3)), return_exceptions=True
        )
        assert all(isinstance(r, QuotaExceeded) and r.retry_after_s >= 1 for r in refused)
        held_s = loop.time() - started
        grants_inside = [n for n, _, _ in ledger.calls].count("grant")
        ticket = await admission.admit("acme", QUOTA, "key_a")  # the window is over
        await admission.close()
        return held_s, grants_inside, ticket, admission.refusals

    held_s, grants_inside, ticket, refusals = asyncio.run(run())
    assert grants_inside == 1  # only the first refusal was the ledger's
    assert refusals.local == 3 and refusals.held == 3
    assert 0.9 <= held_s < 2.0  # held until the 1 s Retry-After was over (+ <= 0.25 s)
    assert ticket.month == "2026-11"


def test_a_new_tenant_table_forgets_the_windows():
    ledger = FakeHandle({"grant": lambda *a: RATE_REFUSAL, "settle": lambda s: None})

    async def run():
        admission = Admission(ledger, {"acme": QUOTA}.get)
        with pytest.raises(QuotaExceeded):
            await admission.admit("acme", QUOTA, "key_a")
        admission.reset()  # reconfigure: quotas may have changed
        with pytest.raises(QuotaExceeded):
            await admission.admit("acme", QUOTA, "key_a")
        await admission.close()

    asyncio.run(run())
    assert [n for n, _, _ in ledger.calls].count("grant") == 2
