"""A router's copy of every tenant's own model versions, and the rollouts it splits.

``TenantModelsView`` follows the ledger (``ledger_models.models_since``: one call every
``MODELS_POLL_S``, answered with only the tenants that changed) and lays each tenant's
state over the operator's catalog (``versions.overlay``), caching the result per
directory entry. Until its first answer, and while the ledger cannot be reached, the
view keeps what it had (tenants are served on the operator's catalog at worst).

``detect`` is the rollout split: for a request of a model in rollout, not pinned to a
version, ``percent`` of the time both the incumbent and the candidate answer; the
client gets the incumbent's answer (shadow) or the candidate's (canary — the
incumbent's if the candidate fails), and once both are in, their box agreement and
latencies go to the ledger, which applies the gate. The second inference is neither
admitted nor billed (docs/models.md, "Rollouts").
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any

from serve_app.auth.tenants import Principal
from serve_app.config import TenantEntry
from serve_app.constants import LEDGER_TIMEOUT_S, MODELS_POLL_S
from serve_app.errors import ServeAppError
from serve_app.inference.catalog import ModelChoice
from serve_app.inference.results import Annotated, DetectionResult
from serve_app.models.agreement import box_agreement
from serve_app.models.versions import TenantModels, overlay, rollout_of
from serve_app.observability.metrics import RolloutMetrics

logger = logging.getLogger("ray.serve")
Outcome = DetectionResult | Annotated
Detect = Callable[[TenantEntry, ModelChoice, bytes, Any, bool], Awaitable[Outcome]]


class TenantModelsView:
    def __init__(
        self, ledger: Any, metrics: RolloutMetrics | None = None, poll_s: float = MODELS_POLL_S
    ) -> None:
        self._ledger = ledger
        self._poll_s = poll_s
        self._epoch, self._seq = "", -1
        self.states: dict[str, TenantModels] = {}
        self._overlaid: dict[str, tuple[TenantEntry, TenantModels, TenantEntry]] = {}
        self._task: asyncio.Task[None] | None = None
        self._side: set[asyncio.Task[None]] = set()  # the second answers of rollouts
        self._metrics = metrics

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._follow())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _follow(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception as exc:  # the ledger is away: keep what we have
                logger.warning("router: tenant models not refreshed: %s", type(exc).__name__)
            await asyncio.sleep(self._poll_s)

    async def refresh(self) -> None:
        async with asyncio.timeout(LEDGER_TIMEOUT_S):
            epoch, seq, states, everything = await self._ledger.models_since.remote(
                self._epoch, self._seq
            )
        if everything:
            self.states = dict(states)
        else:
            self.states.update(states)
        self._epoch, self._seq = epoch, seq

    async def reload(self, tenant_id: str) -> None:
        """After this router changed the tenant's state: in force here at once."""
        async with asyncio.timeout(LEDGER_TIMEOUT_S):
            self.states[tenant_id] = await self._ledger.tenant_models.remote(tenant_id)

    def principal(self, principal: Principal) -> Principal:
        """``principal`` with its tenant's catalog as the tenant changed it."""
        entry = self.effective(principal.tenant)
        return principal if entry is principal.tenant else replace(principal, tenant=entry)

    def effective(self, entry: TenantEntry) -> TenantEntry:
        """``entry`` with the tenant's own versions and activations (cached)."""
        state = self.states.get(entry.id)
        if state is None:
            return entry
        cached = self._overlaid.get(entry.id)
        if cached is not None and cached[0] is entry and cached[1] is state:
            return cached[2]
        done = overlay(entry, state)
        self._overlaid[entry.id] = (entry, state, done)
        return done

    async def detect(
        self,
        detect: Detect,
        tenant: TenantEntry,
        choice: ModelChoice,
        query: Mapping[str, str],
        image: bytes,
        params: Any,
        annotate: bool,
    ) -> Outcome:
        state = self.states.get(tenant.id)
        found = None if state is None else rollout_of(tenant, state, choice.name)
        if found is None or "version" in query or random.random() * 100 >= found.percent:  # noqa: S311 (a traffic split)
            return await detect(tenant, choice, image, params, annotate)
        assert found.rollout is not None
        candidate = ModelChoice(name=choice.name, version=found.rollout)
        canary = found.mode == "canary"
        answering, beside = (candidate, choice) if canary else (choice, candidate)
        params = replace(params, steady=True)
        try:
            answer, answer_ms = await _timed(detect(tenant, answering, image, params, annotate))
        except ServeAppError:
            if not canary:
                raise
            # the candidate failed: the incumbent answers, and there is no pair
            return await detect(tenant, choice, image, params, annotate)
        second = detect(tenant, beside, image, params, False)
        task = asyncio.ensure_future(
            self._compare(
                tenant.id, choice.name, candidate.version, canary, answer, answer_ms, second
            )
        )
        self._side.add(task)
        task.add_done_callback(self._side.discard)
        if self._metrics is not None:
            self._metrics.extra_images.inc(tags={"tenant": tenant.id, "mode": found.mode})
        return answer

    async def _compare(
        self,
        tenant_id: str,
        model: str,
        version: int,
        canary: bool,
        answer: Outcome,
        answer_ms: float,
        second: Awaitable[Outcome],
    ) -> None:
        """The second answer, run after the first (on the same replicas at once, each
        would wait for the other and the one sent second would look slower), then the
        pair to the ledger."""
        try:
            other, other_ms = await _timed(second)
        except Exception as exc:  # the second answer failed: no pair to count
            logger.info("router: a rollout's second answer failed: %s", type(exc).__name__)
            return
        incumbent, candidate = (other, answer) if canary else (answer, other)
        inc_ms, cand_ms = (other_ms, answer_ms) if canary else (answer_ms, other_ms)
        agreement = box_agreement(_boxes(incumbent), _boxes(candidate))
        try:
            await self._ledger.rollout_observed.remote(
                tenant_id, model, version, [(agreement, inc_ms, cand_ms)]
            )
        except Exception as exc:
            logger.warning("router: a rollout pair was not counted: %s", type(exc).__name__)


async def _timed(call: Awaitable[Outcome]) -> tuple[Outcome, float]:
    """The answer and its model's latency: the CPU time of its predict call on the
    detector's thread (``inference_cpu``: neither waiting for a core nor queueing behind
    other requests counts), else the inference time the detector measured, else the
    call's whole time."""
    started = time.perf_counter()
    outcome = await call
    timing = (outcome.result if isinstance(outcome, Annotated) else outcome).timing_ms
    wall = (time.perf_counter() - started) * 1e3
    return outcome, timing.get("inference_cpu", timing.get("inference", wall))


def _boxes(outcome: Outcome) -> list[tuple[str, tuple[float, float, float, float]]]:
    result = outcome.result if isinstance(outcome, Annotated) else outcome
    return [(d.class_name, d.bbox) for d in result.detections]
