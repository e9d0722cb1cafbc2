"""Audit lines for control-plane actions: one per `tenantctl` command that changes
something (or issues a credential), in the same format as the routers' API lines
(``serve_app.observability.audit``). Never a key or a token: only ids and names from the arguments
below.
"""

from __future__ import annotations

import argparse
import getpass
import os
import socket
import sys
from pathlib import Path

from serve_app.observability.audit import AuditRecord, AuditSink
from tenant_registry.store import default_db_path

AUDIT_LOG_ENV = "TENANTCTL_AUDIT_LOG"
# Exit codes (tenant_registry.errors) as the HTTP statuses an API would have answered.
STATUS_OF_EXIT = {0: 200, 1: 500, 2: 400, 3: 404, 4: 409, 5: 502}


def audit_path(db: str | None) -> Path:
    """``$TENANTCTL_AUDIT_LOG``, else ``audit/control.jsonl`` beside the registry file."""
    if os.environ.get(AUDIT_LOG_ENV):
        return Path(os.environ[AUDIT_LOG_ENV])
    registry = Path(db) if db else default_db_path()
    return registry.parent / "audit" / "control.jsonl"


def record_action(args: argparse.Namespace, exit_code: int, outcome: str, started: float) -> None:
    """Write the command's audit line; a sink that fails only warns (on stderr)."""
    action = " ".join(x for x in ("tenantctl", args.command, getattr(args, "sub", None)) if x)
    model = getattr(args, "model", None)
    version = getattr(args, "version", None)
    record = AuditRecord.build(
        action=action,
        outcome=outcome,
        status=STATUS_OF_EXIT.get(exit_code, 500),
        started_s=started,
        tenant=getattr(args, "tenant", None) or getattr(args, "key_id", None),
        credential=f"operator:{_user()}",
        source_ip=socket.gethostname(),
        model=f"{model}@{version}" if model and version is not None else model,
    )
    sink = AuditSink(audit_path(getattr(args, "db", None)))
    if not sink.write(record):
        print(f"tenantctl: warning: audit log {sink.path} is not writable", file=sys.stderr)
    sink.close()


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())
