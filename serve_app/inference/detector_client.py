"""How a router reaches the detectors: which deployment, which model, what if it fails.

* A tenant's models run on its own deployment (``tenant-<id>``) or the shared pool.
* ``handle.options(multiplexed_model_id=...)`` is made once per model id and kept
  (up to ``MAX_CACHED_HANDLES``): Serve routes each call to a replica holding that model.
* Calls to the shared pool take turns per tenant (``fair_share``): one tenant's burst
  does not queue ahead of every other tenant's requests.
* A version that cannot be loaded (a broken upload) falls back to the tenant's previous
  version, so the tenant stays served while the operator looks at the failure.
* A dedicated tenant's calls beyond ``max_replicas x target_ongoing_requests`` in flight
  to one model wait and go together (``coalescer``): fewer, fuller calls when the
  tenant's replicas are all the autoscaler could want anyway.
* Errors: the detector returns client errors (400/404/413/415/422) as values. A call
  whose replica died or was unreachable is sent again for up to ``RIDE_THROUGH_S``
  (``ride_through``: another replica or the replacement answers it); Ray's errors left
  after that, or back-pressure, become a 503 with ``Retry-After``
  (``ray_compat.is_unavailable``), never a 500.

Handles are duck-typed (``handle.options(...).detect.remote(...)``), so this is
unit-tested with fake handles and no Ray.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from serve_app.config import TenantEntry
from serve_app.constants import (
    BATCH_MAX_SIZE,
    COALESCE,
    DETECT_TIMEOUT_S,
    MAX_CACHED_HANDLES,
    POOL_SLOTS,
    READY_TIMEOUT_S,
    RETRY_AFTER_S,
)
from serve_app.errors import ModelUnavailable, Overloaded, ServeAppError, unwrap_error
from serve_app.inference.catalog import ModelChoice
from serve_app.inference.coalescer import Coalescer
from serve_app.inference.fair_share import FairShare
from serve_app.inference.policy import InferenceParams
from serve_app.inference.results import Annotated, DetectionResult
from serve_app.ray_compat import is_replica_gone, is_unavailable
from serve_app.ride_through import ride_through

logger = logging.getLogger("ray.serve")
Outcome = DetectionResult | Annotated
Request = tuple[bytes, InferenceParams]
Answer = Outcome | ServeAppError


class DetectorClient:
    """The router's way to the ``Detector`` deployments.

    Args:
        detectors: Dedicated tenants' deployment handles, by tenant id.
        shared_pool: The shared pool's deployment handle.
        pool_slots: The most calls the shared pool holds at once (its turns).
        call_limits: Per dedicated tenant, the calls in flight to one model beyond which
            requests are coalesced (``coalescer.limit_for``); a tenant not in it: never.
    """

    def __init__(
        self,
        detectors: Mapping[str, Any],
        shared_pool: Any,
        pool_slots: int = POOL_SLOTS,
        call_limits: Mapping[str, int] | None = None,
    ) -> None:
        self._detectors = detectors
        self._call_limits = call_limits or {}
        self._shared_pool = shared_pool
        self.pool_turns = FairShare(pool_slots)
        self._by_model: dict[tuple[str, str], Any] = {}
        self._coalescers: dict[tuple[str, str], Coalescer[Request, Answer]] = {}

    def deployment_for(self, tenant: TenantEntry) -> Any:
        """The deployment handle that runs ``tenant``'s models.

        Raises:
            ModelUnavailable: A dedicated tenant whose deployment is not there yet (the
                tenant table arrived before the redeploy that adds it).
        """
        if tenant.tier == "shared":
            return self._shared_pool
        handle = self._detectors.get(tenant.id)
        if handle is None:
            raise ModelUnavailable("your detector is still being deployed; retry shortly")
        return handle

    def for_model(self, tenant: TenantEntry, model_id: str) -> Any:
        """``handle.options(multiplexed_model_id=model_id)``, made once per model id."""
        deployment = self.deployment_for(tenant)
        key = (deployment.deployment_name, model_id)
        found = self._by_model.get(key)
        if found is None:
            if len(self._by_model) >= MAX_CACHED_HANDLES:
                self._by_model.clear()
                self._coalescers.clear()  # in-flight calls finish on the old ones
            found = self._by_model[key] = deployment.options(multiplexed_model_id=model_id)
        return found

    def _coalescer(self, detector: Any, model_id: str, limit: int) -> Coalescer[Request, Answer]:
        key = (detector.deployment_name, model_id)
        found = self._coalescers.get(key)
        if found is None:
            found = self._coalescers[key] = Coalescer(
                lambda request: _send_one(detector, *request),
                lambda requests: _send_many(detector, requests),
                limit,
                BATCH_MAX_SIZE,
            )
        return found

    async def detect(
        self,
        tenant: TenantEntry,
        choice: ModelChoice,
        image: bytes,
        params: InferenceParams,
        annotate: bool = False,
    ) -> Outcome:
        """Detect with the chosen version, or its fallback if that one cannot load."""
        if tenant.tier == "shared":
            async with self.pool_turns.turn(tenant.id):
                return await self._detect(tenant, choice, image, params, annotate)
        return await self._detect(tenant, choice, image, params, annotate)

    async def _detect(
        self,
        tenant: TenantEntry,
        choice: ModelChoice,
        image: bytes,
        params: InferenceParams,
        annotate: bool,
    ) -> Outcome:
        try:
            return await self._call(tenant, choice, image, params, annotate)
        except ModelUnavailable:
            fallback = choice.fallback_choice()
            if fallback is None:
                raise
            return await self._call(tenant, fallback, image, params, annotate)

    async def _call(
        self,
        tenant: TenantEntry,
        choice: ModelChoice,
        image: bytes,
        params: InferenceParams,
        annotate: bool,
    ) -> Outcome:
        model_id = choice.id_for(tenant.id)
        detector = self.for_model(tenant, model_id)
        limit = self._call_limits.get(tenant.id) if tenant.tier == "dedicated" else None
        try:
            if annotate or not COALESCE or limit is None:  # (the shared pool: its turns)
                outcome = await _send_one(detector, image, params, annotate)
            else:
                outcome = await self._coalescer(detector, model_id, limit).submit((image, params))
        except ServeAppError:
            raise
        except Exception as exc:
            raise as_api_error(exc) from None
        if isinstance(outcome, ServeAppError):
            raise outcome
        return outcome

    async def ask(self, tenant: TenantEntry, choice: ModelChoice, method: str) -> Any:
        """A call without an image (``ready``, ``describe``) to a replica holding the
        chosen version, loading it if none does; errors as ``detect``'s."""
        detector = self.for_model(tenant, choice.id_for(tenant.id))

        async def attempt() -> Any:
            try:
                async with asyncio.timeout(READY_TIMEOUT_S):
                    return await getattr(detector, method).remote()
            except TimeoutError:
                raise Overloaded("your model is still loading; retry shortly") from None

        try:
            return await ride_through(attempt, is_replica_gone, method)
        except ServeAppError:
            raise
        except Exception as exc:
            raise as_api_error(exc) from None


