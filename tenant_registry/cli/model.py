"""``tenantctl model …``: tenants' model versions: record, push, activate, roll back, list."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from serve_app.models.versions import VersionRecord
from tenant_registry import cluster, uploads
from tenant_registry.cli.common import CLUSTER_HELP, TENANT, Command, arg, emit, version_from_uri
from tenant_registry.store import Registry

MODEL = arg("model")


def add_version(reg: Registry, args: argparse.Namespace) -> int:
    reg.tenant(args.tenant)
    version = version_from_uri(args.uri, args.version or reg.next_version(args.tenant, args.model))
    model = reg.add_model_version(args.tenant, args.model, version, activate=args.activate)
    print(
        f"{args.tenant}/{args.model}@{version.version} recorded ({version.architecture}); "
        f"active version: {model.active_version}",
        file=sys.stderr,
    )
    return 0


def push(reg: Registry, args: argparse.Namespace) -> int:
    from tenant_registry import push as pushing

    names = [n.strip() for n in args.class_names.split(",")] if args.class_names else None
    version, manifest = pushing.push_version(
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
    hint = f"; activate with `tenantctl model activate {args.tenant} {args.model} {number}`"
    print(
        f"pushed {args.tenant}/{args.model}@{number} to {uri} ({manifest.architecture}, "
        f"{len(manifest.class_names)} classes); active version: {model.active_version}"
        + ("" if args.activate else hint),
        file=sys.stderr,
    )
    if args.json:
        print(json.dumps({"version": number, "uri": uri, "sha256": manifest.sha256}))
    return 0


def activate(reg: Registry, args: argparse.Namespace) -> int:
    model = reg.activate(args.tenant, args.model, args.version)
    print(f"{args.tenant}/{args.model} active version: {model.active_version}", file=sys.stderr)
    return 0


def rollback(reg: Registry, args: argparse.Namespace) -> int:
    model = reg.rollback(args.tenant, args.model)
    print(f"{args.tenant}/{args.model} rolled back to {model.active_version}", file=sys.stderr)
    return 0


def pause(reg: Registry, args: argparse.Namespace) -> int:
    uploads.pause(reg, args.tenant, args.model, not args.resume)
    state = "resumed" if args.resume else "paused"
    print(f"{args.tenant}/{args.model}: rollouts {state}; publish with `tenantctl apply`",
          file=sys.stderr)  # fmt: skip
    return 0


def _upload_lines(name: str, records: list[VersionRecord]) -> list[str]:
    lines = []
    for r in records:
        rollout = r.rollout
        gate = "-" if rollout is None else f"{rollout.mode} {rollout.percent}% {rollout.state}"
        agreement = "" if rollout is None or rollout.agreement is None else (
            f" agreement {rollout.agreement:.3f} over {rollout.images}")  # fmt: skip
        lines.append(f"{name:<20} {r.version:>7} {'':<6} {'upload':<10} {r.status:<10} "
                     f"{gate}{agreement}")  # fmt: skip
        reason = r.reason or (rollout.reason if rollout else None)
        if reason:
            lines.append(f"{'':<20} {'':>7} {'':<6} why: {reason}")
    return lines


def list_models(reg: Registry, args: argparse.Namespace) -> int:
    uploaded = uploads.sync(reg, args.tenant)
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
        if m.rollouts_paused:
            lines.append(f"{m.name:<20} rollouts paused by the operator")
        lines += _upload_lines(m.name, uploaded.get(m.name, []))
        entry["uploads"] = [r.model_dump(mode="json") for r in uploaded.get(m.name, [])]
        data.append(entry)
    return emit(args, data, "\n".join(lines))


COMMANDS = [
    Command(
        ("model", "add-version"),
        add_version,
        "record a model version already in a store",
        [
            TENANT,
            MODEL,
            arg("--uri", required=True, help="file://… folder with manifest.json + weights"),
            arg("--version", type=int, help="default: next number"),
            arg("--activate", action="store_true"),
        ],
    ),
    Command(
        ("model", "push"),
        push,
        "check and upload weights as a new version",
        [
            TENANT,
            MODEL,
            arg("file", help="converter output folder, or a .safetensors file"),
            arg("--arch", help="architecture for a bare .safetensors, e.g. yolov8n"),
            arg("--class-names", help="comma-separated, for a bare .safetensors"),
            arg("--imgsz", type=int, help="default inference size (default 640)"),
            arg("--activate", action="store_true", help="make it the active version"),
            arg(
                "--trusted-pt",
                action="store_true",
                help="operator only: admit a .pt you vouch for (it is unpickled here)",
            ),
        ],
        read=True,  # prints --json, and is audited: it uploads
        audited=True,
    ),
    Command(
        ("model", "activate"),
        activate,
        "make a version active",
        [TENANT, MODEL, arg("version", type=int)],
    ),
    Command(
        ("model", "rollback"),
        rollback,
        "re-activate the previously active version",
        [TENANT, MODEL],
    ),
    Command(
        ("model", "pause"),
        pause,
        "stop sending traffic to a model's rollouts (tenants' own versions)",
        [TENANT, MODEL, arg("--resume", action="store_true", help="let them run again")],
    ),
    Command(
        ("model", "list"),
        list_models,
        "list a tenant's models and versions",
        [
            TENANT,
            arg(
                "--cluster",
                metavar="RAY_ADDRESS",
                help=f"also show load outcomes reported by the replicas; {CLUSTER_HELP}",
            ),
        ],
        read=True,
    ),
]
