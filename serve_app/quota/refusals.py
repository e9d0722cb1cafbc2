"""Refusals a router repeats on its own, and clients that ignore ``Retry-After``.

Once the ledger has refused a tenant for its rate, nothing can admit that tenant before
the time it named: a GCRA bucket only moves later with admissions, whichever router
makes them. So the router remembers the window and refuses inside it from what it
already knows: no ledger call, no body read, a few microseconds of Python. A monthly
refusal is remembered only briefly (``REFUSAL_MONTHLY_REMEMBER_S``): refunds of other
routers' unspent allowances may still free the month's last images. Concurrency refusals
are not remembered (a lease may be released at any moment). A window is kept with the
quota it was decided under; once the tenant's quota changes it no longer applies.

A request that arrives inside a window was sent by a client that did not wait as told.
Its 429 is **held** until the ``Retry-After`` the tenant was given (whole seconds, at
least one) has passed, at most ``REFUSAL_MAX_HOLD_S``: a client that retries at once
is slowed to about one refusal per second per connection, instead of being refused as
fast as it can send (which cost the other tenants the CPU of every refusal). A held
refusal costs a timer, but it occupies one of the router's request slots, so at most
``REFUSAL_MAX_HELD`` per tenant (and ``REFUSAL_MAX_HELD_TOTAL`` in all) are held at a
time; past that a refusal is answered at once. A tenant's honest first refusal is never
held. Each hold is lengthened by a random fraction of ``REFUSAL_HOLD_JITTER_S``:
refusals held together are not released together, to come back as one burst.

Pure, with an injected clock: unit-tested in microseconds; ``Admission`` uses it.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from serve_app.config import Quota
from serve_app.constants import (
    REFUSAL_HOLD_JITTER_S,
    REFUSAL_MAX_HELD,
    REFUSAL_MAX_HELD_TOTAL,
    REFUSAL_MAX_HOLD_S,
    REFUSAL_MONTHLY_REMEMBER_S,
)
from serve_app.errors import QuotaExceeded
from serve_app.quota.gcra import Decision

QUOTA_MESSAGES = {
    "rate_limited": "request rate over your quota; slow down and retry after Retry-After seconds",
    "too_many_concurrent": "too many requests in flight for your account; wait for some to finish",
    "monthly_quota_exceeded": "monthly image quota used up; it resets at the start of next month",
}
REMEMBERED = ("rate_limited", "monthly_quota_exceeded")


def rate_limit_headers(limit: int | None, remaining: int | None, reset_s: float) -> dict[str, str]:
    """IETF ``RateLimit-*`` fields."""
    headers = {}
    if limit is not None:
        headers["RateLimit-Limit"] = str(limit)
    if remaining is not None:
        headers["RateLimit-Remaining"] = str(remaining)
    headers["RateLimit-Reset"] = str(max(0, math.ceil(reset_s)))
    return headers


def refusal(code: str, retry_after_s: float, headers: dict[str, str]) -> QuotaExceeded:
    """The 429 for a quota refusal (``Retry-After`` in whole seconds, at least 1)."""
    return QuotaExceeded(
        QUOTA_MESSAGES[code],
        reason=code,
        retry_after_s=max(1, math.ceil(retry_after_s)),
        headers=headers,
    )


@dataclass
class Window:
    """What the ledger said when it refused (times on the ``Refusals`` clock)."""

    quota: Quota
    code: str
    until: float  # monotonic: refused locally before this
    retry_at: float  # monotonic: what Retry-After counts down to
    told_until: float  # monotonic: the end of the Retry-After the client was given
    reset_at: float
    limit: int | None
    held: int = 0

    def error(self, now: float) -> QuotaExceeded:
        headers = rate_limit_headers(self.limit, 0, self.reset_at - now)
        return refusal(self.code, self.retry_at - now, headers)


class LocalRefusal:
    """A refusal decided here: hold it ``hold_s`` (``with refusal.holding():``), then
    raise ``refusal.error()``."""

    def __init__(self, refusals: Refusals, window: Window, hold_s: float) -> None:
        self._refusals, self._window, self.hold_s = refusals, window, hold_s

    @contextlib.contextmanager
    def holding(self) -> Iterator[None]:
        self._window.held += 1
        self._refusals.held += 1
        self._refusals.holding_now += 1
        try:
            yield
        finally:
            self._window.held -= 1
            self._refusals.holding_now -= 1

    def error(self) -> QuotaExceeded:
        """The 429 as of now (``Retry-After`` counts down while it was held)."""
        return self._window.error(self._refusals.now())


class Refusals:
    """Per tenant: the window in which the ledger has already said no."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        max_hold_s: float = REFUSAL_MAX_HOLD_S,
        max_held: int = REFUSAL_MAX_HELD,
        max_held_total: int = REFUSAL_MAX_HELD_TOTAL,
        jitter: Callable[[], float] = lambda: random.uniform(0, REFUSAL_HOLD_JITTER_S),  # noqa: S311
    ) -> None:
        self.now = clock
        self._jitter = jitter
        self._max_hold_s = max_hold_s
        self._max_held = max_held
        self._max_held_total = max_held_total
        self.holding_now = 0  # refusals being held right now, all tenants
        self._windows: dict[str, Window] = {}
        self.local = 0  # refusals decided here (for tests and metrics)
        self.held = 0  # of those, refusals held

    def remember(self, tenant: str, quota: Quota, decision: Decision) -> None:
        """The ledger refused ``tenant`` under ``quota``: keep the window."""
        if decision.code not in REMEMBERED:
            return
        now = self.now()
        remember_s = decision.retry_after_s
        if decision.code == "monthly_quota_exceeded":
            remember_s = min(remember_s, REFUSAL_MONTHLY_REMEMBER_S)
        self._windows[tenant] = Window(
            quota,
            decision.code,
            until=now + remember_s,
            retry_at=now + decision.retry_after_s,
            told_until=now + max(1, math.ceil(decision.retry_after_s)),
            reset_at=now + decision.reset_s,
            limit=decision.limit,
        )

    def check(self, tenant: str, quota: Quota) -> LocalRefusal | None:
        """The refusal to answer without asking the ledger, or None to ask it."""
        window = self._windows.get(tenant)
        if window is None:
            return None
        now = self.now()
        if now >= window.until or window.quota != quota:
            del self._windows[tenant]
            return None
        self.local += 1
        hold_s = 0.0
        if window.held < self._max_held and self.holding_now < self._max_held_total:
            hold_s = min(window.told_until - now, self._max_hold_s) + self._jitter()
        return LocalRefusal(self, window, hold_s)

    def window(self, tenant: str) -> Window | None:
        """The window in which ``tenant`` is refused here, if any."""
        window = self._windows.get(tenant)
        return window if window is not None and self.now() < window.until else None

    def forget(self) -> None:
        """Quotas may have changed: decide afresh."""
        self._windows.clear()

    def __len__(self) -> int:
        return len(self._windows)
