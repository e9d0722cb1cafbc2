"""Quota arithmetic: GCRA rate limiting, concurrency leases, monthly image counts.

Pure and clock-injected, so the ledger deployment is a thin shell and every rule
here is tested in microseconds. GCRA ("generic cell rate algorithm") is a token
bucket kept as one number per tenant: the theoretical arrival time (TAT) of the
next request. A request of cost n at time t is admitted iff
``max(TAT, t) + n/rate - t <= burst/rate``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from serve_app.config import Quota
from serve_app.constants import LEASE_TTL_S

# A lease not released within this long (a crashed router) is reclaimed.


@dataclass(frozen=True)
class Decision:
    """The ledger's answer for one request."""

    allowed: bool
    code: str = "ok"  # ok | rate_limited | too_many_concurrent | monthly_quota_exceeded
    limit: int | None = None  # requests per window (RateLimit-Limit)
    remaining: int | None = None
    reset_s: float = 0.0  # seconds until the bucket is full again
    retry_after_s: float = 0.0
    lease_id: str | None = None
    granted: int = 0  # admissions granted in advance (``grant``), to spend locally
    month: str = ""  # the month it was charged to, for a refund of what is not answered


def month_key(now_epoch_s: float) -> str:
    return datetime.fromtimestamp(now_epoch_s, UTC).strftime("%Y-%m")


def seconds_to_next_month(now_epoch_s: float) -> float:
    now = datetime.fromtimestamp(now_epoch_s, UTC)
    nxt = datetime(now.year + (now.month == 12), now.month % 12 + 1, 1, tzinfo=UTC)
    return (nxt - now).total_seconds()


@dataclass
class TenantState:
    tat: float = 0.0  # GCRA theoretical arrival time, monotonic seconds
    leases: dict[str, float] = field(default_factory=dict)  # lease id -> expiry (monotonic)
    monthly: dict[str, int] = field(default_factory=dict)  # "YYYY-MM" -> images admitted


def admit(
    state: TenantState, quota: Quota, images: int, now_mono: float, now_epoch: float
) -> Decision:
    """Admit (and account) one request of ``images`` images, or say why not.

    The checks run cheapest-to-undo first and only an admitted request changes the
    state, so a refused request costs the tenant nothing.
    """
    for lease, expiry in list(state.leases.items()):
        if expiry <= now_mono:
            del state.leases[lease]
    month = month_key(now_epoch)
    used = state.monthly.get(month, 0)
    if quota.monthly_images is not None and used + images > quota.monthly_images:
        return Decision(
            allowed=False,
            code="monthly_quota_exceeded",
            limit=quota.monthly_images,
            remaining=max(0, quota.monthly_images - used),
            reset_s=seconds_to_next_month(now_epoch),
            retry_after_s=seconds_to_next_month(now_epoch),
        )
    if quota.max_concurrent is not None and len(state.leases) >= quota.max_concurrent:
        return Decision(
            allowed=False,
            code="too_many_concurrent",
            limit=quota.max_concurrent,
            remaining=0,
            retry_after_s=1.0,
        )
    new_tat = state.tat
    limit = remaining = None
    reset = 0.0
    if quota.requests_per_s is not None:
        interval = 1.0 / quota.requests_per_s
        burst = quota.burst_size
        tolerance = burst * interval
        new_tat = max(state.tat, now_mono) + images * interval
        over = new_tat - now_mono - tolerance
        limit = burst
        if over > 1e-9:
            return Decision(
                allowed=False,
                code="rate_limited",
                limit=limit,
                remaining=0,
                reset_s=max(0.0, state.tat - now_mono),
                retry_after_s=over,
            )
        remaining = int((tolerance - (new_tat - now_mono)) / interval + 1e-9)
        reset = new_tat - now_mono
    state.tat = new_tat
    state.monthly[month] = used + images
    lease = uuid.uuid4().hex
    state.leases[lease] = now_mono + LEASE_TTL_S
    return Decision(
        allowed=True, limit=limit, remaining=remaining, reset_s=reset, lease_id=lease, month=month
    )


def release(state: TenantState, lease_id: str) -> None:
    state.leases.pop(lease_id, None)


def _rate_room(state: TenantState, quota: Quota, now_mono: float) -> int | None:
    """How many single-image requests the GCRA admits right now (None: no rate limit)."""
    if quota.requests_per_s is None:
        return None
    interval = 1.0 / quota.requests_per_s
    tolerance = quota.burst_size * interval
    backlog = max(state.tat, now_mono) - now_mono
    return max(0, int((tolerance - backlog) / interval + 1e-9))


def grant(
    state: TenantState, quota: Quota, want: int, now_mono: float, now_epoch: float
) -> Decision:
    """Admit up to ``want`` single-image requests at once, for a router replica to spend
    locally over the next moments (tenants without a concurrency cap only).

    Charged in full now, to the rate bucket and the monthly count, so the cluster never
    admits more than the GCRA allows; what a router does not spend it gives back with
    ``refund``. A refusal is exactly ``admit``'s refusal for one image.
    """
    if quota.max_concurrent is not None:
        raise ValueError("tenants with a concurrency cap are admitted one request at a time")
    month = month_key(now_epoch)
    room = want
    if quota.monthly_images is not None:
        room = min(room, quota.monthly_images - state.monthly.get(month, 0))
    rate_room = _rate_room(state, quota, now_mono)
    if rate_room is not None:
        room = min(room, rate_room)
    if room < 1:
        return admit(state, quota, 1, now_mono, now_epoch)
    first = admit(state, quota, room, now_mono, now_epoch)
    if not first.allowed:  # cannot happen: room was computed from the same checks
        return first
    assert first.lease_id is not None
    release(state, first.lease_id)
    return Decision(
        allowed=True,
        limit=first.limit,
        remaining=first.remaining,
        reset_s=first.reset_s,
        granted=room,
        month=month,
    )


def refund(state: TenantState, quota: Quota, unused: int, month: str, now_mono: float) -> None:
    """Give back granted admissions a router did not spend (its allowance expired)."""
    if unused <= 0:
        return
    if month in state.monthly:
        state.monthly[month] = max(0, state.monthly[month] - unused)
    if quota.requests_per_s is not None:
        state.tat = max(now_mono, state.tat - unused / quota.requests_per_s)
