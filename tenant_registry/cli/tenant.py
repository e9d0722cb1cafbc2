"""``tenantctl tenant …`` and ``tenantctl resources set``: tenants and what they reserve."""

from __future__ import annotations

import argparse
import sys

from tenant_registry.cli.common import (
    TENANT,
    Command,
    Handler,
    arg,
    changes,
    emit,
    tenant_dict,
    to_json,
    unset_flags,
    version_from_uri,
)
from tenant_registry.errors import InvalidInput
from tenant_registry.store import Registry

TIERS = ("shared", "dedicated")
RESOURCE_FIELDS = (
    "num_cpus",
    "num_gpus",
    "min_replicas",
    "max_replicas",
    "target_ongoing_requests",
)


def create(reg: Registry, args: argparse.Namespace) -> int:
    platform = reg.platform()
    first = version_from_uri(platform.default_model_uri, 1)
    tenant = reg.create_tenant(
        args.tenant, args.name or args.tenant, args.tier, (platform.default_model_name, first)
    )
    print(
        f"created {args.tier} tenant {tenant.id}; next: `tenantctl key issue {tenant.id}`, "
        "then `tenantctl apply`",
        file=sys.stderr,
    )
    return 0


def list_tenants(reg: Registry, args: argparse.Namespace) -> int:
    tenants = reg.tenants()
    lines = [f"{'ID':<24} {'TIER':<10} {'STATUS':<10} {'KEYS':>4}  NAME"]
    lines += [
        f"{t.id:<24} {t.tier:<10} {t.status:<10} {len(t.active_keys()):>4}  {t.name}"
        for t in tenants
    ]
    return emit(args, [tenant_dict(t) for t in tenants], "\n".join(lines))


def show(reg: Registry, args: argparse.Namespace) -> int:
    data = tenant_dict(reg.tenant(args.tenant))
    return emit(args, data, to_json(data))


def set_status(status: str) -> Handler:
    def run(reg: Registry, args: argparse.Namespace) -> int:
        reg.set_status(args.tenant, status)
        print(f"{args.tenant} is {status}; run `tenantctl apply` to take effect", file=sys.stderr)
        return 0

    return run


def delete(reg: Registry, args: argparse.Namespace) -> int:
    if not args.yes:
        raise InvalidInput(f"deleting {args.tenant} removes its keys and models: add --yes")
    reg.delete_tenant(args.tenant)
    print(f"deleted {args.tenant}; run `tenantctl apply` to take effect", file=sys.stderr)
    return 0


def set_tier(reg: Registry, args: argparse.Namespace) -> int:
    reg.set_tier(args.tenant, args.tier)
    print(
        f"{args.tenant} is now {args.tier}; `tenantctl apply` will roll every replica "
        "(a deployment is added or removed)",
        file=sys.stderr,
    )
    return 0


def set_resources(reg: Registry, args: argparse.Namespace) -> int:
    tenant = reg.set_resources(args.tenant, **changes(args, RESOURCE_FIELDS))
    note = "" if tenant.tier == "dedicated" else " (used when the tenant becomes dedicated)"
    print(
        f"{tenant.id}: {tenant.resources.model_dump_json()} {tenant.autoscaling.model_dump_json()}"
        f"{note}",
        file=sys.stderr,
    )
    return 0


RESOURCE_FLAGS = {
    "num_cpus": {"type": float},
    "num_gpus": {"type": float, "help": "0.25, 0.5, 1, 2 …"},
    "min_replicas": {"type": int, "help": "0 scales to zero"},
    "max_replicas": {"type": int},
    "target_ongoing_requests": {"type": float},
}

COMMANDS = [
    Command(
        ("tenant", "create"),
        create,
        "create a tenant (active, with the default model)",
        [TENANT, arg("--name"), arg("--tier", choices=TIERS, default="shared")],
    ),
    Command(("tenant", "list"), list_tenants, "list tenants", read=True),
    Command(("tenant", "show"), show, "show one tenant", [TENANT], read=True),
    Command(
        ("tenant", "suspend"),
        set_status("suspended"),
        "suspend a tenant (403 after apply)",
        [TENANT],
    ),
    Command(("tenant", "resume"), set_status("active"), "resume a suspended tenant", [TENANT]),
    Command(
        ("tenant", "delete"),
        delete,
        "delete a tenant, its keys and models",
        [TENANT, arg("--yes", action="store_true", help="confirm")],
    ),
    Command(
        ("tenant", "set-tier"),
        set_tier,
        "move a tenant between tiers",
        [TENANT, arg("tier", choices=TIERS)],
    ),
    Command(
        ("resources", "set"),
        set_resources,
        "set a dedicated tenant's reservation and autoscaling",
        [TENANT, *unset_flags(RESOURCE_FIELDS, RESOURCE_FLAGS)],
    ),
]
