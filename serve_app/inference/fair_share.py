"""A router's turns at the shared pool: per-tenant queues, taken round the tenants.

Requests a router sends to a full shared pool wait in Serve's own queue, first come
first served: a tenant that sent 40 at once (inside its quota) would make the tenant
behind it wait for all 40. So before a shared-tier call, a router takes a turn here.
While several tenants have calls in flight or waiting, each may have at most its share
of the pool's slots (``slots``: what its replicas may hold at most) in flight: an equal
share, but never less than ``TURN_SHARE`` (half) of the slots, so that with many light
tenants about, a busy one within half the pool (the hottest of 200, at a fifth of the
calls) is not held back for being busier than they are; past its share a tenant's calls
wait in its own queue, and a slot freed goes round the tenants with calls waiting, one
at a time. A tenant alone may use every slot, so the
gate costs no throughput, and Serve's queue (which the autoscaler sees) still holds up to
a share of each busy tenant's calls. The pool replica serves what reaches it in turns
too (``batcher.py``).

Pure asyncio, no Ray: unit-tested in microseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import Counter, deque
from collections.abc import AsyncIterator

from serve_app.constants import TURN_SHARE


class FairShare:
    """Args:
    slots: The most calls the shared pool can hold at once (replicas x per replica).
    """

    def __init__(self, slots: int) -> None:
        self.slots = max(1, slots)
        self._in_flight: Counter[str] = Counter()
        self._waiting: dict[str, deque[asyncio.Future[None]]] = {}  # in turn order

    def share(self) -> int:
        """Calls one busy tenant may have in flight now."""
        busy = len(self._in_flight.keys() | self._waiting.keys())
        return self._share_of(busy)

    def in_flight(self, tenant: str) -> int:
        return self._in_flight[tenant]

    def waiting(self, tenant: str) -> int:
        return len(self._waiting.get(tenant, ()))

    @contextlib.asynccontextmanager
    async def turn(self, tenant: str) -> AsyncIterator[None]:
        """Hold one of ``tenant``'s slots for the block; wait for it if need be."""
        if tenant in self._waiting or self._in_flight[tenant] >= self._share_with(tenant):
            await self._wait(tenant)
        else:
            self._in_flight[tenant] += 1
        try:
            yield
        finally:
            self._release(tenant)

    def _share_with(self, tenant: str) -> int:
        """The share once ``tenant`` counts as busy."""
        busy = len(self._in_flight.keys() | self._waiting.keys() | {tenant})
        return self._share_of(busy)

    def _share_of(self, busy: int) -> int:
        equal = math.ceil(self.slots / max(1, busy))
        return max(1, equal, math.ceil(self.slots * TURN_SHARE))

    async def _wait(self, tenant: str) -> None:
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(tenant, deque()).append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():  # given a slot as it was cancelled
                self._release(tenant)
            else:
                self._forget(tenant, turn)
            raise

    def _forget(self, tenant: str, turn: asyncio.Future[None]) -> None:
        queue = self._waiting.get(tenant)
        if queue is not None:
            with contextlib.suppress(ValueError):
                queue.remove(turn)
            if not queue:
                del self._waiting[tenant]
        self._hand_out()

    def _release(self, tenant: str) -> None:
        self._in_flight[tenant] -= 1
        if self._in_flight[tenant] <= 0:
            del self._in_flight[tenant]
        self._hand_out()

    def _hand_out(self) -> None:
        """Give freed slots round the waiting tenants, one per tenant per round."""
        progress = True
        while progress and self._waiting:
            progress = False
            for tenant in list(self._waiting):
                if self._in_flight[tenant] >= self.share():
                    continue
                queue = self._waiting.pop(tenant)
                turn = queue.popleft()
                if queue:
                    self._waiting[tenant] = queue  # to the back of the round
                progress = True
                if turn.done():  # cancelled, its task not yet told: no slot taken
                    continue
                self._in_flight[tenant] += 1
                turn.set_result(None)
