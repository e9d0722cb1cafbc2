"""Coalescing a router's calls to one model (``inference.coalescer``), with coroutines in
the handle's place: below the limit each request is its own call; beyond it requests wait
and go together, in order, at most ``most`` a call; errors and cancellations stay with
the requests they belong to."""

from __future__ import annotations

import asyncio

import pytest

from serve_app.inference.coalescer import Coalescer, limit_for
from tests.unit.fakes import loop_turn


class _Detector:
    """Calls held until released: ``one`` and ``many`` record what each call carried."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []
        self.gates: list[asyncio.Event] = []
        self.failing: set[int] = set()  # items whose whole call fails

    async def _hold(self, items: list[int]) -> list[str]:
        self.calls.append(items)
        gate = asyncio.Event()
        self.gates.append(gate)
        await gate.wait()
        if self.failing & set(items):
            raise ConnectionError(f"call {items} failed")
        return [f"boxes {i}" for i in items]

    async def one(self, item: int) -> str:
        return (await self._hold([item]))[0]

    async def many(self, items: list[int]) -> list[str]:
        return await self._hold(items)

    def release(self, call: int) -> None:
        self.gates[call].set()


def _coalescer(detector: _Detector, limit: int = 2, most: int = 3) -> Coalescer[int, str]:
    return Coalescer(detector.one, detector.many, limit, most)


def test_the_limit_is_what_the_autoscaler_must_see_to_want_every_replica():
    assert limit_for(2, 2.0) == 4
    assert limit_for(3, 1.5) == 5  # rounded up: never fewer calls than it needs to see
    assert limit_for(1, 0.1) == 1


def test_under_the_limit_every_request_is_its_own_call():
    async def run() -> list[str]:
        detector = _Detector()
        coalescer = _coalescer(detector, limit=2)
        tasks = [asyncio.create_task(coalescer.submit(i)) for i in range(2)]
        await loop_turn()
        assert detector.calls == [[0], [1]] and coalescer.waiting == 0
        detector.release(0)
        detector.release(1)
        return await asyncio.gather(*tasks)

    assert asyncio.run(run()) == ["boxes 0", "boxes 1"]


def test_beyond_the_limit_requests_wait_and_go_together_in_order():
    async def run() -> None:
        detector = _Detector()
        coalescer = _coalescer(detector, limit=2, most=3)
        tasks = [asyncio.create_task(coalescer.submit(i)) for i in range(7)]
        await loop_turn()
        assert detector.calls == [[0], [1]]  # the limit: two calls in flight
        assert coalescer.in_flight == 2 and coalescer.waiting == 5
        detector.release(0)
        await loop_turn()
        await loop_turn()
        # one call back: the waiting ones go, at most three a call, still two in flight
        assert detector.calls == [[0], [1], [2, 3, 4]] and coalescer.in_flight == 2
        detector.release(1)
        await loop_turn()
        await loop_turn()
        assert detector.calls[-1] == [5, 6] and coalescer.waiting == 0
        detector.release(2)
        detector.release(3)
        # every request gets its own result, whatever call carried it
        assert await asyncio.gather(*tasks) == [f"boxes {i}" for i in range(7)]
        assert coalescer.in_flight == 0

    asyncio.run(run())


def test_a_failed_call_fails_only_the_requests_it_carried():
    async def run() -> None:
        detector = _Detector()
        detector.failing = {2}
        coalescer = _coalescer(detector, limit=1, most=2)
        tasks = [asyncio.create_task(coalescer.submit(i)) for i in range(5)]
        await loop_turn()
        detector.release(0)
        await loop_turn()
        await loop_turn()
        assert detector.calls == [[0], [1, 2]]
        detector.release(1)  # fails: 1 and 2 get its error
        await loop_turn()
        await loop_turn()
        assert detector.calls[-1] == [3, 4]  # the next ones still go
        detector.release(2)
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert results[0] == "boxes 0" and results[3:] == ["boxes 3", "boxes 4"]
        assert all(isinstance(r, ConnectionError) for r in results[1:3]), results
        assert coalescer.in_flight == 0

    asyncio.run(run())


def test_a_request_cancelled_while_waiting_is_left_out_of_the_call():
    async def run() -> None:
        detector = _Detector()
        coalescer = _coalescer(detector, limit=1, most=4)
        tasks = [asyncio.create_task(coalescer.submit(i)) for i in range(4)]
        await loop_turn()
        tasks[2].cancel()  # its client went away
        await loop_turn()
        detector.release(0)
        await loop_turn()
        await loop_turn()
        assert detector.calls == [[0], [1, 3]]
        detector.release(1)
        assert await asyncio.gather(tasks[0], tasks[1], tasks[3]) == [
            "boxes 0",
            "boxes 1",
            "boxes 3",
        ]
        with pytest.raises(asyncio.CancelledError):
            await tasks[2]

    asyncio.run(run())


def test_a_short_answer_from_the_detector_is_an_error_for_each_request_not_a_mixup():
    async def short(items: list[int]) -> list[str]:
        return ["only one"]

    async def run() -> list[object]:
        gate = asyncio.Event()

        async def one(item: int) -> str:
            await gate.wait()
            return f"boxes {item}"

        coalescer: Coalescer[int, str] = Coalescer(one, short, 1, 4)
        tasks = [asyncio.create_task(coalescer.submit(i)) for i in range(3)]
        await loop_turn()
        gate.set()
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = asyncio.run(run())
    assert results[0] == "boxes 0"
    assert all(isinstance(r, RuntimeError) and "2 coalesced" in str(r) for r in results[1:])
