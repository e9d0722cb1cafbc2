"""Billing-grade usage metering: what was served, per tenant, hour and model version.

The router records every detect call in a ``UsageMeter`` (in memory, per replica) and
hands the counts to the ledger in *settlements*: numbered batches the ledger applies
exactly once (the batch id is stored in the same SQLite transaction as the counts), so
a settlement retried after a timeout or a ledger restart is never counted twice, and one
the ledger never acknowledged is retried until it is. The ledger exports its usage log as
append-only JSON lines (``usage_lines``); ``tenantctl usage`` adds them up
(``aggregate``).

Pure: no Ray, no I/O.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from serve_app.config import Quota

NO_MODEL = "-"  # a call refused before a model was chosen (401s are not metered at all)


@functools.lru_cache(maxsize=4)
def _hour_name(hour: int) -> str:
    return datetime.fromtimestamp(hour * 3600, UTC).strftime("%Y-%m-%dT%H")


def hour_key(epoch_s: float) -> str:
    """``YYYY-MM-DDTHH`` in UTC: the metering period (named once per hour: it is asked
    for every metered call)."""
    return _hour_name(int(epoch_s // 3600))


@dataclass
class UsageCounts:
    requests: int = 0  # detect calls of an authenticated tenant, whatever the outcome
    images: int = 0  # images detected (answered 200)
    compute_s: float = 0.0  # inference time attributed to the tenant's images
    rejected: int = 0  # refused by a quota (429)
    errors: int = 0  # other 4xx/5xx answers

    def add(self, other: UsageCounts) -> None:
        self.requests += other.requests
        self.images += other.images
        self.compute_s += other.compute_s
        self.rejected += other.rejected
        self.errors += other.errors


@dataclass(frozen=True)
class UsageRow:
    tenant: str
    hour: str
    model: str  # "name@version" or NO_MODEL
    counts: UsageCounts

    def to_json(self) -> str:
        """One JSON line (``json.dumps`` escapes everything a crafted name could carry)."""
        return json.dumps(
            {"tenant": self.tenant, "hour": self.hour, "model": self.model, **asdict(self.counts)},
            sort_keys=True,
            ensure_ascii=True,
        )

    @classmethod
    def from_json(cls, line: str) -> UsageRow:
        data = json.loads(line)
        counts = UsageCounts(
            requests=int(data["requests"]),
            images=int(data["images"]),
            compute_s=float(data["compute_s"]),
            rejected=int(data["rejected"]),
            errors=int(data["errors"]),
        )
        return cls(str(data["tenant"]), str(data["hour"]), str(data["model"]), counts)


@dataclass(frozen=True)
class Settlement:
    """One numbered batch of a router replica's reports to the ledger."""

    batch_id: str
    usage: tuple[UsageRow, ...] = ()
    refunds: tuple[tuple[str, Quota, int, str], ...] = ()  # (tenant, quota, unused, month)
    key_uses: tuple[tuple[str, str, float], ...] = ()  # (key id, tenant, epoch s)
    # The router replica that was granted the admissions (its batch-id prefix), and the
    # admissions it answered: (tenant, month, images). The ledger holds what it granted
    # an origin until it hears which were answered (billed) and which refunded.
    origin: str = ""
    spent: tuple[tuple[str, str, int], ...] = ()
    # Answered admissions the ledger never granted (tenants without any limit are
    # admitted by the router alone): counted to the month when settled.
    charged: tuple[tuple[str, str, int], ...] = ()

    def empty(self) -> bool:
        return not (self.usage or self.refunds or self.key_uses or self.spent or self.charged)


@dataclass
class UsageMeter:
    """Counts of one router replica since its last settlement."""

    _rows: dict[tuple[str, str, str], UsageCounts] = field(default_factory=dict)

    def record(
        self,
        tenant: str,
        model: str,
        status: int,
        now_epoch: float,
        images: int = 0,
        compute_s: float = 0.0,
    ) -> None:
        counts = self._rows.setdefault((tenant, hour_key(now_epoch), model), UsageCounts())
        counts.requests += 1
        if status == 200:
            counts.images += images
            counts.compute_s += compute_s
        elif status == 429:
            counts.rejected += 1
        else:
            counts.errors += 1

    def take(self) -> tuple[UsageRow, ...]:
        rows = tuple(UsageRow(t, h, m, c) for (t, h, m), c in self._rows.items())
        self._rows = {}
        return rows


def aggregate(
    rows: Iterable[UsageRow], tenant: str | None = None, month: str | None = None
) -> dict[tuple[str, str, str], UsageCounts]:
    """Sum rows by ``(tenant, hour, model)``, optionally for one tenant and month."""
    out: dict[tuple[str, str, str], UsageCounts] = {}
    for row in rows:
        if tenant is not None and row.tenant != tenant:
            continue
        if month is not None and not row.hour.startswith(month):
            continue
        out.setdefault((row.tenant, row.hour, row.model), UsageCounts()).add(row.counts)
    return out


def usage_lines(rows: Iterable[UsageRow]) -> Iterator[str]:
    for row in rows:
        yield row.to_json() + "\n"
