"""A shared-tier tenant's share of the shared pool's model slots.

The shared pool keeps a few models warm per replica (``MAX_MODELS_PER_REPLICA``, least
recently used goes). Every shared tenant's active versions live there; a tenant that
pins old versions one after another (``version=1``, ``2``, ``3``, ...) would load each
and evict the other tenants' models, making their next requests wait for a reload. So a
router lets each shared tenant keep at most ``SHARED_PINNED_VERSIONS`` distinct *pinned*
versions (other than the model's active one) in use per ``SHARED_PIN_WINDOW_S``; a new
one past that is a 429 that says when a slot frees and what to do instead. The active
versions are the operator's choice and are not counted; dedicated tenants have their own
replicas and are not limited.

Pure, with an injected clock: unit-tested in microseconds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from serve_app.constants import SHARED_PIN_WINDOW_S, SHARED_PINNED_VERSIONS
from serve_app.errors import QuotaExceeded


class PoolShare:
    """Per tenant: pinned model ids used within the window, and when each was last used."""

    def __init__(
        self,
        pinned: int = SHARED_PINNED_VERSIONS,
        window_s: float = SHARED_PIN_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pinned = pinned
        self._window_s = window_s
        self._clock = clock
        self._used: dict[str, dict[str, float]] = {}  # tenant -> model id -> last use

    def check(self, tenant_id: str, model_id: str) -> None:
        """Before a request for a pinned (not active) version on the shared pool.

        Raises:
            QuotaExceeded: The tenant already keeps its share of other pinned versions.
        """
        now = self._clock()
        used = self._warm(tenant_id, now)
        if model_id not in used and len(used) >= self._pinned:
            wait = min(used.values()) + self._window_s - now
            raise QuotaExceeded(
                f"the shared tier keeps at most {self._pinned} pinned model versions per "
                f"account warm at a time ({self._window_s:g} s after last use); use the "
                "active version (no version=), one you pinned recently, or ask for a "
                "dedicated deployment",
                reason="pool_share",
                retry_after_s=max(1, math.ceil(wait)),
            )

    def record(self, tenant_id: str, model_id: str) -> None:
        """After it was answered: the version is loaded and holds a slot (one that failed
        to load holds none, and is not counted)."""
        now = self._clock()
        used = self._warm(tenant_id, now)
        used[model_id] = now
        self._used[tenant_id] = used

    def _warm(self, tenant_id: str, now: float) -> dict[str, float]:
        used = self._used.get(tenant_id, {})
        return {m: t for m, t in used.items() if now - t < self._window_s}
