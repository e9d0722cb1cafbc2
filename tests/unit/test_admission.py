"""A router replica's admission and settlement (``quota.admission``) against a fake
ledger: allowances, leases, fail-closed, a settle loop that survives, a final flush."""

from __future__ import annotations

import asyncio
import time

import pytest
from ray import exceptions as ray_errors

from serve_app import ride_through as ride_through_module
from serve_app.config import Quota
from serve_app.constants import ALLOWANCE_TTL_S, LEDGER_RETRY_MAX_WAIT_S
from serve_app.errors import Overloaded, QuotaExceeded
from serve_app.quota import admission as admission_module
from serve_app.quota.admission import Admission, Ticket
from serve_app.quota.gcra import Decision
from tests.unit.fakes import FakeHandle

RATE = Quota(requests_per_s=100, burst=40)
CAPPED = Quota(max_concurrent=1)


def _ledger(**overrides):
    settled = []
    answers = {
        "grant": lambda tenant, quota, want, origin: Decision(
            allowed=True, granted=want, month="2026-11"
        ),
        "admit": lambda tenant, quota, n, origin: Decision(
            allowed=True, lease_id="lease-1", month="2026-11"
        ),
        "release": lambda tenant, lease: None,
        "settle": settled.append,
        **overrides,
    }
    ledger = FakeHandle(answers)
    ledger.settled = settled
    return ledger


def _names(ledger):
    return [name for name, _, _ in ledger.calls]


def _admit_once(ledger, quota, quotas=None):
    """One admission on a fresh Admission, closed afterwards: its ticket, or its error."""

    async def run():
        admission = Admission(ledger, quotas or {"acme": quota}.get)
        try:
            return await admission.admit("acme", quota, "key_a")
        finally:
            await admission.close()

    return asyncio.run(run())


def test_allowances_spare_the_ledger_most_calls():
    async def run():
        ledger = _ledger()
        admission = Admission(ledger, {"acme": RATE}.get)
        for _ in range(30):
            assert await admission.admit("acme", RATE, "key_a") == Ticket("2026-11")
        await admission.close()
        return ledger

    ledger = asyncio.run(run())
    grants = _names(ledger).count("grant")
    assert 1 <= grants < 30  # allowances were granted in batches and spent locally


def test_capped_tenants_get_a_lease_and_release_it():
    async def run():
        ledger = _ledger()
        admission = Admission(ledger, {"acme": CAPPED}.get)
        ticket = await admission.admit("acme", CAPPED, "key_a")
        await admission.release("acme", ticket.lease)
        await admission.close()
        return ledger, ticket

    ledger, ticket = asyncio.run(run())
    assert ticket == Ticket("2026-11", "lease-1")
    assert ("release", None, ("acme", "lease-1")) in ledger.calls


def test_a_refusal_is_429_with_retry_after_and_ratelimit_headers():
    refuse = Decision(
        allowed=False, code="rate_limited", limit=40, remaining=0, reset_s=1.2, retry_after_s=0.3
    )

    with pytest.raises(QuotaExceeded) as caught:
        _admit_once(_ledger(grant=lambda *a: refuse), RATE, {}.get)
    assert caught.value.retry_after_s == 1  # rounded up, at least one second
    assert caught.value.headers == {
        "RateLimit-Limit": "40",
        "RateLimit-Remaining": "0",
        "RateLimit-Reset": "2",
    }
    assert "slow down" in caught.value.message


@pytest.mark.parametrize("second", ["granted", "refused"])
def test_a_monthly_refusal_is_asked_again_once_after_other_routers_refund(monkeypatch, second):
    """The month's last images may be another router's unspent allowance: the router
    asks once more after MONTHLY_RECHECK_S, and only then answers 429. A rate refusal
    is answered at once."""
    monkeypatch.setattr(admission_module, "MONTHLY_RECHECK_S", 0.01)
    month_over = Decision(allowed=False, code="monthly_quota_exceeded", retry_after_s=60)
    answers = iter([month_over, month_over if second == "refused" else None])

    def grant(tenant, quota, want, origin):
        answer = next(answers)
        return answer or Decision(allowed=True, granted=want, month="2026-11")

    ledger = _ledger(grant=grant)

    if second == "granted":
        assert _admit_once(ledger, RATE) == Ticket("2026-11")
    else:
        with pytest.raises(QuotaExceeded) as caught:
            _admit_once(ledger, RATE)
        assert caught.value.reason == "monthly_quota_exceeded"
    assert _names(ledger).count("grant") == 2  # asked twice, never more


