"""``tenantctl key …``: API keys, shown once, stored as hashes."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from serve_app.wire import utc_iso
from tenant_registry import cluster
from tenant_registry.cli.common import CLUSTER_HELP, TENANT, Command, arg, emit
from tenant_registry.store import Registry


def issue(reg: Registry, args: argparse.Namespace) -> int:
    record, key = reg.issue_key(args.tenant)
    if args.json:
        print(json.dumps({"key_id": record.key_id, "tenant_id": record.tenant_id, "api_key": key}))
    else:
        print(key)
    print(
        f"issued {record.key_id} for {args.tenant}: the key is shown once and not stored; "
        "run `tenantctl apply` to enable it",
        file=sys.stderr,
    )
    return 0


def list_keys(reg: Registry, args: argparse.Namespace) -> int:
    keys = reg.tenant(args.tenant).keys
    used = cluster.key_last_used(args.cluster, args.tenant) if args.cluster else {}
    lines = [f"{'KEY ID':<18} {'PREFIX':<12} {'CREATED':<26} {'REVOKED':<26} LAST USED"]
    data = []
    for key in keys:
        last = used.get(key.key_id)
        last_iso = utc_iso(last) if last is not None else None
        lines.append(
            f"{key.key_id:<18} {key.prefix:<12} {key.created_at:<26} "
            f"{key.revoked_at or '-':<26} {last_iso or ('never' if args.cluster else '?')}"
        )
        entry = {k: v for k, v in asdict(key).items() if k != "sha256"}
        entry["last_used_at"] = last_iso
        data.append(entry)
    return emit(args, data, "\n".join(lines))


def revoke(reg: Registry, args: argparse.Namespace) -> int:
    record = reg.revoke_key(args.key_id)
    print(f"revoked {record.key_id} of {record.tenant_id}; run `tenantctl apply`", file=sys.stderr)
    return 0


COMMANDS = [
    # Read-only in form (--json), but issuing a key is a change: audited.
    Command(
        ("key", "issue"), issue, "issue a key (printed once)", [TENANT], read=True, audited=True
    ),
    Command(
        ("key", "list"),
        list_keys,
        "list a tenant's keys (never the keys themselves)",
        [
            TENANT,
            arg(
                "--cluster",
                metavar="RAY_ADDRESS",
                help="also show when each key was last used, from the quota ledger; "
                + CLUSTER_HELP,
            ),
        ],
        read=True,
    ),
    Command(("key", "revoke"), revoke, "revoke a key by its id", [arg("key_id")]),
]
