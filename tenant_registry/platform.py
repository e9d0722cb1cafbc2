"""Platform-wide settings kept in the registry: what every rendered config shares."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from serve_app.config import (
    AutoscalingSpec,
    BatchSettings,
    DirectorySpec,
    LedgerSpec,
    ResourceSpec,
    RouterSpec,
    SharedPoolSpec,
    StoreSettings,
)
from serve_app.constants import AUDIT_DIR, DIRECTORY_FOLDER, MODEL_NAME_PATTERN
from serve_app.wire import StrictModel
from tenant_registry.kuberay import KubeRaySettings


class PlatformSettings(StrictModel):
    """Set by ``tenantctl init`` / ``tenantctl platform set``."""

    http_host: str = "127.0.0.1"
    http_port: int = Field(8000, ge=1, le=65535)
    proxy_location: Literal["HeadOnly", "EveryNode"] = "HeadOnly"
    router: RouterSpec = RouterSpec(resources=ResourceSpec(num_cpus=0.1))
    shared_pool: SharedPoolSpec = SharedPoolSpec(resources=ResourceSpec(num_cpus=0.25))
    dedicated_resources: ResourceSpec = Field(
        ResourceSpec(num_cpus=0.25), description="What a new dedicated tenant reserves."
    )
    dedicated_autoscaling: AutoscalingSpec = AutoscalingSpec()
    default_model_name: str = Field("shapes", pattern=MODEL_NAME_PATTERN)
    default_model_uri: str = Field(
        "file://models/demo/shapes/1", description="Every new tenant starts with this model."
    )
    model_store_uri: str = Field(
        "file://var/models",
        description="Where `model push` uploads: s3://bucket/prefix or file://folder.",
        pattern=r"^(s3|file)://.+",
    )
    store: StoreSettings = StoreSettings()
    max_models_per_replica: int | None = Field(None, ge=1)
    model_bytes_per_replica: int | None = Field(
        None,
        ge=1024 * 1024,
        description="Bytes of model networks one detector replica holds (least recently "
        "used go); None: half the replica's memory reservation, else 1 GiB.",
    )
    ledger: LedgerSpec = LedgerSpec()
    batching: BatchSettings = BatchSettings()
    audit_dir: str = Field(
        AUDIT_DIR, min_length=1, description="Folder of the routers' audit logs."
    )
    tenant_directory: bool = Field(
        True,
        description="Publish tenants to the tenant directory (<model_store_uri>/_directory) "
        "and leave them out of the Serve config: one tenant's change is one file, not a "
        "redeploy (docs/control-plane.md).",
    )
    kuberay: KubeRaySettings = Field(
        default_factory=KubeRaySettings,
        description="The KubeRay cluster of `tenantctl render --format rayservice`.",
    )


def directory_spec(platform: PlatformSettings) -> DirectorySpec | None:
    """Where the routers and the pool follow the tenant directory; None when it is off."""
    if not platform.tenant_directory:
        return None
    uri = f"{platform.model_store_uri.rstrip('/')}/{DIRECTORY_FOLDER}"
    return DirectorySpec(uri=uri, store=platform.store)
