"""``tenantctl policy …``: the operator's detection policy, and the defaults a tenant
saved for itself within it."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from tenant_registry import cluster
from tenant_registry.cli.common import TENANT, Command, arg, changes, emit, unset_flags
from tenant_registry.store import Registry

POLICY_FIELDS = ("conf", "min_conf", "iou", "max_det", "allowed_classes", "max_imgsz")
POLICY_TYPES = {
    "conf": {"type": float},
    "min_conf": {"type": float},
    "iou": {"type": float},
    "max_det": {"type": int},
    "allowed_classes": {"help": "comma-separated names, or 'all'"},
    "max_imgsz": {"type": int},
}


def set_policy(reg: Registry, args: argparse.Namespace) -> int:
    given = changes(args, POLICY_FIELDS)
    if "allowed_classes" in given:
        raw = given["allowed_classes"]
        given["allowed_classes"] = (
            None if raw in ("all", "") else [c.strip() for c in raw.split(",") if c.strip()]
        )
    policy = reg.set_policy(args.tenant, **given)
    print(policy.model_dump_json(), file=sys.stderr)
    return 0


def show(reg: Registry, args: argparse.Namespace) -> int:
    """The operator's policy and, with --cluster, what the tenant saved for itself."""
    from serve_app.inference.defaults import effective_policy
    from serve_app.wire import TenantDefaults

    policy = reg.tenant(args.tenant).policy
    data: dict[str, Any] = {"policy": policy.model_dump()}
    lines = [f"operator policy: {policy.model_dump_json()}"]
    if args.cluster:
        saved = cluster.tenant_defaults(args.cluster, args.tenant)
        current = effective_policy(policy, TenantDefaults.model_validate(saved))
        data["tenant_defaults"] = saved
        data["in_force"] = {"conf": current.conf, "iou": current.iou, "max_det": current.max_det}
        lines += [
            f"tenant's own defaults (PUT /v1/policy): {json.dumps(saved)}",
            f"in force: {json.dumps(data['in_force'])}",
        ]
    return emit(args, data, "\n".join(lines))


COMMANDS = [
    Command(
        ("policy", "show"),
        show,
        "the operator's policy and the tenant's own saved defaults",
        [TENANT, arg("--cluster", help="ask the running ledger for the tenant's saved defaults")],
        read=True,
    ),
    Command(
        ("policy", "set"),
        set_policy,
        "set the detection policy",
        [TENANT, *unset_flags(POLICY_FIELDS, POLICY_TYPES)],
    ),
]
