"""A replica's networks, shared by the model ids that run them.

On the shared pool many tenants run the same weights: every tenant starts on the
platform's default model, and tenants fine-tune few bases. A network is keyed by what
shapes it (``engine.network_key``: the weights' sha256, format, architecture, class
count); the model ids with one key share one runner and its lock, reference-counted:
the first load builds it, the last unload drops it. Each tenant's class names, image
size and policy stay its own (``LoadedModel``) and are applied after inference.

Two loads of one key build it once (a lock per key); loads of other keys go ahead beside
it, and inference of the models already held never waits for a build.

No Ray: the ``Detector`` calls ``acquire`` from its load thread, ``release`` when the
multiplex wrapper unloads a model id.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from serve_app.models.engine import Engine
from serve_app.models.runner import Runner


@dataclass
class Network:
    """One built network and the model ids using it."""

    key: str
    runner: Runner | None  # None once the last user released it
    engine: Engine
    footprint: int  # bytes it keeps in memory (``Runner.footprint``)
    users: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)  # torch is not thread-safe


class NetworkShelf:
    """The networks one replica holds, by key."""

    def __init__(self) -> None:
        self._held: dict[str, Network] = {}
        self._guard = threading.Lock()  # the dicts; never held across a build
        self._building: dict[str, threading.Lock] = {}

    def acquire(
        self, key: str, user: str, build: Callable[[], tuple[Runner, Engine]]
    ) -> tuple[Network, bool]:
        """The network ``key`` for model id ``user``, built by ``build`` if not held
        (blocking); and whether this call built it."""
        with self._guard:
            building = self._building.setdefault(key, threading.Lock())
        with building:
            with self._guard:
                found = self._held.get(key)
                if found is not None:
                    found.users.add(user)
                    return found, False
            try:
                runner, engine = build()
                network = Network(key, runner, engine, runner.footprint(), {user})
                with self._guard:
                    self._held[key] = network
            finally:
                with self._guard:
                    self._building.pop(key, None)
            return network, True

    def release(self, key: str, user: str) -> bool:
        """``user`` no longer runs ``key``; True when that dropped the network (its last
        user). A predict call already running keeps its runner until it returns."""
        with self._guard:
            network = self._held.get(key)
            if network is None:
                return False
            network.users.discard(user)
            if network.users:
                return False
            del self._held[key]
        network.runner = None
        return True

    def held(self, key: str) -> bool:
        with self._guard:
            return key in self._held

    def footprints(self) -> dict[str, int]:
        """Bytes by network key."""
        with self._guard:
            return {key: n.footprint for key, n in self._held.items()}

    def users(self) -> dict[str, list[str]]:
        """Model ids by network key."""
        with self._guard:
            return {key: sorted(n.users) for key, n in self._held.items()}

    def total_bytes(self) -> int:
        return sum(self.footprints().values())
