"""``tenantctl init`` and ``tenantctl platform …``: platform-wide settings.

``platform set`` is a table: each flag names the settings field it changes, so a new
setting is one row here.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any, NamedTuple

from tenant_registry.cli.common import Command, arg, emit
from tenant_registry.errors import InvalidInput
from tenant_registry.migrations import LATEST_VERSION
from tenant_registry.platform import PlatformSettings
from tenant_registry.store import Registry


def switch(text: str) -> bool:
    """``on`` / ``off`` (or true/false, yes/no, 1/0) for a yes-or-no setting."""
    value = text.strip().lower()
    if value in ("on", "true", "yes", "1"):
        return True
    if value in ("off", "false", "no", "0"):
        return False
    raise argparse.ArgumentTypeError(f"{text[:16]!r}: say on or off")


class Setting(NamedTuple):
    """One ``platform set`` flag: the field it changes and how."""

    path: tuple[str, ...]  # where in PlatformSettings
    kind: Callable[[str], Any] = str
    help: str | None = None
    empty_unsets: bool = False  # '' means "back to the default (None)"


PLATFORM_FLAGS: dict[str, Setting] = {
    "http_host": Setting(("http_host",)),
    "http_port": Setting(("http_port",), int),
    "router_num_cpus": Setting(("router", "resources", "num_cpus"), float),
    "pool_num_cpus": Setting(("shared_pool", "resources", "num_cpus"), float),
    "pool_num_gpus": Setting(("shared_pool", "resources", "num_gpus"), float),
    "dedicated_num_cpus": Setting(("dedicated_resources", "num_cpus"), float),
    "default_model_uri": Setting(("default_model_uri",)),
    "model_store_uri": Setting(
        ("model_store_uri",), help="where `model push` uploads: s3://bucket/prefix"
    ),
    "s3_endpoint_url": Setting(
        ("store", "s3_endpoint_url"), help="MinIO/Ceph endpoint ('' for AWS)", empty_unsets=True
    ),
    "s3_region": Setting(("store", "s3_region"), empty_unsets=True),
    "max_models_per_replica": Setting(
        ("max_models_per_replica",), int, "LRU size of loaded models"
    ),
    "model_bytes_per_replica": Setting(
        ("model_bytes_per_replica",), int, "bytes of model networks a detector replica holds"
    ),
    "ledger_state_path": Setting(
        ("ledger", "state_path"), help="SQLite file of monthly usage (durable storage)"
    ),
    "usage_uri": Setting(
        ("ledger", "usage_uri"), help="where metered usage is exported: s3://… or file://…"
    ),
    "tenant_directory": Setting(
        ("tenant_directory",),
        switch,
        "on: publish tenants to the tenant directory, not the Serve config (docs/control-plane.md)",
    ),
    "audit_dir": Setting(
        ("audit_dir",), help="folder of the routers' audit logs (one file per replica)"
    ),
    "max_batch_size": Setting(
        ("batching", "max_batch_size"), int, "detector batch size (live, no restart)"
    ),
    "batch_wait_timeout_s": Setting(
        ("batching", "batch_wait_timeout_s"), float, "how long a batch waits to fill (live)"
    ),
}
# `platform set --k8s-<field>`: the KubeRay settings an operator changes most.
KUBERAY_FLAGS: dict[str, tuple[type, str]] = {
    "name": (str, "the RayService's name"),
    "image": (str, "container image (Ray, CUDA, this project; see configs/Dockerfile)"),
    "s3_secret": (str, "Secret holding access-key-id and secret-access-key"),
    "gpus_per_worker": (int, "GPUs per GPU worker pod"),
    "gpu_workers_max": (int, "most GPU worker pods the autoscaler may start"),
    "cpu_workers_max": (int, "most CPU worker pods the autoscaler may start"),
    "operator_namespace": (str, "the KubeRay operator's namespace (let into the dashboard)"),
    "metrics_namespace": (str, "Prometheus's namespace (let into the metrics port)"),
}
for _field, (_kind, _text) in KUBERAY_FLAGS.items():
    PLATFORM_FLAGS[f"k8s_{_field}"] = Setting(("kuberay", _field), _kind, f"RayService: {_text}")


def init(reg: Registry, args: argparse.Namespace) -> int:
    settings = reg.platform()
    updates = {
        k: getattr(args, k)
        for k in ("http_host", "http_port", "default_model_uri")
        if getattr(args, k) is not None
    }
    reg.set_platform(settings.model_validate({**settings.model_dump(), **updates}))
    print(f"registry ready at {reg.path} (schema v{LATEST_VERSION})", file=sys.stderr)
    return 0


def show(reg: Registry, args: argparse.Namespace) -> int:
    settings = reg.platform()
    return emit(args, settings, settings.model_dump_json(indent=2))


def set_platform(reg: Registry, args: argparse.Namespace) -> int:
    current: dict[str, Any] = reg.platform().model_dump()
    for flag, setting in PLATFORM_FLAGS.items():
        value = getattr(args, flag)
        if value is None:
            continue
        parent = current
        for key in setting.path[:-1]:
            parent = parent[key]
        parent[setting.path[-1]] = (value or None) if setting.empty_unsets else value
    try:
        settings = PlatformSettings.model_validate(current)
    except ValueError as exc:
        raise InvalidInput(f"invalid platform settings: {exc}") from None
    reg.set_platform(settings)
    return 0


COMMANDS = [
    Command(
        ("init",),
        init,
        "create or upgrade the registry; set platform options",
        [
            arg("--http-host"),
            arg("--http-port", type=int),
            arg("--default-model-uri", help="the model every new tenant starts with"),
        ],
    ),
    Command(("platform", "show"), show, "show platform settings", read=True),
    Command(
        ("platform", "set"),
        set_platform,
        "change platform settings",
        [
            arg(f"--{name.replace('_', '-')}", type=setting.kind, help=setting.help)
            for name, setting in PLATFORM_FLAGS.items()
        ],
    ),
]
