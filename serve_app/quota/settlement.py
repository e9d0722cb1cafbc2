"""What a router replica owes the ledger, and delivering it exactly once.

Metered usage, refunds of unspent allowances and key last-used times accumulate here
between settlements. Every ``ALLOWANCE_TTL_S`` the router cuts them into a numbered
``Settlement`` and sends the queue, oldest first; a settlement leaves the queue only
when the ledger acknowledged it. The ledger ignores a batch id it has already applied,
so a retry after a timeout (the ledger applied it but the answer was lost) or after a
ledger restart counts nothing twice, and nothing is dropped while the ledger is away
(up to ``MAX_PENDING_SETTLEMENTS``; beyond that the oldest go, loudly).

Every metered call is also written to the replica's ``Journal`` (if it has one) before
its answer leaves, and the journal is cut with each settlement: a router killed outright
leaves exactly what it had not settled, for another router to settle in its name
(``journal.py``).

The sending is injected (``send``), so this is tested without Ray.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from pathlib import Path

from serve_app.config import Quota
from serve_app.constants import KEY_ID_PREFIX, MAX_PENDING_SETTLEMENTS
from serve_app.quota.allowances import Refund
from serve_app.quota.journal import Entry, Journal
from serve_app.quota.usage import Settlement, UsageMeter

logger = logging.getLogger("ray.serve")
Send = Callable[[Settlement], Awaitable[object]]
# A tenant's current quota by id; None for a tenant that is gone (a lookup, not a copy
# of every tenant's: a router may know 10,000 of them).
QuotaOf = Callable[[str], Quota | None]


class Settler:
    """Args:
    origin: Prefix of this replica's settlement batch ids.
    journal_folder: Where to keep the journal (None: no journal, e.g. in unit tests).
    """

    def __init__(self, origin: str = "", journal_folder: Path | None = None) -> None:
        self.meter = UsageMeter()
        # This replica's name at the ledger: admissions granted to it are held under it.
        self.origin = f"{origin or 'router'}-{uuid.uuid4().hex[:12]}"
        self.journal = None if journal_folder is None else Journal(journal_folder, self.origin)
        self._seq = 0
        self._spent: Counter[tuple[str, str]] = Counter()
        self._charged: Counter[tuple[str, str]] = Counter()
        self._refunds: list[Refund] = []
        self._key_uses: dict[str, tuple[str, float]] = {}
        self._queue: deque[tuple[int, Settlement]] = deque()
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._queue)

    def record(self, entry: Entry) -> None:
        """Meter one call (and bill its admission if it was answered): journaled first,
        so it survives this process if the answer leaves."""
        if self.journal is not None:
            self.journal.write(entry)
        self.meter.record(entry.tenant, entry.model, entry.status, entry.epoch_s,
                          entry.images, entry.compute_s)  # fmt: skip
        if entry.spent_month is not None:
            billed = self._spent if entry.held else self._charged
            billed[(entry.tenant, entry.spent_month)] += entry.images

    def key_used(self, credential: str, tenant: str, now_epoch: float) -> None:
        if credential.startswith(KEY_ID_PREFIX):
            self._key_uses[credential] = (tenant, now_epoch)

    def refund(self, refunds: list[Refund]) -> None:
        self._refunds.extend(refunds)

    def cut(self, quota_of: QuotaOf) -> None:
        """Turn what accumulated into the next numbered settlement, if anything did."""
        settlement = Settlement(
            batch_id=f"{self.origin}-{self._seq}",
            origin=self.origin,
            spent=tuple((t, m, n) for (t, m), n in self._spent.items()),
            charged=tuple((t, m, n) for (t, m), n in self._charged.items()),
            usage=self.meter.take(),
            refunds=tuple(
                (r.tenant, quota, r.unused, r.month)
                for r in self._refunds
                # a deleted tenant's quota no longer matters
                if (quota := quota_of(r.tenant)) is not None
            ),
            key_uses=tuple((k, t, ts) for k, (t, ts) in self._key_uses.items()),
        )
        self._refunds, self._key_uses = [], {}
        self._spent, self._charged = Counter(), Counter()
        if settlement.empty():
            return
        if self.journal is not None:
            self.journal.cut(self._seq)
        self._queue.append((self._seq, settlement))
        self._seq += 1
        while len(self._queue) > MAX_PENDING_SETTLEMENTS:
            seq, lost = self._queue.popleft()
            self._forget(seq)
            self.dropped += 1
            logger.error(
                "router: ledger unreachable too long; dropped settlement %s", lost.batch_id
            )

    def _forget(self, seq: int) -> None:
        if self.journal is not None:
            self.journal.acknowledged(seq)

    async def deliver(self, send: Send) -> int:
        """Send queued settlements oldest first until one fails; returns how many left."""
        while self._queue:
            seq, settlement = self._queue[0]
            try:
                await send(settlement)
            except Exception as exc:
                logger.warning(
                    "router: settlement not delivered (%s); %d queued, retrying",
                    type(exc).__name__,
                    len(self._queue),
                )
                break
            self._queue.popleft()
            self._forget(seq)
        return len(self._queue)

    async def settle(self, quota_of: QuotaOf, send: Send) -> int:
        self.cut(quota_of)
        return await self.deliver(send)
