"""``tenantctl render | publish | apply | validate | status``: from the registry to a cluster."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from serve_app.config import DirectorySpec
from serve_app.constants import APP_NAME
from tenant_registry import cluster, kuberay, manifests, render
from tenant_registry.cli.common import Command, arg, emit
from tenant_registry.errors import InvalidInput, RegistryError
from tenant_registry.platform import directory_spec
from tenant_registry.publish import Published, publish_registry
from tenant_registry.store import Registry

# A router applies a publish on its next read of the directory (every poll_s): waiting
# two polls covers a read that began just before the publish.
FOLLOW_POLLS = 2


def _rendered(reg: Registry) -> dict[str, Any]:
    return render.render_registry(reg)


def render_config(reg: Registry, args: argparse.Namespace) -> int:
    if args.format == "rayservice":
        spec = directory_spec(reg.platform())
        if spec is not None and spec.uri.startswith("file://"):
            raise InvalidInput(
                f"the tenant directory ({spec.uri}) would be on each pod's own disk: set "
                "`tenantctl platform set --model-store-uri s3://BUCKET/PREFIX` (or "
                "`--tenant-directory off` to list tenants in the manifest)"
            )
        text = kuberay.render_rayservice(_rendered(reg), reg.platform().kuberay)
        manifests.validate_documents(list(yaml.safe_load_all(text)))  # never a bad manifest
    else:
        text = render.to_yaml(_rendered(reg))
    if args.output:
        Path(args.output).write_text(text)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        print(text, end="")
    return 0


def publish(reg: Registry, args: argparse.Namespace) -> int:
    """Only the tenants (no Serve deploy): what a cluster whose config is deployed by
    other means (a RayService applied by GitOps) needs after a tenant change."""
    published = _publish(reg)
    if published is None:
        raise InvalidInput(
            "the tenant directory is off: tenants travel in the Serve config, use "
            "`tenantctl apply` (or `platform set --tenant-directory on`)"
        )
    return 0


def _publish(reg: Registry) -> tuple[DirectorySpec, Published] | None:
    published = publish_registry(reg)
    if published is not None:
        spec, done = published
        what = "all tenants" if done.snapshot else f"{len(done.changed)} changed tenants"
        print(f"published {what} to {spec.uri} (seq {done.seq})", file=sys.stderr)
    return published


def apply(reg: Registry, args: argparse.Namespace) -> int:
    if args.dry_run:
        print(render.to_yaml(_rendered(reg)), end="")
        return 0
    # Tenants first, before Ray is even imported: the routers follow the directory, so a
    # shared tenant's change is in effect from here; the config names none of them.
    published = _publish(reg)
    config = _rendered(reg)
    if published is not None and cluster.is_deployed(config, args.address):
        print(f"the Serve config on {args.address} is unchanged: not redeployed", file=sys.stderr)
        if args.wait is not None:  # every router reads the directory once per poll
            time.sleep(FOLLOW_POLLS * published[0].poll_s)
            print("followed by every router and the shared pool", file=sys.stderr)
        return 0
    since = cluster.deployed_at(args.address) if args.wait is not None else None
    cluster.deploy(config, args.address)
    tenants = config["applications"][0]["deployments"][0]["user_config"]["tenants"]
    listed = f"{len(tenants)} tenants" if published is None else "the platform"
    print(f"applied {listed} to {args.address}", file=sys.stderr)
    if args.wait is not None:
        cluster.wait_applied(args.address, since, args.wait)
        print("live on every replica", file=sys.stderr)
    return 0


def validate(reg: Registry | None, args: argparse.Namespace) -> int:
    """A Serve config, or a RayService / RayJob / RayCluster manifest (it has a kind)."""
    docs = render.load_yaml_documents(Path(args.file))
    if len(docs) > 1 or (isinstance(docs[0], dict) and "kind" in docs[0]):
        kinds = manifests.validate_documents(docs)
        print(f"{args.file}: valid {', '.join(kinds)}", file=sys.stderr)
        return 0
    raw = docs[0]
    parsed = render.validate_config(raw)
    apps = ", ".join(a.name for a in parsed.applications)
    print(f"{args.file}: valid Serve config ({apps})", file=sys.stderr)
    return 0


def status(reg: Registry, args: argparse.Namespace) -> int:
    tenants = reg.tenants()
    counts = {
        "total": len(tenants),
        "shared": sum(t.tier == "shared" for t in tenants),
        "dedicated": sum(t.tier == "dedicated" for t in tenants),
        "suspended": sum(t.status == "suspended" for t in tenants),
        "not_servable": [t.id for t in tenants if not render.servable(t)],
    }
    data: dict[str, Any] = {"registry": str(reg.path), "tenants": counts}
    try:
        app = cluster.serve_details(args.address).get("applications", {}).get(APP_NAME)
        data["cluster"] = {
            "address": args.address,
            "app_status": app["status"] if app else "NOT_DEPLOYED",
            "deployments": {
                name: {"status": d["status"], "replicas": len(d.get("replicas", []))}
                for name, d in (app or {}).get("deployments", {}).items()
            },
        }
    except RegistryError as exc:
        data["cluster"] = {"address": args.address, "error": str(exc)}
    lines = [
        f"registry {data['registry']}: {counts['total']} tenants ({counts['shared']} shared, "
        f"{counts['dedicated']} dedicated, {counts['suspended']} suspended)"
    ]
    cl = data["cluster"]
    if "error" in cl:
        lines.append(f"cluster: {cl['error']}")
    else:
        lines.append(f"cluster {cl['address']}: app {cl['app_status']}")
        lines += [
            f"  {n:<28} {d['status']:<12} {d['replicas']} replicas"
            for n, d in sorted(cl["deployments"].items())
        ]
    return emit(args, data, "\n".join(lines))


ADDRESS = arg("--address", default=cluster.default_address(), help="Ray dashboard URL")

COMMANDS = [
    Command(
        ("render",),
        render_config,
        "write the Serve config or RayService of the registry",
        [
            arg("-o", "--output"),
            arg(
                "--format",
                choices=("serve", "rayservice"),
                default="serve",
                help="a Serve config for `serve deploy` (default) or a KubeRay RayService manifest",
            ),
        ],
    ),
    Command(
        ("publish",),
        publish,
        "publish changed tenants to the tenant directory the routers follow (no deploy)",
        [],
    ),
    Command(
        ("apply",),
        apply,
        "render, validate and submit to a running cluster",
        [
            ADDRESS,
            arg("--dry-run", action="store_true", help="print what would be submitted"),
            arg(
                "--wait",
                type=float,
                metavar="SECONDS",
                help="return once the change is live on every replica (a new key accepted "
                "by every router), or fail after SECONDS",
            ),
        ],
    ),
    Command(
        ("validate",),
        validate,  # type: ignore[arg-type]  # needs no registry: main() calls it without one
        "strictly validate a Serve config, RayService, RayJob or RayCluster file",
        [arg("file")],
    ),
    Command(("status",), status, "registry summary and the cluster's view", [ADDRESS], read=True),
]