def test_an_unreachable_ledger_fails_closed_with_503():
    def down(*_):
        raise ConnectionError("ledger gone")

    with pytest.raises(Overloaded, match="admission control is unavailable"):
        _admit_once(_ledger(admit=down), CAPPED, {}.get)


@pytest.mark.parametrize("quota", [RATE, CAPPED], ids=["grant", "admit"])
def test_a_ledger_restart_is_ridden_through_and_admits_once(quota):
    """The ledger replica died with the call in flight and its replacement answers."""
    failures = iter([ray_errors.ActorDiedError(), ray_errors.ActorUnavailableError("x", None)])

    def flaky(answer):
        def call(*args):
            error = next(failures, None)
            if error is not None:
                raise error
            return answer(*args)

        return call

    base = _ledger()
    ledger = _ledger(grant=flaky(base.answers["grant"]), admit=flaky(base.answers["admit"]))

    ticket = _admit_once(ledger, quota)
    name = "admit" if quota is CAPPED else "grant"
    assert _names(ledger).count(name) == 3  # two failed attempts, then the answer
    assert ticket.lease == ("lease-1" if quota is CAPPED else None)


def test_a_ledger_call_held_while_no_replica_is_up_is_made_again(monkeypatch):
    """Serve's handle holds a call while the ledger deployment has no replica: the
    attempt times out and the next one reaches the replacement."""
    monkeypatch.setattr(admission_module, "LEDGER_TIMEOUT_S", 0.05)
    calls = []

    async def grant(tenant, quota, want, origin):
        calls.append(want)
        if len(calls) == 1:
            await asyncio.Event().wait()  # held, never answered
        return Decision(allowed=True, granted=want, month="2026-11")

    assert _admit_once(_ledger(grant=grant), RATE) == Ticket("2026-11")
    assert len(calls) == 2


def test_a_dead_ledger_is_asked_again_every_tenth_of_a_second(monkeypatch):
    """A call to a dead ledger fails at once; the replacement is asked within
    LEDGER_RETRY_MAX_WAIT_S of coming up, not the detectors' half second."""
    waits = []
    real_sleep = asyncio.sleep

    async def sleep(seconds):
        waits.append(seconds)
        await real_sleep(0)

    monkeypatch.setattr(ride_through_module.asyncio, "sleep", sleep)
    failures = iter(range(6))

    def grant(tenant, quota, want, origin):
        if next(failures, None) is not None:
            raise ray_errors.ActorDiedError()
        return Decision(allowed=True, granted=want, month="2026-11")

    assert _admit_once(_ledger(grant=grant), RATE) == Ticket("2026-11")
    ride_waits = [w for w in waits if w not in (0, ALLOWANCE_TTL_S)]  # not the settle loop
    assert ride_waits == [0.05] + [LEDGER_RETRY_MAX_WAIT_S] * 5


def test_a_ledger_down_past_the_ride_through_is_503(monkeypatch):
    monkeypatch.setattr(admission_module, "LEDGER_RIDE_THROUGH_S", 0.2)

    def dead(*_):
        raise ray_errors.ActorDiedError()

    with pytest.raises(Overloaded, match="admission control is unavailable"):
        _admit_once(_ledger(grant=dead), RATE, {}.get)


def test_the_settle_loop_is_restarted_when_it_dies(monkeypatch):
    monkeypatch.setattr(admission_module, "ALLOWANCE_TTL_S", 0.01)
    monkeypatch.setattr(admission_module, "SETTLE_RESTART_MIN_S", 0.01)
    failures = [RuntimeError("broken table"), RuntimeError("still broken")]

    def quota_of(tenant):  # asked when the expired allowance is refunded
        if failures:
            raise failures.pop(0)
        return RATE

    async def run():
        delivered = asyncio.Event()
        ten = Decision(allowed=True, granted=10, month="2026-11")

        def settle(settlement):
            ledger.settled.append(settlement)
            if settlement.refunds:
                delivered.set()

        ledger = _ledger(grant=lambda *_: ten, settle=settle)
        admission = Admission(ledger, quota_of)
        admission.start()
        ticket = await admission.admit("acme", RATE, "key_a")  # 9 of 10 left to refund
        admission.record("acme", "demo@1", 200, 0.02, ticket)
        await asyncio.wait_for(delivered.wait(), 10)
        restarts = admission.restarts
        await admission.close()
        return ledger, restarts

    ledger, restarts = asyncio.run(run())
    assert restarts == 2
    usage = [row for s in ledger.settled for row in s.usage]
    assert [(row.tenant, row.counts.images) for row in usage] == [("acme", 1)]
    assert [(r[0], r[2]) for s in ledger.settled for r in s.refunds] == [("acme", 9)]


