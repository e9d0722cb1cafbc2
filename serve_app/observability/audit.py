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

import contextlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from serve_app.constants import (
    AUDIT_KEEP_FILES,
    AUDIT_MAX_FIELD_CHARS,
    AUDIT_RECHECK_S,
    AUDIT_ROTATE_BYTES,
)
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
        # vars(), not asdict(): every field is a plain value, nothing to copy deeply
        return json.dumps(vars(self), ensure_ascii=True, sort_keys=True) + "\n"


@dataclass(frozen=True)
class BulkAuditRecord(AuditRecord):
    """``count`` calls answered alike, in one line: refusals the ingress answered
    (``http/ingress_refusals.py``), which the router learns of as a tally."""

    count: int = 1


class AuditSink:
    """Appends records to one file; failures are counted, never raised.

    The file is rotated by size: past ``max_bytes`` it becomes ``<stem>.1<suffix>`` (the
    older ones ``.2``, ...), and only ``keep`` old files stay, so however many requests
    come (an unauthenticated flood is audited too) one writer never holds more than
    ``(keep + 1) * max_bytes`` of disk. Rotated names keep the suffix: a reader's
    ``api-*.jsonl`` finds them all.
    """

    def __init__(
        self, path: Path, max_bytes: int = AUDIT_ROTATE_BYTES, keep: int = AUDIT_KEEP_FILES
    ) -> None:
        self.path = path
        self.failures = 0
        self._max_bytes = max_bytes
        self._keep = keep
        self._size: int | None = None  # of the current file, once known
        self._fd: int | None = None  # kept open: one write per line, no open/close
        self._checked_at = 0.0  # when the path was last seen to still be our file
        self._lock = threading.Lock()
        self._warned_at = 0.0

    def _rotated(self, n: int) -> Path:
        return self.path.with_name(f"{self.path.stem}.{n}{self.path.suffix}")

    def _rotate(self) -> None:
        self._rotated(self._keep).unlink(missing_ok=True)
        for n in range(self._keep - 1, 0, -1):
            if self._rotated(n).exists():
                self._rotated(n).rename(self._rotated(n + 1))
        if self._keep:
            self.path.rename(self._rotated(1))
        else:
            self.path.unlink(missing_ok=True)
        self._close()

    def _open(self) -> int:
        """The file, opened (and its folder made) if it is not open yet; reopened when the
        path no longer names it (moved or deleted by someone else), checked once per
        ``AUDIT_RECHECK_S``."""
        now = time.monotonic()
        if self._fd is not None and now - self._checked_at > AUDIT_RECHECK_S:
            self._checked_at = now
            try:
                if os.stat(self.path).st_ino != os.fstat(self._fd).st_ino:
                    self._close()
            except FileNotFoundError:
                self._close()
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            self._size = os.fstat(self._fd).st_size
            self._checked_at = now
        return self._fd

    def _close(self) -> None:
        if self._fd is not None:
            fd, self._fd, self._size = self._fd, None, None
            with contextlib.suppress(OSError):
                os.close(fd)

    def close(self) -> None:
        """No more lines (the sink is replaced, or the replica stops)."""
        with self._lock:
            self._close()

    def write(self, record: AuditRecord) -> bool:
        line = record.to_line().encode("ascii")
        with self._lock:
            try:
                fd = self._open()
                if self._size and self._size + len(line) > self._max_bytes:
                    self._rotate()
                    fd = self._open()
                os.write(fd, line)  # one write per line: O_APPEND keeps lines whole
                self._size = (self._size or 0) + len(line)
            except OSError as exc:
                self.failures += 1
                self._close()  # the folder may have gone: open (and make it) again next time
                now = time.monotonic()
                if now - self._warned_at > 60:  # do not turn a full disk into a log flood
                    self._warned_at = now
                    logger.error("audit: cannot write %s: %s", self.path, exc.strerror)
                return False
        return True
