"""``GET /readyz``: can the platform serve its tenants right now?

Ready when every always-on dedicated tenant's default model loads, and the shared pool
loads one shared tenant's (checking every shared tenant would churn its LRU). Tenants
that may scale to zero are not probed: a probe would keep them from ever reaching zero,
and their first request waits through a cold start instead (not a failure). A success
stands for ``READY_CACHE_S``, since probes come every few seconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from serve_app.config import TenantEntry
from serve_app.constants import READY_CACHE_S, READY_TIMEOUT_S
from serve_app.errors import ModelUnavailable
from serve_app.inference.detector_client import DetectorClient
from serve_app.wire import model_id

logger = logging.getLogger("ray.serve")
READY: dict[str, Any] = {"status": "ready"}
NOT_READY: dict[str, Any] = {"status": "not_ready"}


class Readiness:
    """The router's readiness probe, with its last success cached."""

    def __init__(
        self,
        detectors: DetectorClient,
        scale_to_zero: Iterable[str] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._detectors = detectors
        self._scale_to_zero = frozenset(scale_to_zero)
        self._clock = clock
        self._ready_until = 0.0

    def forget(self) -> None:
        """The tenant table changed: probe again next time."""
        self._ready_until = 0.0

    async def check(self, tenants: list[TenantEntry]) -> tuple[int, dict[str, Any]]:
        """(HTTP status, body) of the probe."""
        active = [t for t in tenants if t.status == "active"]
        if not active:
            return _not_ready("no tenants configured")
        if self._clock() < self._ready_until:
            return 200, READY
        probes = [t for t in active if t.tier == "dedicated" and t.id not in self._scale_to_zero]
        probes += [t for t in active if t.tier == "shared"][:1]
        try:  # every handle first: no call is sent if one detector is missing
            handles = [self._detectors.for_model(t, _default_model_id(t)) for t in probes]
        except ModelUnavailable:
            return _not_ready("a detector is missing")
        calls = [handle.ready.remote() for handle in handles]
        try:
            async with asyncio.timeout(READY_TIMEOUT_S):
                await asyncio.gather(*calls)
        except Exception as exc:
            return _not_ready(f"a model failed to load ({type(exc).__name__})")
        self._ready_until = self._clock() + READY_CACHE_S
        return 200, READY


def _not_ready(reason: str) -> tuple[int, dict[str, Any]]:
    """503; why goes to the operator's log only: the probe is public, and what tenants
    exist or fail is nobody else's business."""
    logger.warning("router: not ready: %s", reason)
    return 503, NOT_READY


def _default_model_id(tenant: TenantEntry) -> str:
    model = tenant.model(tenant.default_model)
    assert model is not None  # TenantEntry validates its default model
    return model_id(tenant.id, model.name, model.active_version)
