"""``tenantctl``: onboard tenants, manage keys, quotas, models; render and apply configs.

    tenantctl init
    tenantctl tenant create acme --name "Acme Corp" --tier shared
    tenantctl key issue acme            # prints the key once
    tenantctl apply                     # render, validate, submit to the local cluster

Every read command takes ``--json``. Errors go to stderr with a non-zero exit
status and say what to do.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from serve_app.wire import utc_iso
from tenant_registry import audit, cluster, kuberay, manifests, render
from tenant_registry.errors import InvalidInput, RegistryError
from tenant_registry.migrations import LATEST_VERSION
from tenant_registry.platform import PlatformSettings
from tenant_registry.store import (
    ModelVersion,
    Registry,
    Tenant,
    default_db_path,
)

Handler = Callable[[Registry, argparse.Namespace], int]


def _json_default(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    raise TypeError(f"cannot encode {type(value).__name__}")


def _emit(args: argparse.Namespace, data: Any, text: str) -> int:
    print(json.dumps(data, default=_json_default, indent=2) if args.json else text)
    return 0


def _tenant_dict(t: Tenant) -> dict[str, Any]:
    data = asdict(t)
    data["keys"] = [{k: v for k, v in key.items() if k != "sha256"} for key in data["keys"]]
    return data


def _optional_number(kind: type[float] | type[int]) -> Callable[[str], float | int | None]:
    """argparse type: a number, or 'none' for unlimited/unset."""

    def parse(raw: str) -> float | int | None:
        if raw.lower() in ("none", "unlimited"):
            return None
        try:
            return kind(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number or 'none', got {raw!r}") from None

    return parse


def _changes(args: argparse.Namespace, names: Sequence[str]) -> dict[str, Any]:
    changes = {n: getattr(args, n) for n in names if getattr(args, n) is not _UNSET}
    if not changes:
        flags = ", ".join("--" + n.replace("_", "-") for n in names)
        raise InvalidInput(f"nothing to change: pass at least one of {flags}")
    return changes


_UNSET: Any = object()


def _version_from_uri(uri: str, version: int) -> ModelVersion:
    """Read and verify the version at ``uri`` so the registry records what is really there."""
    from serve_app.errors import ModelLoadError
    from serve_app.models.store import fetch_version

    try:
        fetched = fetch_version(uri)
    except (ModelLoadError, ValueError) as exc:
        raise InvalidInput(f"model at {uri} is not usable: {exc}") from None
    return ModelVersion(
        version=version,
        uri=uri,
        architecture=fetched.manifest.architecture or fetched.manifest.format,
        sha256=fetched.manifest.sha256,
        created_at=utc_iso(),
    )


# `platform set --k8s-<field>`: the KubeRay settings an operator changes most.
KUBERAY_FLAGS: dict[str, tuple[type, str]] = {
    "name": (str, "the RayService's name"),
    "image": (str, "container image (Ray, CUDA, this project; see configs/Dockerfile)"),
    "s3_secret": (str, "Secret holding access-key-id and secret-access-key"),
    "gpus_per_worker": (int, "GPUs per GPU worker pod"),
    "gpu_workers_max": (int, "most GPU worker pods the autoscaler may start"),
    "cpu_workers_max": (int, "most CPU worker pods the autoscaler may start"),
}


# ----------------------------------------------------------------- commands


def cmd_init(reg: Registry, args: argparse.Namespace) -> int:
    settings = reg.platform()
    updates = {
        k: v
        for k, v in {
            "http_host": args.http_host,
            "http_port": args.http_port,
            "default_model_uri": args.default_model_uri,
        }.items()
        if v is not None
    }
    settings = settings.model_validate({**settings.model_dump(), **updates})
    reg.set_platform(settings)
    print(f"registry ready at {reg.path} (schema v{LATEST_VERSION})", file=sys.stderr)
    return 0


def cmd_platform_show(reg: Registry, args: argparse.Namespace) -> int:
    settings = reg.platform()
    return _emit(args, settings, settings.model_dump_json(indent=2))


def cmd_platform_set(reg: Registry, args: argparse.Namespace) -> int:
    current = reg.platform().model_dump()
    if args.http_host is not None:
        current["http_host"] = args.http_host
    if args.http_port is not None:
        current["http_port"] = args.http_port
    if args.router_num_cpus is not None:
        current["router"]["resources"]["num_cpus"] = args.router_num_cpus
    if args.pool_num_cpus is not None:
        current["shared_pool"]["resources"]["num_cpus"] = args.pool_num_cpus
    if args.pool_num_gpus is not None:
        current["shared_pool"]["resources"]["num_gpus"] = args.pool_num_gpus
    if args.dedicated_num_cpus is not None:
        current["dedicated_resources"]["num_cpus"] = args.dedicated_num_cpus
    if args.default_model_uri is not None:
        current["default_model_uri"] = args.default_model_uri
    if args.model_store_uri is not None:
        current["model_store_uri"] = args.model_store_uri
    if args.s3_endpoint_url is not None:
        current["store"]["s3_endpoint_url"] = args.s3_endpoint_url or None
    if args.s3_region is not None:
        current["store"]["s3_region"] = args.s3_region or None
    if args.max_models_per_replica is not None:
        current["max_models_per_replica"] = args.max_models_per_replica
    if args.ledger_state_path is not None:
        current["ledger"]["state_path"] = args.ledger_state_path
    if args.usage_uri is not None:
        current["ledger"]["usage_uri"] = args.usage_uri
    if args.audit_dir is not None:
        current["audit_dir"] = args.audit_dir
    if args.max_batch_size is not None:
        current["batching"]["max_batch_size"] = args.max_batch_size
    if args.batch_wait_timeout_s is not None:
        current["batching"]["batch_wait_timeout_s"] = args.batch_wait_timeout_s
    for field in KUBERAY_FLAGS:
        value = getattr(args, f"k8s_{field}")
        if value is not None:
            current["kuberay"][field] = value
    try:
        settings = PlatformSettings.model_validate(current)
    except ValueError as exc:
        raise InvalidInput(f"invalid platform settings: {exc}") from None
    reg.set_platform(settings)
    return 0


def cmd_tenant_create(reg: Registry, args: argparse.Namespace) -> int:
    platform = reg.platform()
    first = _version_from_uri(platform.default_model_uri, 1)
    tenant = reg.create_tenant(
        args.tenant, args.name or args.tenant, args.tier, (platform.default_model_name, first)
    )
    print(
        f"created {args.tier} tenant {tenant.id}; next: `tenantctl key issue {tenant.id}`, "
        "then `tenantctl apply`",
        file=sys.stderr,
    )
    return 0


def cmd_tenant_list(reg: Registry, args: argparse.Namespace) -> int:
    tenants = reg.tenants()
    lines = [f"{'ID':<24} {'TIER':<10} {'STATUS':<10} {'KEYS':>4}  NAME"]
    lines += [
        f"{t.id:<24} {t.tier:<10} {t.status:<10} {len(t.active_keys()):>4}  {t.name}"
        for t in tenants
    ]
    return _emit(args, [_tenant_dict(t) for t in tenants], "\n".join(lines))


def cmd_tenant_show(reg: Registry, args: argparse.Namespace) -> int:
    t = reg.tenant(args.tenant)
    data = _tenant_dict(t)
    return _emit(args, data, json.dumps(data, default=_json_default, indent=2))


def cmd_tenant_status(status: str) -> Handler:
    def run(reg: Registry, args: argparse.Namespace) -> int:
        reg.set_status(args.tenant, status)
        print(f"{args.tenant} is {status}; run `tenantctl apply` to take effect", file=sys.stderr)
        return 0

    return run


def cmd_tenant_delete(reg: Registry, args: argparse.Namespace) -> int:
    if not args.yes:
        raise InvalidInput(f"deleting {args.tenant} removes its keys and models: add --yes")
    reg.delete_tenant(args.tenant)
    print(f"deleted {args.tenant}; run `tenantctl apply` to take effect", file=sys.stderr)
    return 0


def cmd_tenant_set_tier(reg: Registry, args: argparse.Namespace) -> int:
    reg.set_tier(args.tenant, args.tier)
    print(
        f"{args.tenant} is now {args.tier}; `tenantctl apply` will roll every replica "
        "(a deployment is added or removed)",
        file=sys.stderr,
    )
    return 0


def cmd_key_issue(reg: Registry, args: argparse.Namespace) -> int:
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


def cmd_key_list(reg: Registry, args: argparse.Namespace) -> int:
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
    return _emit(args, data, "\n".join(lines))


def cmd_key_revoke(reg: Registry, args: argparse.Namespace) -> int:
    record = reg.revoke_key(args.key_id)
    print(f"revoked {record.key_id} of {record.tenant_id}; run `tenantctl apply`", file=sys.stderr)
    return 0


def cmd_jwt_set(reg: Registry, args: argparse.Namespace) -> int:
    changes: dict[str, Any] = {}
    if args.issuer is not None:
        changes["issuer"] = args.issuer
    if args.audience is not None:
        changes["audience"] = args.audience
    if args.alg:
        changes["algorithms"] = tuple(args.alg)
    if args.public_key:
        try:
            changes["public_keys_pem"] = tuple(Path(p).read_text() for p in args.public_key)
        except OSError as exc:
            raise InvalidInput(f"cannot read a public key file: {exc.strerror}") from None
    if args.no_public_keys:
        changes["public_keys_pem"] = ()
    if args.jwks_url is not None:
        changes["jwks_url"] = args.jwks_url or None
    if not changes:
        raise InvalidInput(
            "nothing to change: pass --issuer, --audience, --alg, --public-key or --jwks-url"
        )
    settings = reg.set_jwt(args.tenant, **changes)
    source = f"{len(settings.public_keys_pem)} PEM keys"
    if settings.jwks_url:
        source += f" + JWKS {settings.jwks_url}"
    print(
        f"{args.tenant} accepts JWTs from {settings.issuer} for {settings.audience} "
        f"({', '.join(settings.algorithms)}, {source}); run `tenantctl apply`",
        file=sys.stderr,
    )
    return 0


def cmd_jwt_clear(reg: Registry, args: argparse.Namespace) -> int:
    reg.clear_jwt(args.tenant)
    print(f"{args.tenant} no longer accepts JWTs; run `tenantctl apply`", file=sys.stderr)
    return 0


def cmd_token_mint(reg: Registry, args: argparse.Namespace) -> int:
    """A short-lived JWT for a tenant, signed with an operator-held private key."""
    import time
    import uuid

    import jwt
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    settings = reg.tenant(args.tenant).jwt
    if settings is None:
        raise InvalidInput(
            f"{args.tenant} has no JWT settings: `tenantctl jwt set {args.tenant} --issuer … "
            "--audience … --public-key operator.pub` first"
        )
    key_path = args.private_key or os.environ.get(SIGNING_KEY_ENV)
    if not key_path:
        raise InvalidInput(f"pass --private-key FILE or set ${SIGNING_KEY_ENV}")
    try:
        private_key = load_pem_private_key(Path(key_path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise InvalidInput(f"cannot load the signing key {key_path}: {exc}") from None
    if not 1 <= args.ttl <= MAX_TOKEN_TTL_S:
        raise InvalidInput(f"--ttl must be 1..{MAX_TOKEN_TTL_S} seconds: tokens are short-lived")
    now = int(time.time())
    claims = {
        "iss": settings.issuer,
        "aud": settings.audience,
        "sub": args.subject,
        "iat": now,
        "exp": now + args.ttl,
        "jti": uuid.uuid4().hex,
    }
    alg = args.alg or settings.algorithms[0]
    if alg not in settings.algorithms:
        raise InvalidInput(f"{args.tenant} accepts {', '.join(settings.algorithms)}, not {alg}")
    try:
        token = jwt.encode(claims, private_key, algorithm=alg)  # type: ignore[arg-type]
    except (jwt.PyJWTError, TypeError, ValueError) as exc:
        raise InvalidInput(f"the key cannot sign {alg}: {exc}") from None
    print(token)
    print(f"token for {args.tenant} ({args.subject}), valid {args.ttl} s", file=sys.stderr)
    return 0


SIGNING_KEY_ENV = "TENANTCTL_SIGNING_KEY"
MAX_TOKEN_TTL_S = 24 * 3600

QUOTA_FIELDS = ("requests_per_s", "burst", "max_concurrent", "monthly_images")
POLICY_FIELDS = ("conf", "min_conf", "iou", "max_det", "allowed_classes", "max_imgsz")
RESOURCE_FIELDS = (
    "num_cpus",
    "num_gpus",
    "min_replicas",
    "max_replicas",
    "target_ongoing_requests",
)


def cmd_quota_set(reg: Registry, args: argparse.Namespace) -> int:
    quota = reg.set_quota(args.tenant, **_changes(args, QUOTA_FIELDS))
    print(quota.model_dump_json(), file=sys.stderr)
    return 0


def cmd_policy_set(reg: Registry, args: argparse.Namespace) -> int:
    changes = _changes(args, POLICY_FIELDS)
    if "allowed_classes" in changes:
        raw = changes["allowed_classes"]
        changes["allowed_classes"] = (
            None if raw in ("all", "") else [c.strip() for c in raw.split(",") if c.strip()]
        )
    policy = reg.set_policy(args.tenant, **changes)
    print(policy.model_dump_json(), file=sys.stderr)
    return 0


def cmd_policy_show(reg: Registry, args: argparse.Namespace) -> int:
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
    return _emit(args, data, "\n".join(lines))


def cmd_resources_set(reg: Registry, args: argparse.Namespace) -> int:
    tenant = reg.set_resources(args.tenant, **_changes(args, RESOURCE_FIELDS))
    note = "" if tenant.tier == "dedicated" else " (used when the tenant becomes dedicated)"
    print(
        f"{tenant.id}: {tenant.resources.model_dump_json()} {tenant.autoscaling.model_dump_json()}"
        f"{note}",
        file=sys.stderr,
    )
    return 0


def cmd_model_add_version(reg: Registry, args: argparse.Namespace) -> int:
    reg.tenant(args.tenant)
    version = _version_from_uri(args.uri, args.version or reg.next_version(args.tenant, args.model))
    model = reg.add_model_version(args.tenant, args.model, version, activate=args.activate)
    print(
        f"{args.tenant}/{args.model}@{version.version} recorded ({version.architecture}); "
        f"active version: {model.active_version}",
        file=sys.stderr,
    )
    return 0


def cmd_model_push(reg: Registry, args: argparse.Namespace) -> int:
    from tenant_registry import push

    names = [n.strip() for n in args.class_names.split(",")] if args.class_names else None
    version, manifest = push.push_version(
        reg,
        args.tenant,
        args.model,
        Path(args.file),
        arch=args.arch,
        class_names=names,
        imgsz=args.imgsz,
        trusted_pt=args.trusted_pt,
        activate=args.activate,
    )
    number, uri = version.version, version.uri
    model = reg.model(args.tenant, args.model)
    print(
        f"pushed {args.tenant}/{args.model}@{number} to {uri} ({manifest.architecture}, "
        f"{len(manifest.class_names)} classes); active version: {model.active_version}"
        + (
            ""
            if args.activate
            else f"; activate with `tenantctl model activate {args.tenant} {args.model} {number}`"
        ),
        file=sys.stderr,
    )
    if args.json:
        print(json.dumps({"version": number, "uri": uri, "sha256": manifest.sha256}))
    return 0


def cmd_model_activate(reg: Registry, args: argparse.Namespace) -> int:
    model = reg.activate(args.tenant, args.model, args.version)
    print(f"{args.tenant}/{args.model} active version: {model.active_version}", file=sys.stderr)
    return 0


def cmd_model_rollback(reg: Registry, args: argparse.Namespace) -> int:
    model = reg.rollback(args.tenant, args.model)
    print(f"{args.tenant}/{args.model} rolled back to {model.active_version}", file=sys.stderr)
    return 0


def cmd_model_list(reg: Registry, args: argparse.Namespace) -> int:
    models = reg.tenant(args.tenant).models
    loads = cluster.load_status(args.cluster, f"{args.tenant}/") if args.cluster else {}
    lines = [f"{'MODEL':<20} {'VERSION':>7} {'ACTIVE':<6} {'ARCH':<10} {'LOAD':<8} URI"]
    data = []
    for m in models:
        entry = asdict(m)
        for v, v_entry in zip(m.versions, entry["versions"], strict=True):
            status = loads.get(f"{args.tenant}/{m.name}@{v.version}")
            v_entry["load"] = status
            active = "*" if v.version == m.active_version else ""
            outcome = status["outcome"] if status else "-"
            lines.append(
                f"{m.name:<20} {v.version:>7} {active:<6} {v.architecture:<10} {outcome:<8} {v.uri}"
            )
            if status and status["outcome"] == "failed":
                lines.append(f"{'':<20} {'':>7} {'':<6} why: {status['reason']}")
        data.append(entry)
    return _emit(args, data, "\n".join(lines))


def _rendered(reg: Registry) -> dict[str, Any]:
    return render.render_config(reg.tenants(), reg.platform())


def cmd_render(reg: Registry, args: argparse.Namespace) -> int:
    if args.format == "rayservice":
        text = kuberay.render_rayservice(_rendered(reg), reg.platform().kuberay)
        manifests.validate_manifest(yaml.safe_load(text))  # never hand out a bad manifest
    else:
        text = render.to_yaml(_rendered(reg))
    if args.output:
        Path(args.output).write_text(text)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        print(text, end="")
    return 0


def cmd_apply(reg: Registry, args: argparse.Namespace) -> int:
    config = _rendered(reg)
    if args.dry_run:
        print(render.to_yaml(config), end="")
        return 0
    cluster.deploy(config, args.address)
    tenants = config["applications"][0]["deployments"][0]["user_config"]["tenants"]
    print(f"applied {len(tenants)} tenants to {args.address}", file=sys.stderr)
    return 0


def cmd_validate(reg: Registry | None, args: argparse.Namespace) -> int:
    """A Serve config, or a RayService / RayJob / RayCluster manifest (it has a kind)."""
    raw = render.load_yaml(Path(args.file))
    if isinstance(raw, dict) and "kind" in raw:
        kind = manifests.validate_manifest(raw)
        print(f"{args.file}: valid {kind}", file=sys.stderr)
        return 0
    parsed = render.validate_config(raw)
    apps = ", ".join(a.name for a in parsed.applications)
    print(f"{args.file}: valid Serve config ({apps})", file=sys.stderr)
    return 0


def cmd_usage(reg: Registry, args: argparse.Namespace) -> int:
    """Metered usage per tenant, hour and model version, from the usage store."""
    import csv
    import io

    from tenant_registry.metering import usage_table

    month = args.month or datetime.now(UTC).strftime("%Y-%m")
    if not re.fullmatch(r"[0-9]{4}-(0[1-9]|1[0-2])", month):
        raise InvalidInput(f"--month must be YYYY-MM, got {month[:16]!r}")
    if args.tenant is not None:
        reg.tenant(args.tenant)  # an unknown tenant is an error, not an empty report
    table = usage_table(reg.platform(), month, args.tenant)
    fields = ("requests", "images", "compute_s", "rejected", "errors")
    data = [
        {"tenant": t, "hour": h, "model": m, **{f: getattr(c, f) for f in fields}}
        for (t, h, m), c in sorted(table.items())
    ]
    for row in data:
        row["compute_s"] = round(row["compute_s"], 3)
    if args.csv:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=["tenant", "hour", "model", *fields])
        writer.writeheader()
        writer.writerows(data)
        print(out.getvalue(), end="")
        return 0
    totals: dict[str, dict[str, float]] = {}
    for row in data:
        total = totals.setdefault(str(row["tenant"]), dict.fromkeys(fields, 0))
        for f in fields:
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
    return _emit(args, data, "\n".join(lines))


def cmd_status(reg: Registry, args: argparse.Namespace) -> int:
    tenants = reg.tenants()
    data: dict[str, Any] = {
        "registry": str(reg.path),
        "tenants": {
            "total": len(tenants),
            "shared": sum(t.tier == "shared" for t in tenants),
            "dedicated": sum(t.tier == "dedicated" for t in tenants),
            "suspended": sum(t.status == "suspended" for t in tenants),
            "not_servable": [t.id for t in tenants if not render.servable(t)],
        },
    }
    try:
        details = cluster.serve_details(args.address)
        app = details.get("applications", {}).get("yolo")
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
        f"registry {data['registry']}: {data['tenants']['total']} tenants "
        f"({data['tenants']['shared']} shared, {data['tenants']['dedicated']} dedicated, "
        f"{data['tenants']['suspended']} suspended)"
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
    return _emit(args, data, "\n".join(lines))


# ------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tenantctl", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--db",
        type=Path,
        default=None,
        help=f"registry file (default: $TENANTCTL_DB or {default_db_path()})",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def command(
        parent: Any, name: str, handler: Handler, help_text: str, *, read: bool = False
    ) -> Any:
        p = parent.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(handler=handler, audited=not read)
        if read:
            p.add_argument("--json", action="store_true", help="machine-readable output")
        else:
            p.set_defaults(json=False)
        return p

    p = command(sub, "init", cmd_init, "create or upgrade the registry; set platform options")
    p.add_argument("--http-host")
    p.add_argument("--http-port", type=int)
    p.add_argument("--default-model-uri", help="the model every new tenant starts with")

    platform = sub.add_parser("platform", help="platform-wide settings").add_subparsers(
        dest="sub", required=True
    )
    command(platform, "show", cmd_platform_show, "show platform settings", read=True)
    p = command(platform, "set", cmd_platform_set, "change platform settings")
    p.add_argument("--http-host")
    p.add_argument("--http-port", type=int)
    p.add_argument("--router-num-cpus", type=float)
    p.add_argument("--pool-num-cpus", type=float)
    p.add_argument("--pool-num-gpus", type=float)
    p.add_argument("--dedicated-num-cpus", type=float)
    p.add_argument("--default-model-uri")
    p.add_argument("--model-store-uri", help="where `model push` uploads: s3://bucket/prefix")
    p.add_argument("--s3-endpoint-url", help="MinIO/Ceph endpoint ('' for AWS)")
    p.add_argument("--s3-region")
    p.add_argument("--max-models-per-replica", type=int, help="LRU size of loaded models")
    p.add_argument("--ledger-state-path", help="SQLite file of monthly usage (durable storage)")
    p.add_argument("--usage-uri", help="where metered usage is exported: s3://… or file://…")
    p.add_argument("--audit-dir", help="folder of the routers' audit logs (one file per replica)")
    p.add_argument("--max-batch-size", type=int, help="detector batch size (live, no restart)")
    p.add_argument(
        "--batch-wait-timeout-s", type=float, help="how long a batch waits to fill (live)"
    )
    for field, (kind, text) in KUBERAY_FLAGS.items():
        p.add_argument(f"--k8s-{field.replace('_', '-')}", type=kind, help=f"RayService: {text}")

    tenant = sub.add_parser("tenant", help="tenants").add_subparsers(dest="sub", required=True)
    p = command(
        tenant, "create", cmd_tenant_create, "create a tenant (active, with the default model)"
    )
    p.add_argument("tenant")
    p.add_argument("--name")
    p.add_argument("--tier", choices=("shared", "dedicated"), default="shared")
    command(tenant, "list", cmd_tenant_list, "list tenants", read=True)
    for name, handler, text in (
        ("show", cmd_tenant_show, "show one tenant"),
        ("suspend", cmd_tenant_status("suspended"), "suspend a tenant (403 after apply)"),
        ("resume", cmd_tenant_status("active"), "resume a suspended tenant"),
    ):
        p = command(tenant, name, handler, text, read=name == "show")
        p.add_argument("tenant")
    p = command(tenant, "delete", cmd_tenant_delete, "delete a tenant, its keys and models")
    p.add_argument("tenant")
    p.add_argument("--yes", action="store_true", help="confirm")
    p = command(tenant, "set-tier", cmd_tenant_set_tier, "move a tenant between tiers")
    p.add_argument("tenant")
    p.add_argument("tier", choices=("shared", "dedicated"))

    key = sub.add_parser("key", help="API keys").add_subparsers(dest="sub", required=True)
    p = command(key, "issue", cmd_key_issue, "issue a key (printed once)", read=True)
    p.set_defaults(audited=True)
    p.add_argument("tenant")
    p = command(
        key, "list", cmd_key_list, "list a tenant's keys (never the keys themselves)", read=True
    )
    p.add_argument("tenant")
    p.add_argument(
        "--cluster",
        metavar="RAY_ADDRESS",
        help="also show when each key was last used, from the quota ledger ('auto' for local)",
    )
    p = command(key, "revoke", cmd_key_revoke, "revoke a key by its id")
    p.add_argument("key_id")

    p = command(
        sub.add_parser("quota").add_subparsers(dest="sub", required=True),
        "set",
        cmd_quota_set,
        "set quotas ('none' = unlimited)",
    )
    p.add_argument("tenant")
    p.add_argument("--requests-per-s", type=_optional_number(float), default=_UNSET)
    p.add_argument("--burst", type=_optional_number(int), default=_UNSET)
    p.add_argument("--max-concurrent", type=_optional_number(int), default=_UNSET)
    p.add_argument("--monthly-images", type=_optional_number(int), default=_UNSET)

    policy = sub.add_parser("policy", help="detection policy").add_subparsers(
        dest="sub", required=True
    )
    p = command(
        policy,
        "show",
        cmd_policy_show,
        "the operator's policy and the tenant's own saved defaults",
        read=True,
    )
    p.add_argument("tenant")
    p.add_argument("--cluster", help="ask the running ledger for the tenant's saved defaults")
    p = command(policy, "set", cmd_policy_set, "set the detection policy")
    p.add_argument("tenant")
    p.add_argument("--conf", type=float, default=_UNSET)
    p.add_argument("--min-conf", type=float, default=_UNSET)
    p.add_argument("--iou", type=float, default=_UNSET)
    p.add_argument("--max-det", type=int, default=_UNSET)
    p.add_argument("--allowed-classes", default=_UNSET, help="comma-separated names, or 'all'")
    p.add_argument("--max-imgsz", type=int, default=_UNSET)

    p = command(
        sub.add_parser("resources").add_subparsers(dest="sub", required=True),
        "set",
        cmd_resources_set,
        "set a dedicated tenant's reservation and autoscaling",
    )
    p.add_argument("tenant")
    p.add_argument("--num-cpus", type=float, default=_UNSET)
    p.add_argument("--num-gpus", type=float, default=_UNSET, help="0.25, 0.5, 1, 2 …")
    p.add_argument("--min-replicas", type=int, default=_UNSET, help="0 scales to zero")
    p.add_argument("--max-replicas", type=int, default=_UNSET)
    p.add_argument("--target-ongoing-requests", type=float, default=_UNSET)

    model = sub.add_parser("model", help="model versions").add_subparsers(dest="sub", required=True)
    p = command(
        model, "add-version", cmd_model_add_version, "record a model version already in a store"
    )
    p.add_argument("tenant")
    p.add_argument("model")
    p.add_argument("--uri", required=True, help="file://… folder with manifest.json + weights")
    p.add_argument("--version", type=int, help="default: next number")
    p.add_argument("--activate", action="store_true")
    p = command(
        model, "push", cmd_model_push, "check and upload weights as a new version", read=True
    )
    p.add_argument("tenant")
    p.add_argument("model")
    p.add_argument("file", help="converter output folder, or a .safetensors file")
    p.add_argument("--arch", help="architecture for a bare .safetensors, e.g. yolov8n")
    p.add_argument("--class-names", help="comma-separated, for a bare .safetensors")
    p.add_argument("--imgsz", type=int, help="default inference size (default 640)")
    p.add_argument("--activate", action="store_true", help="make it the active version")
    p.add_argument(
        "--trusted-pt",
        action="store_true",
        help="operator only: admit a .pt you vouch for (it is unpickled here)",
    )
    p = command(model, "activate", cmd_model_activate, "make a version active")
    p.add_argument("tenant")
    p.add_argument("model")
    p.add_argument("version", type=int)
    p = command(model, "rollback", cmd_model_rollback, "re-activate the previously active version")
    p.add_argument("tenant")
    p.add_argument("model")
    p = command(model, "list", cmd_model_list, "list a tenant's models and versions", read=True)
    p.add_argument("tenant")
    p.add_argument(
        "--cluster",
        metavar="RAY_ADDRESS",
        help="also show load outcomes reported by the replicas ('auto' for local)",
    )

    jwt_cmd = sub.add_parser("jwt", help="a tenant's JWT identity provider").add_subparsers(
        dest="sub", required=True
    )
    p = command(jwt_cmd, "set", cmd_jwt_set, "accept JWTs from an issuer (public keys only)")
    p.add_argument("tenant")
    p.add_argument("--issuer")
    p.add_argument("--audience")
    p.add_argument("--alg", action="append", choices=("RS256", "ES256", "EdDSA"))
    p.add_argument("--public-key", action="append", help="PEM public key file (repeatable)")
    p.add_argument("--no-public-keys", action="store_true", help="drop the PEM keys")
    p.add_argument(
        "--jwks-url",
        help="the IdP's JWKS document (https; cached, refetched on key rotation); '' removes it",
    )
    p = command(jwt_cmd, "clear", cmd_jwt_clear, "stop accepting JWTs")
    p.add_argument("tenant")
    token = sub.add_parser("token", help="operator-minted tokens").add_subparsers(
        dest="sub", required=True
    )
    p = command(token, "mint", cmd_token_mint, "print a short-lived JWT for a tenant")
    p.add_argument("tenant")
    p.add_argument("--subject", default="operator", help="the sub claim, e.g. the batch job")
    p.add_argument("--ttl", type=int, default=900, help="seconds (max one day)")
    p.add_argument("--alg", choices=("RS256", "ES256", "EdDSA"))
    p.add_argument(
        "--private-key",
        help=f"PEM private key file (or ${SIGNING_KEY_ENV}); it never enters a Serve config",
    )

    p = command(sub, "render", cmd_render, "write the Serve config or RayService of the registry")
    p.add_argument("-o", "--output")
    p.add_argument(
        "--format",
        choices=("serve", "rayservice"),
        default="serve",
        help="a Serve config for `serve deploy` (default) or a KubeRay RayService manifest",
    )
    p = command(sub, "apply", cmd_apply, "render, validate and submit to a running cluster")
    p.add_argument("--address", default=cluster.default_address(), help="Ray dashboard URL")
    p.add_argument("--dry-run", action="store_true", help="print what would be submitted")
    p = command(
        sub,
        "validate",
        cmd_validate,
        "strictly validate a Serve config, RayService, RayJob or RayCluster file",
    )
    p.add_argument("file")
    p = command(sub, "usage", cmd_usage, "metered usage per tenant, hour and model", read=True)
    p.add_argument("--tenant")
    p.add_argument("--month", help="YYYY-MM (default: this month, UTC)")
    p.add_argument("--csv", action="store_true", help="one CSV row per tenant, hour and model")
    p = command(sub, "status", cmd_status, "registry summary and the cluster's view", read=True)
    p.add_argument("--address", default=cluster.default_address())
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    status, outcome = 0, "ok"
    try:
        if args.command == "validate":  # a file check: needs no registry
            return cmd_validate(None, args)
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
