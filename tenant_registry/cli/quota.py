"""``tenantctl quota set``: a tenant's request rate, burst, concurrency and monthly images."""

from __future__ import annotations

import argparse
import sys

from tenant_registry.cli.common import TENANT, Command, changes, optional_number, unset_flags
from tenant_registry.store import Registry

QUOTA_FIELDS = ("requests_per_s", "burst", "max_concurrent", "monthly_images")
QUOTA_TYPES = {
    "requests_per_s": {"type": optional_number(float)},
    "burst": {"type": optional_number(int)},
    "max_concurrent": {"type": optional_number(int)},
    "monthly_images": {"type": optional_number(int)},
}


def set_quota(reg: Registry, args: argparse.Namespace) -> int:
    quota = reg.set_quota(args.tenant, **changes(args, QUOTA_FIELDS))
    print(quota.model_dump_json(), file=sys.stderr)
    return 0


COMMANDS = [
    Command(
        ("quota", "set"),
        set_quota,
        "set quotas ('none' = unlimited)",
        [TENANT, *unset_flags(QUOTA_FIELDS, QUOTA_TYPES)],
    ),
]
