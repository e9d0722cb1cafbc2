"""What a router replica owes the ledger, and delivering it exactly once.

Metered usage, refunds of unspent allowances and key last-used times accumulate here
between settlements. Every ``ALLOWANCE_TTL_S`` the router cuts them into a numbered
``Settlement`` and sends the queue, oldest first; a settlement leaves the queue only
when the ledger acknowledged it. The ledger ignores a batch id it has already applied,
so a retry after a timeout (the ledger applied it but the answer was lost) or after a
ledger restart counts nothing twice, and nothing is dropped while the ledger is away
(up to ``MAX_PENDING_SETTLEMENTS``; beyond that the oldest go, loudly).

The sending is injected (``send``), so this is tested without Ray.
"""

from __future__ import annotations

import logging
import uuid
from collections import deque
from collections.abc import Awaitable, Callable

from serve_app.config import Quota
from serve_app.constants import KEY_ID_PREFIX, MAX_PENDING_SETTLEMENTS
from serve_app.quota.allowances import Refund
from serve_app.quota.usage import Settlement, UsageMeter

logger = logging.getLogger("ray.serve")
Send = Callable[[Settlement], Awaitable[object]]


class Settler:
    def __init__(self, origin: str = "") -> None:
        self.meter = UsageMeter()
        self._prefix = f"{origin or 'router'}-{uuid.uuid4().hex[:12]}"
        self._seq = 0
        self._refunds: list[Refund] = []
        self._key_uses: dict[str, tuple[str, float]] = {}
        self._queue: deque[Settlement] = deque()
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._queue)

    def key_used(self, credential: str, tenant: str, now_epoch: float) -> None:
        if credential.startswith(KEY_ID_PREFIX):
            self._key_uses[credential] = (tenant, now_epoch)

    def refund(self, refunds: list[Refund]) -> None:
        self._refunds.extend(refunds)

    def cut(self, quotas: dict[str, Quota]) -> None:
        """Turn what accumulated into the next numbered settlement, if anything did."""
        settlement = Settlement(
            batch_id=f"{self._prefix}-{self._seq}",
            usage=self.meter.take(),
            refunds=tuple(
                (r.tenant, quotas[r.tenant], r.unused, r.month)
                for r in self._refunds
                if r.tenant in quotas  # a deleted tenant's quota no longer matters
            ),
            key_uses=tuple((k, t, ts) for k, (t, ts) in self._key_uses.items()),
        )
        self._refunds, self._key_uses = [], {}
        if settlement.empty():
            return
        self._seq += 1
        self._queue.append(settlement)
        while len(self._queue) > MAX_PENDING_SETTLEMENTS:
            lost = self._queue.popleft()
            self.dropped += 1
            logger.error(
                "router: ledger unreachable too long; dropped settlement %s", lost.batch_id
            )

    async def deliver(self, send: Send) -> int:
        """Send queued settlements oldest first until one fails; returns how many left."""
        while self._queue:
            try:
                await send(self._queue[0])
            except Exception as exc:
                logger.warning(
                    "router: settlement not delivered (%s); %d queued, retrying",
                    type(exc).__name__,
                    len(self._queue),
                )
                break
            self._queue.popleft()
        return len(self._queue)

    async def settle(self, quotas: dict[str, Quota], send: Send) -> int:
        self.cut(quotas)
        return await self.deliver(send)
