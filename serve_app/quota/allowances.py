"""A router replica's local allowances: admissions granted in advance by the ledger.

Asking the cluster-wide ``QuotaLedger`` for every request costs a Serve round trip
per request, as much as forwarding the image. So a router asks for a small batch
(``QuotaLedger.grant``), charged to the tenant's rate bucket and monthly count up
front, and admits the next requests from it locally:

* the cluster never admits more than the ledger granted, so rate and monthly limits
  stay exact upper bounds; an allowance expires after ``ALLOWANCE_TTL_S`` (a grant
  is not hoarded for later bursts) and what was not spent is refunded;
* the batch follows demand (what the tenant used in the previous window), capped
  at ``ALLOWANCE_MAX`` and at a quarter of the tenant's burst, so a tenant whose
  burst is small is still admitted one request at a time and several router
  replicas do not strand its burst;
* tenants with a concurrency cap are not served from allowances: in-flight counts
  must be cluster-wide and exact, so they take the per-request lease path.

Pure and clock-injected; the Router is the Ray shell around it.
"""

from __future__ import annotations

from dataclasses import dataclass

from serve_app.config import Quota
from serve_app.constants import ALLOWANCE_BURST_SHARE, ALLOWANCE_MAX, ALLOWANCE_TTL_S


@dataclass
class _Allowance:
    tokens: int = 0
    month: str = ""
    expires_at: float = 0.0
    window_start: float = 0.0
    used_in_window: int = 0
    used_last_window: int = 0


@dataclass(frozen=True)
class Refund:
    tenant: str
    unused: int
    month: str


def uses_allowances(quota: Quota) -> bool:
    return quota.max_concurrent is None


class Allowances:
    """Per-tenant local admission tokens of one router replica."""

    def __init__(self) -> None:
        self._by_tenant: dict[str, _Allowance] = {}

    def take(self, tenant: str, now: float) -> str | None:
        """Admit one request locally if an unexpired token is left: the month it was
        charged to (to bill it to when answered, or refund it to), else None."""
        allowance = self._roll(tenant, now)
        allowance.used_in_window += 1  # demand, whether served locally or not
        if allowance.tokens > 0 and now < allowance.expires_at:
            allowance.tokens -= 1
            return allowance.month
        return None

    def want(self, tenant: str, quota: Quota) -> int:
        """How many admissions to ask the ledger for (this request's included)."""
        allowance = self._by_tenant.get(tenant)
        demand = 1
        if allowance is not None:
            demand = max(allowance.used_last_window, allowance.used_in_window, 1)
        cap = ALLOWANCE_MAX
        if quota.requests_per_s is not None:
            cap = min(cap, max(1, quota.burst_size // ALLOWANCE_BURST_SHARE))
        return max(1, min(demand, cap))

    def store(self, tenant: str, granted: int, month: str, now: float) -> list[Refund]:
        """Keep ``granted - 1`` tokens (one is spent by the request that asked).

        Returns the refund of an older allowance this one replaces.
        """
        allowance = self._roll(tenant, now)
        refunds = []
        if allowance.tokens > 0:
            refunds.append(Refund(tenant, allowance.tokens, allowance.month))
        allowance.tokens = granted - 1
        allowance.month = month
        allowance.expires_at = now + ALLOWANCE_TTL_S
        return refunds

    def expired(self, now: float) -> list[Refund]:
        """Take back unspent tokens whose time is up, to be refunded."""
        refunds = []
        for tenant, allowance in self._by_tenant.items():
            if allowance.tokens > 0 and now >= allowance.expires_at:
                refunds.append(Refund(tenant, allowance.tokens, allowance.month))
                allowance.tokens = 0
        return refunds

    def drain(self) -> list[Refund]:
        """Every unspent token (the tenant table changed, or the replica stops)."""
        refunds = [Refund(t, a.tokens, a.month) for t, a in self._by_tenant.items() if a.tokens > 0]
        self._by_tenant.clear()
        return refunds

    def _roll(self, tenant: str, now: float) -> _Allowance:
        """The tenant's allowance, with its demand window rolled forward to ``now``."""
        allowance = self._by_tenant.setdefault(tenant, _Allowance(window_start=now))
        if now - allowance.window_start >= ALLOWANCE_TTL_S:
            elapsed_windows = (now - allowance.window_start) // ALLOWANCE_TTL_S
            allowance.used_last_window = allowance.used_in_window if elapsed_windows == 1 else 0
            allowance.used_in_window = 0
            allowance.window_start = now
        return allowance
