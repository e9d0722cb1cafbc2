"""A router replica's side of quota enforcement: admit, release, meter, settle.

``Admission`` admits each request from the replica's local allowance when it has one
(``allowances.py``), else by asking the ledger: a batch for the allowance or, for
tenants with a concurrency cap, exactly this request and a lease to release after it.
It fails closed: a ledger that does not answer in time is a 503, never an admission
without metering; a ledger replica that died is asked again while Serve replaces it
(``ride_through``), so a ledger restart is latency, not errors.

Usage, refunds and key use accumulate in a ``Settler`` and go to the ledger from a
background loop that starts with the replica, is restarted with back-off if it ever
dies, and is flushed once more when the replica shuts down.

Billing is exact: the ledger holds what it grants this replica until told, per request,
whether it was answered (``record`` with the request's ``Ticket``: billed) or not
(``unspent``: refunded). Each answer is journaled before it leaves; the same loop looks
for the journals of routers that died on this node and settles them (``sweep``).

The ledger is anything with Serve-handle-shaped methods (``ledger.admit.remote(...)``
returning an awaitable), so this is unit-tested with a fake ledger and no Ray.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serve_app.config import Quota
from serve_app.constants import (
    ALLOWANCE_TTL_S,
    JOURNAL_SWEEP_S,
    LEDGER_RETRY_MAX_WAIT_S,
    LEDGER_RIDE_THROUGH_S,
    LEDGER_TIMEOUT_S,
    MONTHLY_RECHECK_S,
    RETRY_AFTER_S,
    SETTLE_FLUSH_ATTEMPTS,
    SETTLE_RESTART_MAX_S,
    SETTLE_RESTART_MIN_S,
)
from serve_app.errors import Overloaded, QuotaExceeded
from serve_app.quota.allowances import Allowances, Refund, uses_allowances
from serve_app.quota.gcra import Decision, month_key
from serve_app.quota.journal import Entry, orphans
from serve_app.quota.leadership import NotLeader
from serve_app.quota.refusals import Refusals, rate_limit_headers, refusal
from serve_app.quota.settlement import QuotaOf, Settler
from serve_app.quota.usage import Settlement
from serve_app.ray_compat import is_replica_gone
from serve_app.ride_through import ride_through

logger = logging.getLogger("ray.serve")


@dataclass(frozen=True)
class Ticket:
    """One admitted request: the month its admission was charged to, and for a tenant
    with a concurrency cap the lease to release."""

    month: str
    lease: str | None = None
    held: bool = True  # granted by the ledger (False: an unlimited tenant, admitted here)


class Admission:
    """Admission control and metering for one router replica.

    Args:
        ledger: The ``QuotaLedger`` handle (or a fake with the same methods).
        quota_of: A tenant's current quota by id (asked at each settlement).
        origin: Prefix of this replica's settlement batch ids.
        journal_folder: The node's journal folder (None: no journal, no sweeping).
    """

    def __init__(
        self,
        ledger: Any,
        quota_of: QuotaOf,
        origin: str = "router",
        journal_folder: Path | None = None,
    ) -> None:
        self._ledger = ledger
        self._quota_of = quota_of
        self._allowances = Allowances()
        self.refusals = Refusals()
        self.settler = Settler(origin=origin, journal_folder=journal_folder)
        self._journal_folder = journal_folder
        self._next_sweep = 0.0
        self._ledger_heard_until = 0.0  # monotonic; see admit()
        self.restarts = 0  # times the settle loop died and was started again
        self._task: asyncio.Task[None] | None = None

    def record(
        self,
        tenant: str,
        model: str,
        status: int,
        compute_s: float = 0.0,
        ticket: Ticket | None = None,
    ) -> None:
        """Meter one detect call; a 200 bills the admission on ``ticket``. A call that was
        admitted and not answered must also give its admission back (``unspent``)."""
        answered = status == 200
        spent = ticket.month if answered and ticket is not None else None
        held = ticket is None or ticket.held
        self.settler.record(
            Entry(tenant, model, status, time.time(), int(answered), compute_s, spent, held)
        )

    def unspent(self, tenant: str, ticket: Ticket) -> None:
        """An admitted request that was not answered: refund its admission."""
        if ticket.held:  # an unlimited tenant's admission was never charged
            self.settler.refund([Refund(tenant, 1, ticket.month)])

    def start(self) -> None:
        """Start the settle loop on the running event loop (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._supervise())

    def reset(self) -> None:
        """Quotas may have changed, or a tenant was suspended: spend nothing granted
        under the old table, and ask the ledger afresh."""
        self.settler.refund(self._allowances.drain())
        self.refusals.forget()

    async def admit(self, tenant_id: str, quota: Quota, credential: str) -> Ticket:
        """Admit one request; its ticket goes back with ``record`` or ``unspent``.

        Raises:
            QuotaExceeded: The tenant is over a limit (429 with ``Retry-After``); inside
                a window the ledger already refused, decided here and held
                (``refusals.py``).
            Overloaded: The ledger did not answer in time (503: fail closed).
        """
        self.start()
        self.settler.key_used(credential, tenant_id, time.time())
        local = self.refusals.check(tenant_id, quota)
        if local is not None:  # told to wait, and back before the time: no ledger call
            if local.hold_s > 0:
                with local.holding():
                    await asyncio.sleep(local.hold_s)
            raise local.error()
        if quota.unlimited and time.monotonic() < self._ledger_heard_until:
            # Nothing to enforce: no ledger call (a ledger restart holds nothing up); the
            # answer is charged when settled. Once the ledger has been silent for
            # LEDGER_RIDE_THROUGH_S, these too wait for it (fail closed).
            return Ticket(month_key(time.time()), held=False)
        origin = self.settler.origin
        if not uses_allowances(quota):
            decision = await self._decide(
                tenant_id, quota, lambda: self._ledger.admit.remote(tenant_id, quota, 1, origin)
            )
            return Ticket(decision.month, decision.lease_id)
        month = self._allowances.take(tenant_id, time.monotonic())
        if month is not None:
            return Ticket(month)
        want = self._allowances.want(tenant_id, quota)
        ask = lambda: self._ledger.grant.remote(tenant_id, quota, want, origin)  # noqa: E731
        try:
            decision = await self._decide(tenant_id, quota, ask, remember=False)
        except QuotaExceeded as exc:
            if exc.reason != "monthly_quota_exceeded":
                raise
            # The month's last images may sit unspent in another router's allowance; it
            # refunds them within MONTHLY_RECHECK_S. Ask once more before saying 429.
            await asyncio.sleep(MONTHLY_RECHECK_S)
            decision = await self._decide(tenant_id, quota, ask)
        now = time.monotonic()
        self.settler.refund(
            self._allowances.store(tenant_id, decision.granted, decision.month, now)
        )
        return Ticket(decision.month)

    async def release(self, tenant_id: str, lease: str) -> None:
        """Give back a concurrency lease before answering: a client that sends its next
        request the moment it has this answer must find the slot free. A lease the
        ledger never hears about expires on its own (``LEASE_TTL_S``)."""
        try:
            async with asyncio.timeout(LEDGER_TIMEOUT_S):
                await self._ledger.release.remote(tenant_id, lease)
        except Exception as exc:
            logger.warning("router: lease release failed (%s); it will expire", type(exc).__name__)

    async def _decide(
        self, tenant_id: str, quota: Quota, call: Callable[[], Any], remember: bool = True
    ) -> Decision:
        """A ledger decision; 503 if none comes in time, 429 if it says no (remembered
        unless a monthly refusal is about to be asked again: ``remember``). A ledger
        replica that died (or is being replaced) is asked again for up to
        ``LEDGER_RIDE_THROUGH_S``: a failed call was never applied, and one that timed out
        was cancelled before a replica took it or is applied by the replacement's
        SQLite as any other — a grant counts against the quota whoever asked."""

        async def attempt() -> Decision:
            async with asyncio.timeout(LEDGER_TIMEOUT_S):  # no extra task, unlike wait_for
                found: Decision = await call()
                return found

        try:
            decision = await ride_through(
                attempt,
                _ledger_restarting,
                "quota ledger call",
                LEDGER_RIDE_THROUGH_S,
                LEDGER_RETRY_MAX_WAIT_S,
            )
        except Exception as exc:
            logger.error("router: quota ledger unavailable: %s", type(exc).__name__)
            raise Overloaded(
                "admission control is unavailable; retry shortly", retry_after_s=RETRY_AFTER_S
            ) from None
        self._heard_from_ledger()
        if not decision.allowed:
            if remember or decision.code != "monthly_quota_exceeded":
                self.refusals.remember(tenant_id, quota, decision)
            headers = rate_limit_headers(decision.limit, decision.remaining, decision.reset_s)
            raise refusal(decision.code, decision.retry_after_s, headers)
        return decision

    async def _supervise(self) -> None:
        """Run the settle loop; if it dies, log it and start it again after a back-off
        (doubling up to ``SETTLE_RESTART_MAX_S``), so metering never stops for good."""
        backoff = SETTLE_RESTART_MIN_S
        while True:
            try:
                await self._settle_loop()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.restarts += 1
                logger.exception("router: settle loop died; restarting in %.1f s", backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, SETTLE_RESTART_MAX_S)

    async def _settle_loop(self) -> None:
        while True:
            await asyncio.sleep(ALLOWANCE_TTL_S)
            await self.settle()
            if time.monotonic() >= self._next_sweep:
                self._next_sweep = time.monotonic() + JOURNAL_SWEEP_S
                await self.sweep()

    async def sweep(self) -> int:
        """Settle the journals of routers that died on this node, in their names, then
        have the ledger refund what they still held. Returns how many were closed; one
        that fails stays for the next sweep (resent batches count once)."""
        if self._journal_folder is None:
            return 0
        closed = 0
        for orphan in orphans(self._journal_folder, self.settler.origin):
            try:
                for segment in orphan.segments():
                    settlement = Settlement(
                        batch_id=f"{orphan.origin}-{segment.seq}",
                        origin=orphan.origin,
                        usage=segment.meter.take(),
                        spent=tuple((t, m, n) for (t, m), n in segment.spent.items()),
                        charged=tuple((t, m, n) for (t, m), n in segment.charged.items()),
                    )
                    if not settlement.empty():
                        await self._send(settlement)
                async with asyncio.timeout(LEDGER_TIMEOUT_S):
                    refunded = await self._ledger.close_origin.remote(orphan.origin)
            except Exception as exc:
                orphan.release()
                logger.warning("router: a dead router's journal was not settled (%s); "
                               "retrying", type(exc).__name__)  # fmt: skip
                continue
            orphan.remove()
            closed += 1
            logger.info("router: settled the journal of a router that died (%d refunded)",
                        refunded)  # fmt: skip
        return closed

    async def settle(self) -> int:
        """Refund expired allowances and send what is owed; returns how many are left."""
        self.settler.refund(self._allowances.expired(time.monotonic()))
        return await self.settler.settle(self._quota_of, self._send)

    async def _send(self, settlement: Settlement) -> None:
        async with asyncio.timeout(LEDGER_TIMEOUT_S):
            await self._ledger.settle.remote(settlement)
        self._heard_from_ledger()

    def _heard_from_ledger(self) -> None:
        self._ledger_heard_until = time.monotonic() + LEDGER_RIDE_THROUGH_S

    async def close(self) -> int:
        """Stop the loop, refund every allowance and flush what is owed (graceful
        shutdown). Returns the settlements still undelivered (logged)."""
        if self._task is not None:
            self._task.cancel()
        self.settler.refund(self._allowances.drain())
        left = len(self.settler)
        try:
            for _ in range(SETTLE_FLUSH_ATTEMPTS):
                left = await self.settle()
                if not left:
                    break
        except Exception as exc:
            logger.error("router: final settlement failed: %s", type(exc).__name__)
        if left:
            logger.error("router: %d settlements undelivered at shutdown", left)
        elif self.settler.journal is not None:
            self.settler.journal.close()  # all settled: nothing for anyone to sweep
        return left


def _ledger_restarting(exc: BaseException) -> bool:
    """A ledger call worth making again: its replica died, or it timed out (Serve's
    handle holds calls while no ledger replica is up), or the replica that took it does
    not lead yet (the one being replaced still holds the file)."""
    return isinstance(exc, (TimeoutError, NotLeader)) or is_replica_gone(exc)
