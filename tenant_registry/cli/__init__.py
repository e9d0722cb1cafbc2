"""``tenantctl``: onboard tenants, manage keys, quotas, models; render and apply configs.

    tenantctl init
    tenantctl tenant create acme --name "Acme Corp" --tier shared
    tenantctl key issue acme            # prints the key once
    tenantctl apply                     # render, validate, submit to the local cluster

Every read command takes ``--json``. Errors go to stderr with a non-zero exit
status and say what to do. Commands live in one module per noun (``tenant``, ``key``,
``jwt``, ``quota``, ``policy``, ``model``, ``platform``, ``deploy``, ``usage``), each a
table of ``Command`` rows; the parser is built from those tables.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tenant_registry import audit
from tenant_registry.cli import deploy, jwt, key, model, platform, policy, quota, tenant, usage
from tenant_registry.cli.common import Command
from tenant_registry.cli.terminal import escaped_output
from tenant_registry.errors import RegistryError
from tenant_registry.store import Registry, default_db_path

# In the order `tenantctl --help` lists them.
COMMANDS: list[Command] = [
    *platform.COMMANDS,
    *tenant.COMMANDS,
    *key.COMMANDS,
    *quota.COMMANDS,
    *policy.COMMANDS,
    *model.COMMANDS,
    *jwt.COMMANDS,
    *deploy.COMMANDS,
    *usage.COMMANDS,
]
GROUP_HELP = {
    "platform": "platform-wide settings",
    "tenant": "tenants",
    "key": "API keys",
    "quota": "request rate, concurrency and monthly quotas",
    "policy": "detection policy",
    "resources": "a dedicated tenant's reservation and autoscaling",
    "model": "model versions",
    "jwt": "a tenant's JWT identity provider",
    "token": "operator-minted tokens",
}


def build_parser() -> argparse.ArgumentParser:
    """The whole command line, from the ``COMMANDS`` table."""
    parser = argparse.ArgumentParser(prog="tenantctl", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--db",
        type=Path,
        default=None,
        help=f"registry file (default: $TENANTCTL_DB or {default_db_path()})",
    )
    top = parser.add_subparsers(dest="command", required=True)
    groups: dict[str, Any] = {}
    for command in COMMANDS:
        parent = top
        if len(command.words) == 2:
            group = command.words[0]
            if group not in groups:
                groups[group] = top.add_parser(group, help=GROUP_HELP[group]).add_subparsers(
                    dest="sub", required=True
                )
            parent = groups[group]
        p = parent.add_parser(command.words[-1], help=command.help, description=command.help)
        audited = not command.read if command.audited is None else command.audited
        p.set_defaults(handler=command.handler, audited=audited)
        if command.read:
            p.add_argument("--json", action="store_true", help="machine-readable output")
        else:
            p.set_defaults(json=False)
        for argument in command.args:
            p.add_argument(*argument.flags, **argument.options)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    with escaped_output():  # nothing a tenant named can drive the operator's terminal
        return _run(build_parser().parse_args(argv))


def _run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    status, outcome = 0, "ok"
    try:
        if args.command == "validate":  # a file check: needs no registry
            return int(deploy.validate(None, args))
        with Registry(args.db) as reg:
            status = int(args.handler(reg, args))
            return status
    except RegistryError as exc:
        print(f"tenantctl: error: {exc}", file=sys.stderr)
        status, outcome = exc.exit_code, type(exc).__name__
        return exc.exit_code
    finally:
        if args.audited:
            audit.record_action(args, status, outcome, started)


if __name__ == "__main__":
    sys.exit(main())
