"""A candidate version's rollout and the gate that ends it.

In ``shadow`` mode ``percent`` of the tenant's live requests for the model are *also*
answered by the candidate (the client gets the incumbent's answer); in ``canary`` mode
they are answered *by* the candidate and the incumbent runs after it. Either way each
such request gives a pair of answers: their box agreement (``agreement.py``) and both
latencies are added to the rollout's running totals, kept by the quota ledger.

Once ``min_images`` pairs are in, ``judge`` decides: the candidate is promoted when its
mean agreement is at least ``min_agreement`` and its p95 latency at most
``ROLLOUT_MAX_LATENCY_RATIO`` times the incumbent's; otherwise the rollout stops and the
version is rejected, with the numbers in the reason.

Pure: unit-tested with made-up totals.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from pydantic import Field

from serve_app.constants import ROLLOUT_MAX_LATENCY_RATIO, ROLLOUT_MAX_MIN_IMAGES
from serve_app.wire import StrictModel

RolloutState = Literal["running", "paused", "promoted", "stopped"]


class RolloutRequest(StrictModel):
    """Body of ``POST /v1/models/{name}/versions/{version}/rollout``."""

    mode: Literal["shadow", "canary"] = Field(
        description="shadow: the candidate also answers, the client gets the incumbent's "
        "answer; canary: the candidate answers."
    )
    percent: int = Field(ge=1, le=100, description="Share of the model's requests, in %.")
    min_images: int = Field(
        100, ge=1, le=ROLLOUT_MAX_MIN_IMAGES, description="Pairs of answers before deciding."
    )
    min_agreement: float = Field(
        0.9, ge=0, le=1, description="Mean per-class box F1 at IoU 0.5 needed to promote."
    )
    require_map50: bool = Field(
        False,
        description="Also require the candidate's mAP50 on the labelled samples uploaded "
        "with it to be at least the active version's on the same samples (checked at once).",
    )


class Rollout(StrictModel):
    """A rollout as the API shows it."""

    mode: Literal["shadow", "canary"]
    percent: int
    min_images: int
    min_agreement: float
    require_map50: bool = False
    map50: dict[str, float] = Field(
        default_factory=dict, description="On the candidate's samples, when required."
    )
    state: RolloutState
    images: int = Field(0, description="Pairs of answers compared so far.")
    agreement: float | None = Field(None, description="Mean box agreement so far.")
    p95_ms: dict[str, float] = Field(
        default_factory=dict, description="p95 latency of the incumbent and the candidate."
    )
    reason: str | None = Field(None, description="Why it ended, with the numbers.")
    started_at: str
    decided_at: str | None = None


def p95(values: Sequence[float]) -> float:
    """The 95th percentile (nearest rank) of ``values`` (0 when empty)."""
    if not values:
        return 0.0
    ranked = sorted(values)
    return ranked[max(0, math.ceil(0.95 * len(ranked)) - 1)]


def judge(
    request: RolloutRequest,
    images: int,
    agreement_sum: float,
    incumbent_ms: Sequence[float],
    candidate_ms: Sequence[float],
) -> tuple[RolloutState, str] | None:
    """The gate's decision once ``min_images`` pairs are in: ``("promoted" | "stopped",
    reason)``, else None (keep going)."""
    if images < request.min_images:
        return None
    agreement = agreement_sum / images
    slow, fast = p95(candidate_ms), p95(incumbent_ms)
    numbers = (
        f"box agreement {agreement:.3f} over {images} images (needed {request.min_agreement:g}), "
        f"p95 latency {slow:.1f} ms against the incumbent's {fast:.1f} ms "
        f"(allowed {ROLLOUT_MAX_LATENCY_RATIO:g}x)"
    )
    if agreement < request.min_agreement:
        return "stopped", f"stopped: {numbers}: the candidate's boxes differ too much"
    if fast > 0 and slow > ROLLOUT_MAX_LATENCY_RATIO * fast:
        return "stopped", f"stopped: {numbers}: the candidate is too slow"
    return "promoted", f"promoted: {numbers}"
