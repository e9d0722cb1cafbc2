"""The audit log: one JSON line per API call (router) or control-plane action (tenantctl).

What a line holds: UTC ISO 8601 time, request id, tenant, credential *id* (``key_…``
or ``jwt:<sub>``), source IP, action, model and version, outcome, HTTP status and
latency. Never a key, a token, an image byte or a pixel: a record is built only
from the fields below, and every string is capped and JSON-escaped
(``ensure_ascii``), so a crafted header or file name cannot break a line or forge the
next one.

``AuditSink`` appends lines to a file and never raises: a full disk or an unwritable
path is counted (``failures``) and reported, and the request goes on.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from serve_app.constants import AUDIT_MAX_FIELD_CHARS
from serve_app.wire import utc_iso

logger = logging.getLogger("ray.serve")


def _cap(value: object) -> str:
    text = "-" if value is None or value == "" else str(value)
    return text[:AUDIT_MAX_FIELD_CHARS]


@dataclass(frozen=True)
class AuditRecord:
    ts: str
    request_id: str
    tenant: str
    credential: str
    source_ip: str
    action: str
    model: str
    version: str
    outcome: str
    status: int
    latency_ms: float

    @classmethod
    def build(
        cls,
        *,
        action: str,
        outcome: str,
        status: int,
        started_s: float | None = None,
        request_id: str | None = None,
        tenant: str | None = None,
        credential: str | None = None,
        source_ip: str | None = None,
        model: str | None = None,
        now_s: float | None = None,
    ) -> AuditRecord:
        """A record with every string capped; ``model`` is ``name@version`` or None."""
        now = time.time() if now_s is None else now_s
        name, _, version = (model or "").partition("@")
        latency = 0.0 if started_s is None else round((time.perf_counter() - started_s) * 1e3, 2)
        return cls(
            ts=utc_iso(now, "milliseconds"),
            request_id=_cap(request_id),
            tenant=_cap(tenant),
            credential=_cap(credential),
            source_ip=_cap(source_ip),
            action=_cap(action),
            model=_cap(name),
            version=_cap(version),
            outcome=_cap(outcome),
            status=int(status),
            latency_ms=latency,
        )

    def to_line(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=True, sort_keys=True) + "\n"


class AuditSink:
    """Appends records to one file; failures are counted, never raised."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.failures = 0
        self._lock = threading.Lock()
        self._warned_at = 0.0

    def write(self, record: AuditRecord) -> bool:
        line = record.to_line().encode("ascii")
        with self._lock:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
                try:
                    os.write(fd, line)  # one write per line: O_APPEND keeps lines whole
                finally:
                    os.close(fd)
            except OSError as exc:
                self.failures += 1
                now = time.monotonic()
                if now - self._warned_at > 60:  # do not turn a full disk into a log flood
                    self._warned_at = now
                    logger.error("audit: cannot write %s: %s", self.path, exc.strerror)
                return False
        return True
