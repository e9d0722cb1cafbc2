"""A router's calls to one model's detector, once there are enough in flight, go together.

Each handle call costs the router ~3 ms of CPU, most of it Serve's own machinery
(docs/throughput.md), whatever it carries. So up to ``limit`` calls per model go one
image each, as before; a request that finds ``limit`` in flight waits, and each time a
call returns, the waiting ones (up to ``most``, first come first served) go as one call.
The detector runs their images through its batcher as it would have run them one by one.

The router sets ``limit`` to the tenant's ``max_replicas x target_ongoing_requests``
(``limit_for``, from the deployment's autoscaling when the application is built):
nothing waits here before Serve's autoscaler, which counts calls, sees enough of them to
want every replica the tenant may have. Below that, calls and scaling are as without it.

Pure asyncio: ``one`` and ``many`` are the calls (unit-tested with plain coroutines).
A waiting request that is cancelled (its client went away) is left out of the call.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


def limit_for(max_replicas: int, target_ongoing_requests: float) -> int:
    """Calls in flight to one model before requests wait: what Serve's autoscaler must
    see to want ``max_replicas``."""
    return max(1, math.ceil(max_replicas * target_ongoing_requests))


class Coalescer(Generic[Item, Result]):
    """Calls for one model: ``one(item)``, or ``many(items)`` (a result per item, in order)."""

    def __init__(
        self,
        one: Callable[[Item], Awaitable[Result]],
        many: Callable[[list[Item]], Awaitable[list[Result]]],
        limit: int,
        most: int,
    ) -> None:
        self.limit = limit  # calls in flight before requests wait (see limit_for)
        self._one, self._many, self._most = one, many, most
        self._in_flight = 0
        self._waiting: deque[tuple[Item, asyncio.Future[Result]]] = deque()
        self._sending: set[asyncio.Task[None]] = set()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    async def submit(self, item: Item) -> Result:
        if self._in_flight < self.limit and not self._waiting:
            self._in_flight += 1
            try:
                return await self._one(item)
            finally:
                self._in_flight -= 1
                self._release()
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        return await future

    def _release(self) -> None:
        """Send what waits, as calls of up to ``most``, while under ``limit``."""
        while self._waiting and self._in_flight < self.limit:
            group: list[tuple[Item, asyncio.Future[Result]]] = []
            while self._waiting and len(group) < self._most:
                item, future = self._waiting.popleft()
                if not future.done():  # not cancelled meanwhile
                    group.append((item, future))
            if group:
                self._in_flight += 1
                task = asyncio.get_running_loop().create_task(self._send(group))
                self._sending.add(task)  # a reference until it is done
                task.add_done_callback(self._sending.discard)

    async def _send(self, group: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        try:
            items = [item for item, _ in group]
            results = [await self._one(items[0])] if len(items) == 1 else await self._many(items)
            if len(results) != len(group):
                raise RuntimeError(f"{len(results)} results for {len(group)} coalesced calls")
        except asyncio.CancelledError:  # the loop is going away: so are the waiters
            for _, future in group:
                future.cancel()
            raise
        except Exception as exc:
            for _, future in group:
                if not future.done():
                    future.set_exception(exc)
        else:
            for (_, future), result in zip(group, results, strict=True):
                if not future.done():
                    future.set_result(result)
        finally:
            self._in_flight -= 1
            self._release()