def test_close_flushes_usage_and_refunds_unspent_allowances():
    async def run():
        ten = Decision(allowed=True, granted=10, month="2026-11")
        ledger = _ledger(grant=lambda *_: ten)
        admission = Admission(ledger, {"acme": RATE}.get)
        ticket = await admission.admit("acme", RATE, "key_a")  # spends 1 of the 10 granted
        admission.record("acme", "demo@1", 200, 0.02, ticket)
        left = await admission.close()
        return ledger, left

    ledger, left = asyncio.run(run())
    assert left == 0
    usage = [row for s in ledger.settled for row in s.usage]
    refunds = [r for s in ledger.settled for r in s.refunds]
    keys = [k for s in ledger.settled for k in s.key_uses]
    assert [row.counts.images for row in usage] == [1]
    assert [(r[0], r[2], r[3]) for r in refunds] == [("acme", 9, "2026-11")]
    assert [t for s in ledger.settled for t in s.spent] == [("acme", "2026-11", 1)]
    assert keys and keys[0][:2] == ("key_a", "acme")


def test_an_admission_is_billed_only_if_answered():
    """The ledger holds the 10 granted: one answered (billed), one admitted and failed
    (refunded), the eight never spent refunded at close."""

    async def run():
        ten = Decision(allowed=True, granted=10, month="2026-11")
        ledger = _ledger(grant=lambda *_: ten)
        admission = Admission(ledger, {"acme": RATE}.get)
        answered = await admission.admit("acme", RATE, "key_a")
        admission.record("acme", "demo@1", 200, 0.02, answered)
        failed = await admission.admit("acme", RATE, "key_a")
        admission.unspent("acme", failed)
        admission.record("acme", "demo@1", 503)
        await admission.close()
        return ledger

    ledger = asyncio.run(run())
    origins = {s.origin for s in ledger.settled}
    assert len(origins) == 1 and all(name == "grant" or name == "settle" for name in _names(ledger))
    assert [args[3] for name, _, args in ledger.calls if name == "grant"] == list(origins)
    assert sum(n for s in ledger.settled for _t, _m, n in s.spent) == 1
    assert sum(r[2] for s in ledger.settled for r in s.refunds) == 9


def test_close_reports_what_an_absent_ledger_did_not_get():
    def down(_):
        raise ConnectionError("ledger gone")

    async def run():
        admission = Admission(_ledger(settle=down), {}.get)
        admission.record("acme", "demo@1", 200, 0.02)
        return await admission.close()

    assert asyncio.run(run()) == 1


def test_a_tenant_without_limits_needs_the_ledger_only_to_know_it_is_there():
    """Nothing to enforce: while the ledger has answered within LEDGER_RIDE_THROUGH_S, no
    grant is asked (a ledger restart holds nothing up) and an answer is charged to the
    month at settlement, a failure costs nothing. Before the ledger is heard from, and
    once it has been silent that long, admission asks it again (fail closed)."""

    async def run():
        ledger = _ledger()
        admission = Admission(ledger, {"acme": Quota()}.get)
        first = await admission.admit("acme", Quota(), "key_a")  # nobody heard yet
        admission.record("acme", "demo@1", 200, 0.02, first)
        answered = await admission.admit("acme", Quota(), "key_a")
        admission.record("acme", "demo@1", 200, 0.02, answered)
        failed = await admission.admit("acme", Quota(), "key_a")
        admission.unspent("acme", failed)
        admission.record("acme", "demo@1", 503)
        admission._ledger_heard_until = time.monotonic()  # silent too long
        last = await admission.admit("acme", Quota(), "key_a")
        admission.record("acme", "demo@1", 200, 0.02, last)
        await admission.close()
        return ledger, [first, answered, failed, last]

    ledger, tickets = asyncio.run(run())
    assert [t.held for t in tickets] == [True, False, False, True]
    assert _names(ledger).count("grant") == 2
    month = tickets[1].month
    assert [c for s in ledger.settled for c in s.charged] == [("acme", month, 1)]
    assert sum(n for s in ledger.settled for _t, _m, n in s.spent) == 2
    granted = sum(args[2] for name, _, args in ledger.calls if name == "grant")
    refunded = sum(r[2] for s in ledger.settled for r in s.refunds)
    assert refunded == granted - 2  # the unlimited failure was never charged: no refund
