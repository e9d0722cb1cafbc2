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

That share is kept twice. Each router counts pinned versions per tenant (``PoolShare``),
so a tenant cycling versions gets a 429 before any load is paid; with R routers a tenant
could still reach 2R. The pool replica itself makes it exact (``evictions``): loading a
tenant's pinned version first unloads that tenant's own oldest pinned versions past its
share, and only then, if the replica is full, the least recently used model of anyone.
So however many routers, a tenant's pinned versions hold at most their share of a
replica's slots, and loading one never evicts another tenant's model to make room for
it while the tenant holds its share.

Pure, with an injected clock: unit-tested in microseconds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass

from serve_app.constants import (
    MODEL_BYTES_PER_REPLICA,
    MODEL_MEMORY_SHARE,
    SHARED_PIN_WINDOW_S,
    SHARED_PINNED_VERSIONS,
)
from serve_app.errors import QuotaExceeded
from serve_app.models.manifest import ModelManifest
from serve_app.wire import ModelId


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


@dataclass(frozen=True)
class Room:
    """What one replica may hold: ``models`` ids and ``bytes`` of networks at most (a
    network several ids share counts once: ``networks.NetworkShelf``)."""

    models: int
    bytes: int


def evictions(
    held: list[str],
    new: str,
    *,
    room: Room,
    networks: Mapping[str, tuple[str, int]],
    new_network: tuple[str, int],
    active: Set[str],
    pinned_limit: int | None,
) -> list[str]:
    """The models to unload, in order, before ``new`` is loaded into a replica holding
    ``held`` (least recently used first).

    ``networks``: each held id's network key and bytes; ``new_network``: ``new``'s (its
    bytes count only if no id left holds that key). A pinned ``new`` (not in ``active``)
    first displaces its own tenant's oldest pinned versions until the tenant holds fewer
    than ``pinned_limit``; then, while the replica would hold more ids or bytes than
    ``room``, the least recently used model goes, whoever's it is.
    """
    victims: list[str] = []
    if pinned_limit is not None and new not in active:
        tenant = ModelId.parse(new).tenant
        own = [m for m in held if m not in active and ModelId.parse(m).tenant == tenant]
        victims += own[: max(0, len(own) - pinned_limit + 1)]
    remaining = [m for m in held if m not in victims]

    def over() -> bool:
        if len(remaining) >= room.models:
            return True
        footprints = dict(networks[m] for m in remaining if m in networks)
        footprints.setdefault(*new_network)
        return sum(footprints.values()) > room.bytes

    while remaining and over():
        victims.append(remaining.pop(0))
    return victims


def model_budget(configured: int | None, reserved_memory: float | None) -> int:
    """A replica's bytes for networks: the operator's setting, else a share of the memory
    the replica reserved, else the built-in default."""
    if configured is not None:
        return configured
    if reserved_memory:
        return int(reserved_memory * MODEL_MEMORY_SHARE)
    return MODEL_BYTES_PER_REPLICA


def estimated_bytes(manifest: ModelManifest, burst: bool) -> int:
    """What a version's network will hold, before it is built (``Runner.footprint`` says
    after): safetensors become a float32 graph (twice half-precision weights at most), an
    ONNX graph is its size; once per session."""
    graph = manifest.size_bytes * (2 if manifest.format == "safetensors" else 1)
    return graph * (2 if burst else 1)
