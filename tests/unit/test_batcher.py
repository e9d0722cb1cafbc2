"""The detector's greedy batcher, driven directly on an event loop (no Ray)."""

from __future__ import annotations

import asyncio

import pytest

from serve_app.inference.batcher import Batcher
from tests.unit.fakes import loop_turn


class Model:
    """A stand-in inference: records each batch, finishes when released."""

    def __init__(self) -> None:
        self.batches: list[tuple[str, list[int]]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.started = asyncio.Event()

    async def run(self, key: str, payloads: list[int]) -> list[str]:
        self.batches.append((key, list(payloads)))
        self.started.set()
        await self.gate.wait()
        return [f"{key}:{p}" for p in payloads]


def _run(coro):
    return asyncio.run(asyncio.wait_for(coro, 10))


async def _busy(max_batch_size: int = 8, key: str = "m", group=lambda key: key):
    """A batcher whose model is busy with a first request (payload 0) until released."""
    model = Model()
    model.gate.clear()
    batcher = Batcher(model.run, max_batch_size=max_batch_size, wait_s=0.0, group=group)
    first = asyncio.create_task(batcher.submit(key, 0))
    await model.started.wait()
    return model, batcher, first


def test_an_idle_replica_runs_a_request_at_once_as_a_batch_of_one():
    async def scenario():
        model = Model()
        batcher = Batcher(model.run, max_batch_size=8, wait_s=0.0)
        assert await batcher.submit("m", 1) == "m:1"
        assert model.batches == [("m", [1])]
        assert (batcher.stats.batches, batcher.stats.largest) == (1, 1)

    _run(scenario())


def test_what_queues_during_one_inference_is_the_next_batch():
    async def scenario():
        model, batcher, first = await _busy(max_batch_size=4)  # the first batch is inferring
        rest = [asyncio.create_task(batcher.submit("m", i)) for i in range(1, 7)]
        await loop_turn()
        assert len(batcher) == 6  # queued, not yet batched
        model.gate.set()
        results = await asyncio.gather(first, *rest)
        assert results == [f"m:{i}" for i in range(7)]
        assert [p for _, p in model.batches] == [[0], [1, 2, 3, 4], [5, 6]]
        assert batcher.stats.largest == 4 and batcher.stats.images == 7

    _run(scenario())


def test_an_engine_limit_caps_its_models_batches_only():
    # A one-thread ONNX Runtime model runs single images; another model keeps the setting.
    async def scenario():
        model = Model()
        model.gate.clear()
        limits = {"onnx": 1}
        batcher = Batcher(model.run, max_batch_size=4, wait_s=0.0, largest=limits.get)
        first = asyncio.create_task(batcher.submit("torch", 0))
        await model.started.wait()
        queued = [asyncio.create_task(batcher.submit("onnx", i)) for i in (1, 2, 3)]
        queued += [asyncio.create_task(batcher.submit("torch", i)) for i in (4, 5, 6)]
        await loop_turn()
        model.gate.set()
        await asyncio.gather(first, *queued)
        assert model.batches == [
            ("torch", [0]),
            ("onnx", [1]),
            ("onnx", [2]),  # first come, first served: onnx within half the turns
            ("torch", [4, 5, 6]),  # onnx past half (2 of 3): torch's turn
            ("onnx", [3]),
        ]

    _run(scenario())


def test_models_are_never_mixed_and_turns_go_in_arrival_order_within_a_share():
    async def scenario():
        model, batcher, blocker = await _busy(key="a")
        order = [("b", 1), ("a", 2), ("b", 3), ("a", 4), ("c", 5)]
        tasks = [asyncio.create_task(batcher.submit(k, p)) for k, p in order]
        await loop_turn()
        model.gate.set()
        await asyncio.gather(blocker, *tasks)
        # a just had the only turn (over half): b, the oldest; then a (one of two turns,
        # within its half) before c, which arrived last
        assert model.batches == [("a", [0]), ("b", [1, 3]), ("a", [2, 4]), ("c", [5])]

    _run(scenario())


def test_a_tenant_past_half_the_recent_turns_waits_for_the_others():
    """a and b each queue 6 single requests, a first (batches of 1): b is not served after
    all of a's, as first come, first served would."""

    async def scenario():
        model, batcher, blocker = await _busy(max_batch_size=1, key="a")
        tasks = [asyncio.create_task(batcher.submit("a", i)) for i in range(1, 7)]
        tasks += [asyncio.create_task(batcher.submit("b", i)) for i in range(7, 13)]
        await loop_turn()
        model.gate.set()
        await asyncio.gather(blocker, *tasks)
        keys = "".join(key for key, _ in model.batches)
        # a had the only turn (past half): b's oldest, then they alternate, each within half
        assert keys == "a" + "ba" * 6, keys

    _run(scenario())


def test_a_tenants_burst_does_not_starve_the_tenant_queued_behind_it():
    """Tenant a queues 12 requests over two of its models, then tenant b one: b's batch
    runs second, not after all of a's (batches of 2, one model per batch)."""

    async def scenario():
        tenant = lambda key: key.split("/")[0]  # noqa: E731
        model, batcher, blocker = await _busy(max_batch_size=2, key="a/x@1", group=tenant)
        burst = [asyncio.create_task(batcher.submit(f"a/{'xy'[i % 2]}@1", i))
                 for i in range(1, 13)]  # fmt: skip
        behind = asyncio.create_task(batcher.submit("b/x@1", 99))
        await loop_turn()
        model.gate.set()
        await asyncio.gather(blocker, behind, *burst)
        keys = [key for key, _ in model.batches]
        assert keys.index("b/x@1") == 1  # right after the batch that was running
        assert len(keys) == 1 + 1 + 6  # a's 12 still went in full batches of 2

    _run(scenario())


def test_a_wait_lets_a_batch_fill_but_a_full_batch_does_not_wait():
    async def scenario():
        model = Model()
        batcher = Batcher(model.run, max_batch_size=3, wait_s=0.2)
        loop = asyncio.get_running_loop()
        started = loop.time()
        first = asyncio.create_task(batcher.submit("m", 1))
        for _ in range(5):  # the worker takes the first request and waits for more
            await loop_turn()
        assert len(batcher) == 0 and not model.batches and not first.done()
        second = asyncio.create_task(batcher.submit("m", 2))
        await asyncio.gather(first, second)
        assert model.batches == [("m", [1, 2])]
        assert loop.time() - started >= 0.2  # waited for a third that never came
        started = loop.time()
        await asyncio.gather(*(batcher.submit("m", i) for i in (3, 4, 5)))
        assert model.batches[-1] == ("m", [3, 4, 5])
        assert loop.time() - started < 0.15  # full at once: no wait

    _run(scenario())


def test_settings_change_live():
    async def scenario():
        model, batcher, blocker = await _busy()
        batcher.configure(max_batch_size=2, wait_s=0.0)
        tasks = [asyncio.create_task(batcher.submit("m", i)) for i in range(1, 5)]
        await loop_turn()
        model.gate.set()
        await asyncio.gather(blocker, *tasks)
        assert [p for _, p in model.batches] == [[0], [1, 2], [3, 4]]

    _run(scenario())


def test_a_failing_batch_fails_its_requests_only_and_the_worker_goes_on():
    calls = []

    async def flaky(key: str, payloads: list[int]) -> list[int]:
        calls.append(list(payloads))
        if payloads[0] == 0:
            raise ValueError("boom")
        if payloads[0] == 9:
            return []  # a run that loses results is an error too, not a hang
        return payloads

    async def scenario():
        batcher = Batcher(flaky, max_batch_size=8, wait_s=0.0)
        with pytest.raises(ValueError, match="boom"):
            await batcher.submit("m", 0)
        with pytest.raises(RuntimeError, match="gave 0 results"):
            await batcher.submit("m", 9)
        assert await batcher.submit("m", 1) == 1

    _run(scenario())


def test_a_cancelled_request_is_left_out_of_its_batch():
    async def scenario():
        model, batcher, blocker = await _busy()
        gone = asyncio.create_task(batcher.submit("m", 1))
        kept = asyncio.create_task(batcher.submit("m", 2))
        await loop_turn()
        gone.cancel()
        model.gate.set()
        assert await kept == "m:2"
        await blocker
        assert [p for _, p in model.batches] == [[0], [2]]

    _run(scenario())
