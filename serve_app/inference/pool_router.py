"""Where a shared-pool call goes: model-aware placement over the pool's replicas.

Serve's own multiplex routing sends a model's calls to the replicas holding it until all
of them are full (``max_ongoing_requests``), so one hot model stays on one replica while
another sits idle, and only after a second of trying falls back. On the pool, with
hundreds of tenants' models on a few replicas, the ``PoolRouter`` ranks replicas itself:

* a model some replica holds goes to the least busy holder (Serve's queue lengths, as
  this caller sees them); to another replica only when every holder is full;
* a **hot** model (``POOL_HOT_SHARE`` of this caller's recent pool calls) whose holders
  are busier than another replica by ``POOL_SPILL_QUEUE`` calls goes there instead: that
  replica loads it, and the model has two holders from then on;
* a model nobody holds goes to the least busy replica (fewest models on a tie), where it
  is loaded; a replica this caller just sent it to counts as holding it for
  ``POOL_PLACED_S`` (replicas announce what they hold about once a second), so a burst
  of a new model's calls is not loaded on every replica.

``rank`` is pure and unit-tested; ``PoolRouter`` is the thin shell Serve calls, in every
process holding a handle to the pool (the routers, batch jobs).
"""

from __future__ import annotations

import random
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ray.serve.request_router import (
    FIFOMixin,
    MultiplexMixin,
    PendingRequest,
    ReplicaID,
    RequestRouter,
    RunningReplica,
)

from serve_app.constants import POOL_HOT_SHARE, POOL_HOT_WINDOW, POOL_PLACED_S, POOL_SPILL_QUEUE


@dataclass(frozen=True)
class ReplicaLoad:
    """One replica as a caller sees it for one model."""

    id: str
    holds: bool  # the model, loaded or being loaded
    queue: int  # calls in flight (0 when unknown)
    models: int  # model ids it holds


def rank(replicas: list[ReplicaLoad], hot: bool) -> list[list[str]]:
    """Replica ids in ranks, most preferred first (Serve takes the least busy replica of
    the first rank with room)."""
    holders = [r for r in replicas if r.holds]
    others = sorted((r for r in replicas if not r.holds), key=lambda r: (r.queue, r.models))
    if not holders:
        return [[r.id for r in others[:1]], [r.id for r in others]] if others else []
    if hot and others and others[0].queue + POOL_SPILL_QUEUE <= min(r.queue for r in holders):
        return [[others[0].id], [r.id for r in holders]]
    return [[r.id for r in holders], [r.id for r in others]]


class Popularity:
    """Which models make up at least ``share`` of the last ``window`` calls."""

    def __init__(self, share: float = POOL_HOT_SHARE, window: int = POOL_HOT_WINDOW) -> None:
        self._share = share
        self._recent: deque[str] = deque(maxlen=window)
        self._counts: Counter[str] = Counter()

    def record(self, model: str) -> None:
        if len(self._recent) == self._recent.maxlen:
            gone = self._recent[0]
            self._counts[gone] -= 1
            if self._counts[gone] <= 0:
                del self._counts[gone]
        self._recent.append(model)
        self._counts[model] += 1

    def hot(self, model: str) -> bool:
        return bool(self._recent) and self._counts[model] >= self._share * len(self._recent)


class Placements:
    """Where this caller sent a model's calls lately: it holds it, or is loading it."""

    def __init__(self, ttl_s: float = POOL_PLACED_S, clock: Callable[[], float] = time.monotonic):
        self._ttl_s = ttl_s
        self._clock = clock
        self._sent: dict[str, dict[str, float]] = {}  # model -> replica -> when

    def record(self, model: str, replica: str) -> None:
        now = self._clock()
        fresh = {r: t for r, t in self._sent.get(model, {}).items() if now - t < self._ttl_s}
        fresh[replica] = now
        self._sent[model] = fresh
        if len(self._sent) > 4 * POOL_HOT_WINDOW:  # forget the oldest models
            self._sent.pop(next(iter(self._sent)))

    def recent(self, model: str) -> set[str]:
        now = self._clock()
        return {r for r, t in self._sent.get(model, {}).items() if now - t < self._ttl_s}


class PoolRouter(FIFOMixin, MultiplexMixin, RequestRouter):  # type: ignore[misc]
    """Serve's request router for the shared pool (``request_router_config``).

    The mixins hand a chosen replica to a pending call for the same model (else the oldest
    call): calls made inside one request (the v2 API's images) share Serve's internal
    request id, which the bare ``RequestRouter`` matches on, and all but one were never
    routed (the v2 security tests caught it)."""

    def initialize_state(self, **kwargs: Any) -> None:
        self._popularity = Popularity()
        self._placements = Placements()

    async def choose_replicas(
        self,
        candidate_replicas: list[RunningReplica],
        pending_request: PendingRequest | None = None,
    ) -> list[list[RunningReplica]]:
        model = pending_request.metadata.multiplexed_model_id if pending_request else ""
        if pending_request is not None:
            pending_request.routing_context.should_backoff = True  # all full: wait, retry
        if not model:  # a call for no model (operators' reports): two at random
            return [random.sample(candidate_replicas, min(2, len(candidate_replicas)))]
        cache = self.replica_queue_len_cache
        placed = self._placements.recent(model)
        loads = [
            ReplicaLoad(
                id=r.replica_id.unique_id,
                holds=model in r.multiplexed_model_ids or r.replica_id.unique_id in placed,
                queue=cache.get(r.replica_id) or 0,
                models=len(r.multiplexed_model_ids),
            )
            for r in candidate_replicas
        ]
        by_id = {r.replica_id.unique_id: r for r in candidate_replicas}
        return [[by_id[i] for i in ids] for ids in rank(loads, self._popularity.hot(model))]

    def on_request_routed(
        self, pending_request: PendingRequest, replica_id: ReplicaID, result: Any
    ) -> None:
        model = pending_request.metadata.multiplexed_model_id
        if model:
            self._popularity.record(model)
            self._placements.record(model, replica_id.unique_id)