async def _send_one(
    detector: Any, image: bytes, params: InferenceParams, annotate: bool = False
) -> Outcome | ServeAppError:
    """One image; a replica that died with the call in flight: another one (or the
    replacement) takes it (the image is still billed once, by the router)."""

    def call() -> Any:
        if annotate:
            return detector.detect.remote(image, params, True)
        return detector.detect.remote(image, params)

    found: Outcome | ServeAppError = await ride_through(_timed(call), is_replica_gone, "detection")
    return found


async def _send_many(detector: Any, requests: list[Request]) -> list[Answer]:
    """Several images for one model in one call, ridden through as one."""
    found: list[Answer] = await ride_through(
        _timed(lambda: detector.detect_many.remote(requests)), is_replica_gone, "detection"
    )
    return found


def _timed(call: Any) -> Any:
    """``call()``'s response awaited for up to ``DETECT_TIMEOUT_S``, then cancelled: 503."""

    async def attempt() -> Any:
        response = call()
        try:
            async with asyncio.timeout(DETECT_TIMEOUT_S):
                return await response
        except TimeoutError:
            response.cancel()
            raise Overloaded("detection timed out; retry later", retry_after_s=5) from None

    return attempt


def as_api_error(exc: BaseException) -> BaseException:
    """The typed API error for an exception from a handle call: the detector's own
    error, a 503 for Ray's unavailability errors, else ``exc`` itself (a bug: 500)."""
    api_error = unwrap_error(exc)
    if api_error is not None:
        return api_error
    if is_unavailable(exc):
        logger.warning("router: detector unavailable: %s", type(exc).__name__)
        # Overloaded, not ModelUnavailable: a dead replica is no reason to answer with
        # the previous model version.
        return Overloaded(
            "the detector serving your model is restarting; retry shortly",
            retry_after_s=RETRY_AFTER_S,
        )
    return exc
