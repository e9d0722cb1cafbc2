"""What one replica holds, and may hold: model ids up to a cap, networks within a budget
of bytes (identical weights once: ``networks.NetworkShelf``), least recently used going
first (``pool_share.evictions``, which also keeps each tenant's pinned versions to its
share). The Ray shell around the pure rules: it unloads through Serve's multiplex wrapper.
"""

from __future__ import annotations

from collections.abc import Set
from typing import Any

from serve_app.config import DetectorConfig
from serve_app.constants import MAX_MODELS_PER_REPLICA
from serve_app.inference.loaded_model import LoadedModel
from serve_app.inference.networks import NetworkShelf
from serve_app.inference.pool_share import Room, estimated_bytes, evictions, model_budget
from serve_app.models.engine import network_key
from serve_app.models.manifest import ModelManifest
from serve_app.ray_compat import disable_multiplex_lru, held_in_lru_order, unload_model


class ModelRoom:
    """Args:
    replica: The deployment instance (its multiplex wrapper holds the models).
    memory: The bytes of memory the replica reserved, if any (the default budget's base).
    burst: Whether its models get a second session (what a network costs).
    """

    def __init__(self, replica: object, memory: float | None, burst: bool) -> None:
        self._replica = replica
        self._memory = memory
        self.burst = burst
        self.shelf = NetworkShelf()
        self._networks: dict[str, tuple[str, int]] = {}  # model id -> (network, bytes)
        self.models = MAX_MODELS_PER_REPLICA
        self.budget = model_budget(None, memory)

    def configure(self, config: DetectorConfig) -> None:
        self.models = config.max_models_per_replica or MAX_MODELS_PER_REPLICA
        self.budget = model_budget(config.model_bytes_per_replica, self._memory)
        self.take_over()

    def take_over(self) -> None:
        """Stop Serve's wrapper from unloading by count: this room decides (the wrapper
        exists only after a first load, so this is repeated before each)."""
        disable_multiplex_lru(self._replica)

    async def make_room(
        self, model_id: str, manifest: ModelManifest, active: Set[str], pinned: int | None
    ) -> None:
        """Before loading ``model_id`` (under Serve's load lock): unload what ``evictions``
        picks for it, counting its network's bytes only if no held model runs it."""
        key = network_key(manifest)
        adds = 0 if self.shelf.held(key) else estimated_bytes(manifest, self.burst)
        victims = evictions(
            held_in_lru_order(self._replica),
            model_id,
            room=Room(models=self.models, bytes=self.budget),
            networks=self._networks,
            new_network=(key, adds),
            active=active,
            pinned_limit=pinned,
        )
        for victim in victims:
            await unload_model(self._replica, victim)

    async def admitted(self, model: LoadedModel) -> None:
        """After a load: count its real bytes, and if the estimate was short, unload the
        least recently used others until the replica is back within its budget."""
        self._networks[model.model_id] = (model.network.key, model.network.footprint)
        for victim in held_in_lru_order(self._replica):
            if self.shelf.total_bytes() <= self.budget:
                return
            if victim != model.model_id:
                await unload_model(self._replica, victim)

    def forget(self, model_id: str) -> None:
        self._networks.pop(model_id, None)

    def report(self) -> dict[str, Any]:
        return {
            "max_models": self.models,
            "networks": self.shelf.users(),
            "bytes": self.shelf.total_bytes(),
            "max_bytes": self.budget,
        }
