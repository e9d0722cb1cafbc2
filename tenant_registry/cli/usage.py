"""``tenantctl usage``: metered usage per tenant, hour and model version."""

from __future__ import annotations

import argparse
import csv
import io
import re
from datetime import UTC, datetime

from tenant_registry.cli.common import Command, arg, emit
from tenant_registry.errors import InvalidInput
from tenant_registry.store import Registry

FIELDS = ("requests", "images", "compute_s", "rejected", "errors")


def usage(reg: Registry, args: argparse.Namespace) -> int:
    """Metered usage per tenant, hour and model version, from the usage store."""
    from tenant_registry.metering import usage_table

    month = args.month or datetime.now(UTC).strftime("%Y-%m")
    if not re.fullmatch(r"[0-9]{4}-(0[1-9]|1[0-2])", month):
        raise InvalidInput(f"--month must be YYYY-MM, got {month[:16]!r}")
    if args.tenant is not None:
        reg.tenant(args.tenant)  # an unknown tenant is an error, not an empty report
    table = usage_table(reg.platform(), month, args.tenant)
    data = [
        {"tenant": t, "hour": h, "model": m, **{f: getattr(c, f) for f in FIELDS}}
        for (t, h, m), c in sorted(table.items())
    ]
    for row in data:
        row["compute_s"] = round(row["compute_s"], 3)
    if args.csv:
        out = io.StringIO()
        writer = csv.DictWriter(
            out, fieldnames=["tenant", "hour", "model", *FIELDS], lineterminator="\n"
        )
        writer.writeheader()
        writer.writerows(data)
        print(out.getvalue(), end="")
        return 0
    totals: dict[str, dict[str, float]] = {}
    for row in data:
        total = totals.setdefault(str(row["tenant"]), dict.fromkeys(FIELDS, 0))
        for f in FIELDS:
            total[f] += row[f]
    lines = [f"usage {month}" + (f" for {args.tenant}" if args.tenant else "")]
    lines.append(
        f"{'TENANT':<20} {'REQUESTS':>9} {'IMAGES':>9} {'COMPUTE S':>10} {'429':>6} ERRORS"
    )
    for tenant, total in sorted(totals.items()):
        lines.append(
            f"{tenant:<20} {total['requests']:>9.0f} {total['images']:>9.0f} "
            f"{total['compute_s']:>10.2f} {total['rejected']:>6.0f} {total['errors']:.0f}"
        )
    if not totals:
        lines.append("(no usage exported yet; the ledger exports every 30 s)")
    return emit(args, data, "\n".join(lines))


COMMANDS = [
    Command(
        ("usage",),
        usage,
        "metered usage per tenant, hour and model",
        [
            arg("--tenant"),
            arg("--month", help="YYYY-MM (default: this month, UTC)"),
            arg("--csv", action="store_true", help="one CSV row per tenant, hour and model"),
        ],
        read=True,
    ),
]
