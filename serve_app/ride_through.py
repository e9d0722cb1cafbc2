"""Riding through a replica's death: send a call again while the failure says the
replica is gone, within a time budget.

Ray Serve does not re-send a call whose replica died with it in flight (the caller gets
``ActorDiedError`` or ``ActorUnavailableError``), and a handle may pick the dead replica
until Serve's controller has noticed the death. The calls the router makes are safe to
repeat: detection is idempotent and billed by the router once it has an answer; ledger
admissions and grants that failed were never applied (the ledger's state is its SQLite
file, written in the same call). So the router repeats them — the handle routes the
next attempt to a live replica or the replacement — with a short doubling wait, and gives
up when the budget is spent (the caller then answers 503 with Retry-After).

Pure asyncio: the predicate that tells a retryable failure is passed in
(``ray_compat.is_replica_gone`` in the router), so this is unit-tested without Ray.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from serve_app.constants import RIDE_THROUGH_FIRST_WAIT_S, RIDE_THROUGH_MAX_WAIT_S, RIDE_THROUGH_S

logger = logging.getLogger("ray.serve")
T = TypeVar("T")


async def ride_through(
    call: Callable[[], Awaitable[T]],
    retryable: Callable[[BaseException], bool],
    what: str,
    budget_s: float | None = None,
    max_wait_s: float = RIDE_THROUGH_MAX_WAIT_S,
) -> T:
    """``await call()``, made again while it fails with a ``retryable`` error and the
    next attempt would start within ``budget_s`` (default ``RIDE_THROUGH_S``); otherwise
    the last error is raised. The waits between attempts double up to ``max_wait_s``."""
    deadline = time.monotonic() + (RIDE_THROUGH_S if budget_s is None else budget_s)
    wait = RIDE_THROUGH_FIRST_WAIT_S
    attempt = 1
    while True:
        try:
            return await call()
        except Exception as exc:
            if not retryable(exc) or time.monotonic() + wait > deadline:
                raise
            logger.warning(
                "router: %s failed (%s), attempt %d; sending it again in %.2f s",
                what, type(exc).__name__, attempt, wait,
            )  # fmt: skip
        await asyncio.sleep(wait)
        wait = min(wait * 2, max_wait_s)
        attempt += 1
