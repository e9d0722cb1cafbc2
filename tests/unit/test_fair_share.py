"""A router's turns at the shared pool (``inference.fair_share``), on an event loop."""

from __future__ import annotations

import asyncio

from serve_app.inference.fair_share import FairShare
from tests.unit.fakes import loop_turn


class Pool:
    """Stands in for the pool: every call holds its slot until released, in order."""

    def __init__(self, gate: FairShare) -> None:
        self.gate = gate
        self.started: list[str] = []
        self.release: dict[int, asyncio.Event] = {}

    async def call(self, tenant: str) -> None:
        async with self.gate.turn(tenant):
            self.started.append(tenant)
            done = self.release[len(self.started) - 1] = asyncio.Event()
            await done.wait()

    async def finish(self, n: int) -> None:
        """Release the oldest ``n`` calls still running."""
        running = [i for i, e in sorted(self.release.items()) if not e.is_set()]
        for i in running[:n]:
            self.release[i].set()
        await loop_turn()
        await loop_turn()


async def _drain(pool: Pool, tasks: list[asyncio.Task[None]]) -> None:
    while not all(t.done() for t in tasks):
        await pool.finish(100)
    await asyncio.gather(*tasks)


def _run(coro):
    return asyncio.run(asyncio.wait_for(coro, 10))


def test_a_tenant_alone_uses_every_slot():
    async def scenario():
        pool = Pool(FairShare(slots=4))
        calls = [asyncio.create_task(pool.call("a")) for _ in range(6)]
        await loop_turn()
        assert pool.started == ["a"] * 4 and pool.gate.waiting("a") == 2
        await _drain(pool, calls)
        assert pool.gate.in_flight("a") == 0 and pool.gate.waiting("a") == 0

    _run(scenario())


def test_the_tenant_behind_a_burst_gets_the_next_slot_not_the_last():
    async def scenario():
        pool = Pool(FairShare(slots=4))
        burst = [asyncio.create_task(pool.call("a")) for _ in range(20)]
        await loop_turn()
        behind = asyncio.create_task(pool.call("b"))
        await loop_turn()
        # b counts as busy at once: a's share is now 2 of 4, b's call goes out now
        assert pool.started == ["a"] * 4 + ["b"]
        await pool.finish(3)  # three of a's end: a is at its share (2) until it drops
        assert pool.started == ["a"] * 4 + ["b"] + ["a"]
        await _drain(pool, [*burst, behind])
        assert pool.started.count("a") == 20

    _run(scenario())


def test_freed_slots_go_round_the_waiting_tenants():
    async def scenario():
        pool = Pool(FairShare(slots=2))
        tasks = [asyncio.create_task(pool.call(t)) for t in "aaaaaabbbbcc"]
        await loop_turn()
        # a alone took both slots; each tenant that comes after gets one call out at once
        assert pool.started == ["a", "a", "b", "c"]
        await _drain(pool, tasks)
        # then the backlogs go round a, b, c, instead of a's 4 going first
        assert pool.started[4:] == ["a", "b", "c", "a", "b", "a", "b", "a"]

    _run(scenario())


def test_among_many_light_tenants_a_busy_one_keeps_half_the_slots():
    """16 slots, 8 tenants with a call each and a ninth with 12: an equal share would be
    2; the busy one may still have 8 in flight (half the slots), the rest wait."""

    async def scenario():
        pool = Pool(FairShare(slots=16))
        light = [asyncio.create_task(pool.call(t)) for t in "bcdefghi"]
        await loop_turn()
        busy = [asyncio.create_task(pool.call("a")) for _ in range(12)]
        await loop_turn()
        assert pool.gate.in_flight("a") == 8 and pool.gate.waiting("a") == 4
        assert sorted(pool.started[:8]) == list("bcdefghi")
        await _drain(pool, [*light, *busy])
        assert pool.started.count("a") == 12

    _run(scenario())


def test_a_cancelled_waiter_leaves_the_queue_and_holds_nothing():
    async def scenario():
        pool = Pool(FairShare(slots=1))
        first = asyncio.create_task(pool.call("a"))
        await loop_turn()
        waiter = asyncio.create_task(pool.call("a"))
        await loop_turn()
        assert pool.gate.waiting("a") == 1
        waiter.cancel()
        await loop_turn()
        assert pool.gate.waiting("a") == 0
        await pool.finish(1)
        await first
        assert pool.gate.in_flight("a") == 0
        later = asyncio.create_task(pool.call("b"))
        await loop_turn()
        assert pool.started == ["a", "b"]  # the slot was free, not held by the cancelled
        await pool.finish(1)
        await later

    _run(scenario())
