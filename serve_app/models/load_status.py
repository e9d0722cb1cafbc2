"""A cluster-wide board of model load outcomes, so operators can see failures.

Replicas report every load (``loaded`` or ``failed`` with the reason); ``tenantctl
model list --cluster`` reads the board. One small detached actor per cluster,
created on first use by whichever replica reports first.
"""

from __future__ import annotations

import time
from typing import Any

import ray

from serve_app.constants import LOAD_REASON_MAX_CHARS

BOARD_NAME = "yoloserve-load-status"
BOARD_NAMESPACE = "yoloserve"


@ray.remote(num_cpus=0, max_restarts=-1)
class LoadStatusBoard:
    def __init__(self) -> None:
        self._status: dict[str, dict[str, Any]] = {}

    def report(self, model_id: str, outcome: str, reason: str = "") -> None:
        self._status[model_id] = {
            "outcome": outcome,
            "reason": reason[:LOAD_REASON_MAX_CHARS],
            "at": time.time(),
        }

    def get(self, prefix: str = "") -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self._status.items() if k.startswith(prefix)}


def board() -> Any:
    """The cluster's board actor (created if missing)."""
    return LoadStatusBoard.options(  # type: ignore[attr-defined]
        name=BOARD_NAME, namespace=BOARD_NAMESPACE, lifetime="detached", get_if_exists=True
    ).remote()
