"""Which models a replica served lately: what a new pool replica warms first and what a
replica that is going away hands over (``pool_peers.py``).

Pure, with an injected clock: unit-tested in microseconds.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable

from serve_app.constants import POOL_HOT_WINDOW


class Traffic:
    """The last ``window`` model ids served, and when each was last served."""

    def __init__(
        self, window: int = 4 * POOL_HOT_WINDOW, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._recent: deque[str] = deque(maxlen=window)
        self._last: dict[str, float] = {}
        self._clock = clock

    def record(self, model_id: str) -> None:
        self._recent.append(model_id)
        self._last[model_id] = self._clock()
        if len(self._last) > 2 * (self._recent.maxlen or 1):
            live = set(self._recent)
            self._last = {m: t for m, t in self._last.items() if m in live}

    def hottest(self, limit: int) -> list[str]:
        """The most served model ids of the window, most first."""
        return [m for m, _ in Counter(self._recent).most_common(limit)]

    def since(self, window_s: float) -> list[str]:
        """Model ids served in the last ``window_s`` seconds, the most served first."""
        now = self._clock()
        counts = Counter(self._recent)
        fresh = [m for m, t in self._last.items() if now - t <= window_s]
        return sorted(fresh, key=lambda m: -counts[m])
