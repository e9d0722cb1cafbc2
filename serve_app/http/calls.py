"""One API call's bookkeeping: its audit line and its request counter.

A ``Call`` is filled in as the request proceeds (who, which model); ``CallLog.finish``
counts it and writes its audit line, which never fails the call.
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass
from pathlib import Path

from serve_app.auth.tenants import Principal
from serve_app.constants import AUDIT_MAX_ACTION_CHARS
from serve_app.observability.audit import AuditRecord, AuditSink, BulkAuditRecord
from serve_app.observability.metrics import RouterMetrics
from serve_app.ray_compat import request_id


def audited_address(value: str | None) -> str | None:
    """A client address as written to the audit log: an IP address, else ``invalid``
    (whatever the ingress passed on, a forged X-Forwarded-For never reaches the log)."""
    if value is None:
        return None
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return "invalid"


@dataclass
class Call:
    """What the audit line of one call needs."""

    action: str
    started: float
    request_id: str | None
    source_ip: str | None
    tenant: str | None = None
    credential: str | None = None
    model: str | None = None

    @classmethod
    def start(cls, action: str, source_ip: str | None) -> Call:
        return cls(
            action[:AUDIT_MAX_ACTION_CHARS],
            time.perf_counter(),
            request_id(),  # capped and escaped by the audit record, as the client got it
            audited_address(source_ip),
        )

    def identify(self, principal: Principal) -> None:
        self.tenant, self.credential = principal.tenant.id, principal.credential

    def record(self, status: int, outcome: str) -> AuditRecord:
        return AuditRecord.build(
            action=self.action,
            outcome=outcome,
            status=status,
            started_s=self.started,
            request_id=self.request_id,
            tenant=self.tenant,
            credential=self.credential,
            source_ip=self.source_ip,
            model=self.model,
        )


class CallLog:
    """Counts calls by tenant, route and status, and audits API calls."""

    def __init__(self, metrics: RouterMetrics) -> None:
        self.metrics = metrics
        self.sink: AuditSink | None = None  # set by reconfigure (the audit dir is config)

    def audit_to(self, path: Path) -> None:
        """Write audit lines to ``path`` (from now on; the previous file is closed)."""
        if self.sink is not None and self.sink.path == path:
            return
        if self.sink is not None:
            self.sink.close()
        self.sink = AuditSink(path)

    def finish(self, call: Call, route: str, status: int, outcome: str) -> None:
        """Count the call and write its audit line."""
        self.count(call.tenant or "-", route, status)
        if self.sink is not None and not self.sink.write(call.record(status, outcome)):
            self.metrics.audit_failures.inc()

    def count(self, tenant: str, route: str, status: int, n: int = 1) -> None:
        tags = {"tenant": tenant, "route": route, "status": str(status)}
        self.metrics.requests.inc(n, tags=tags)

    def refused_at_ingress(self, tenant: str, credential: str, code: str, n: int) -> None:
        """``n`` detect calls HAProxy refused for this credential (``ingress_refusals.py``):
        counted as the router's own refusals, audited in one line with their ``count``."""
        self.count(tenant, "/v1/detect", 429, n)
        self.metrics.quota_rejections.inc(n, tags={"tenant": tenant, "reason": code})
        record = AuditRecord.build(
            action="POST /v1/detect", outcome=code, status=429, request_id="ingress",
            tenant=tenant, credential=credential, source_ip=None,
        )  # fmt: skip
        line = BulkAuditRecord(**vars(record), count=n)
        if self.sink is not None and not self.sink.write(line):
            self.metrics.audit_failures.inc()
