"""Greedy dynamic batching for one replica, fair between tenants: a batch is formed when
the model is free, for the tenant served least recently.

Ray Serve's ``@serve.batch`` (2.60) forms the next batch as soon as the previous one has
been *started*, and only then waits for its turn (``max_concurrent_batches``). With
``batch_wait_timeout_s = 0`` every request under load therefore became a batch of its own
(measured: 66 images in 55 batches with 16 requests in flight); with a wait, every request
on an idle replica pays it. Here a single worker per replica takes the oldest waiting
request (of a tenant within its share of turns: ``group``), then every request queued
for the same model (up to
``max_batch_size``, or the model's engine's own limit, ``largest``, if smaller), waits up
to ``wait_s`` for more only while the batch is not full, runs it, and loops. Under load,
what queued during one inference is the next batch; on an idle replica a request runs at
once. Requests are served in arrival order, but while another tenant waits, no tenant
takes more than ``TURN_SHARE`` of the last ``TURN_WINDOW`` turns: a tenant that queued 30
requests on the shared pool gets a batch, then the tenant with one request behind them
gets its turn instead of waiting for all 30, while a busy tenant within its share (the
hottest of many, at a fifth of the traffic) is served first come, first served, not
behind every light tenant (tests/unit/test_batcher.py, docs/benchmarks.md).

Pure asyncio, no Ray: the detector plugs its inference in as ``run``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from serve_app.constants import TURN_SHARE, TURN_WINDOW

# run(key, payloads) -> one result per payload, in order
RunBatch = Callable[[str, list[Any]], Awaitable[Sequence[Any]]]
# largest(key) -> the most a batch for that key should hold (None: max_batch_size)
LargestBatch = Callable[[str], int | None]
# group(key) -> whose turn a batch of that key is (the tenant of a model id)
Group = Callable[[str], str]


@dataclass
class _Item:
    key: str
    payload: Any
    future: asyncio.Future[Any]


@dataclass
class BatchStats:
    """How full batches have been (for operators, tests and benchmarks)."""

    batches: int = 0
    images: int = 0
    largest: int = 0

    def record(self, size: int) -> None:
        self.batches += 1
        self.images += size
        self.largest = max(self.largest, size)


@dataclass
class Batcher:
    run: RunBatch
    max_batch_size: int
    wait_s: float
    largest: LargestBatch = lambda _key: None  # the engine's own limit, per model
    group: Group = lambda key: key  # turns are taken per group
    stats: BatchStats = field(default_factory=BatchStats)
    _turns: deque[str] = field(default_factory=lambda: deque(maxlen=TURN_WINDOW))
    _taken: Counter[str] = field(default_factory=Counter)  # group -> turns in _turns
    _pending: deque[_Item] = field(default_factory=deque)
    _arrived: asyncio.Event | None = None
    _worker: asyncio.Task[None] | None = None

    def configure(self, max_batch_size: int, wait_s: float) -> None:
        """New settings; the next batch uses them (no restart)."""
        self.max_batch_size = max_batch_size
        self.wait_s = wait_s

    def __len__(self) -> int:
        return len(self._pending)

    async def submit(self, key: str, payload: Any) -> Any:
        """Queue one request for model ``key``; its result when its batch has run."""
        loop = asyncio.get_running_loop()
        if self._arrived is None:
            self._arrived = asyncio.Event()
        if self._worker is None or self._worker.done():
            # A context of its own: the worker outlives the request that started it, and
            # must not carry that request's id (or anything else of it) into later batches.
            self._worker = loop.create_task(self._work(), context=contextvars.Context())
        item = _Item(key, payload, loop.create_future())
        self._pending.append(item)
        self._arrived.set()
        return await item.future

    def _size_for(self, key: str) -> int:
        """The batch size for ``key``: the setting, or the engine's limit if smaller."""
        engine_limit = self.largest(key)
        return (
            self.max_batch_size if engine_limit is None else min(engine_limit, self.max_batch_size)
        )

    def _take(self, key: str, batch: list[_Item], size: int) -> None:
        """Move queued items for ``key`` into ``batch``, oldest first, up to ``size``."""
        kept: deque[_Item] = deque()
        while self._pending:
            item = self._pending.popleft()
            if item.future.done():  # cancelled while queued
                continue
            if item.key == key and len(batch) < size:
                batch.append(item)
            else:
                kept.append(item)
        self._pending = kept

    def _pop_next(self) -> _Item | None:
        """The oldest live request of a group within its share of the recent turns (the
        oldest of all if every waiting group is past it), taken off the queue; None if
        none is live."""
        self._pending = deque(i for i in self._pending if not i.future.done())
        if not self._pending:
            return None
        first = self._pending[0]
        if len({self.group(i.key) for i in self._pending}) > 1:
            cap = TURN_SHARE * len(self._turns)
            within = (i for i in self._pending if self._taken[self.group(i.key)] <= cap)
            first = next(within, first)
        self._pending.remove(first)
        group = self.group(first.key)
        if len(self._turns) == self._turns.maxlen:
            gone = self._turns[0]
            self._taken[gone] -= 1
            if self._taken[gone] <= 0:
                del self._taken[gone]
        self._turns.append(group)
        self._taken[group] += 1
        return first

    async def _next_batch(self) -> list[_Item]:
        assert self._arrived is not None
        while True:
            while not self._pending:
                self._arrived.clear()
                await self._arrived.wait()
            first = self._pop_next()
            if first is not None:
                break
        batch = [first]
        size = self._size_for(first.key)
        self._take(first.key, batch, size)
        deadline = time.monotonic() + self.wait_s
        while len(batch) < size:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), left)
            self._take(first.key, batch, size)
        return batch

    async def _work(self) -> None:
        while True:
            batch = [i for i in await self._next_batch() if not i.future.done()]
            if not batch:
                continue
            self.stats.record(len(batch))
            try:
                results = await self.run(batch[0].key, [i.payload for i in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"a batch of {len(batch)} gave {len(results)} results")
            except Exception as exc:
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            for item, result in zip(batch, results, strict=True):
                if not item.future.done():
                    item.future.set_result(result)
