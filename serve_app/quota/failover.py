"""The router's view of the ledger: the primary, and the warm standby when it is gone.

``FailoverLedger`` has the shape of one Serve handle (``ledger.grant.remote(...)``
returns an awaitable), so ``Admission`` and the router use it like the handle it
replaces. Each call goes to the replica that led last. It moves to the other one when
the call fails because its replica died or is not the leader (``NotLeader``: a
replacement started while the other leads), or when no answer came within
``LEDGER_FAILOVER_AFTER_S`` and the other one can lead — after its replica died, Serve's
handle holds calls until a replacement is up (~3 s), and the standby is up now. Moving
is ``take_over`` on the other one: it leads only if the lock is free (the leader's
process is gone) and, for the standby, only if it sees the file the leader had.

When neither can take the call, the first failure is raised, so ``Admission``'s own
ride-through and fail-closed rules apply as before.

Pure asyncio: the handles and the predicate that tells a dead replica are passed in
(``ray_compat.is_replica_gone`` in the router), so this is unit-tested without Ray.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from serve_app.constants import LEDGER_FAILOVER_AFTER_S, LEDGER_TIMEOUT_S
from serve_app.quota.leadership import NotLeader

logger = logging.getLogger("ray.serve")

PRIMARY, STANDBY = 0, 1


class FailoverLedger:
    """Two ledger handles, one call at a time going to the one that leads."""

    def __init__(
        self,
        primary: Any,
        standby: Any,
        replica_gone: Callable[[BaseException], bool],
        failover_after_s: float = LEDGER_FAILOVER_AFTER_S,
    ) -> None:
        self._handles = (primary, standby)
        self._replica_gone = replica_gone
        self._failover_after_s = failover_after_s
        self._current = PRIMARY
        self._epoch: str | None = None  # the ledger file the leader has, once known
        self.failovers = 0

    def __getattr__(self, method: str) -> _Method:
        if method.startswith("_"):
            raise AttributeError(method)
        return _Method(self, method)

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        current = self._current
        if self._epoch is None:  # the first call: learn which file the leader has
            await self._take_over(current)
            current = self._current
        attempt = asyncio.ensure_future(self._invoke(current, method, args, kwargs))
        try:
            done, _ = await asyncio.wait({attempt}, timeout=self._failover_after_s)
            if not done and not await self._take_over(1 - current):
                return await attempt  # slow, but still the leader: wait for it
            if done:
                return attempt.result()
        except Exception as exc:
            if not self._moves(exc) or not await self._take_over(1 - current):
                raise
        finally:
            if not attempt.done():
                attempt.cancel()
        return await self._invoke(self._current, method, args, kwargs)

    def _moves(self, exc: BaseException) -> bool:
        return isinstance(exc, NotLeader) or self._replica_gone(exc)

    async def _invoke(self, index: int, method: str, args: Any, kwargs: Any) -> Any:
        return await getattr(self._handles[index], method).remote(*args, **kwargs)

    async def _take_over(self, index: int) -> bool:
        """Have replica ``index`` lead (a no-op if it does); True if it does now."""
        expected = self._epoch if index == STANDBY else None
        try:
            async with asyncio.timeout(LEDGER_TIMEOUT_S):
                epoch = await self._handles[index].take_over.remote(expected)
        except Exception as exc:
            if not isinstance(exc, (TimeoutError, NotLeader)) and not self._replica_gone(exc):
                raise
            return False
        if index != self._current:
            self.failovers += 1
            logger.warning("router: the quota ledger's %s took over",
                           "standby" if index == STANDBY else "primary")  # fmt: skip
        self._current, self._epoch = index, str(epoch)
        return True


class _Method:
    """``ledger.<method>`` with a handle's ``.remote(...)``."""

    def __init__(self, ledger: FailoverLedger, method: str) -> None:
        self._ledger, self._method = ledger, method

    def remote(self, *args: Any, **kwargs: Any) -> Awaitable[Any]:
        return self._ledger.call(self._method, *args, **kwargs)


def ask_leader_blocking(handles: Sequence[Any], method: str, *args: Any, timeout_s: float) -> Any:
    """For callers outside an event loop (``tenantctl``, tests): the answer of whichever of
    the ledger ``handles`` (primary first) leads; a call nobody leads takes it over."""
    refused: NotLeader | None = None
    for handle in handles:
        try:
            return getattr(handle, method).remote(*args).result(timeout_s=timeout_s)
        except NotLeader as exc:
            refused = exc
    raise refused or NotLeader("no ledger replica leads")
