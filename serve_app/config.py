"""Typed configuration at the edges of the application.

Three models cross into Ray Serve:

* ``AppArgs`` — the builder's ``args``: which dedicated tenant deployments exist and
  what they reserve. Changing it changes the application's code version, so every
  replica rolls (a planned redeploy).
* ``RouterConfig`` — the Router's ``user_config``: the tenant table (key hashes,
  models, detection policy). Changing it only calls ``reconfigure()``.
* ``DetectorConfig`` — each Detector's ``user_config``: multiplexed model id ->
  store URI, so a new model version is a ``reconfigure()`` too.

All are ``extra="forbid"``: Ray Serve silently ignores unknown keys in config
files, so a typo must fail here instead.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from serve_app.constants import (
    AUDIT_DIR,
    BATCH_MAX_SIZE,
    BATCH_WAIT_TIMEOUT_S,
    DIRECTORY_POLL_S,
    KEY_ID_PATTERN,
    MAX_BATCH_SIZE,
    MAX_DETECTIONS,
    MAX_IMGSZ_PX,
    MIN_IMGSZ_PX,
    MODEL_NAME_PATTERN,
    SHA256_HEX_PATTERN,
    SHARED_POOL_DEPLOYMENT,
    TENANT_DEPLOYMENT_PREFIX,
    TENANT_ID_PATTERN,
)
from serve_app.store_settings import StoreSettings
from serve_app.uploads_spec import UploadsSpec
from serve_app.wire import MODEL_ID_RE, JwtSettings, StrictModel

__all__ = ["StoreSettings", "UploadsSpec"]  # re-exported: the app's config in one place


def deployment_name(tenant_id: str) -> str:
    """Name of a tenant's dedicated Detector deployment."""
    return f"{TENANT_DEPLOYMENT_PREFIX}{tenant_id}"


def serving_deployment(tenant_id: str, tier: str) -> str:
    """The deployment that runs a tenant's models: its own, or the shared pool."""
    return SHARED_POOL_DEPLOYMENT if tier == "shared" else deployment_name(tenant_id)


# ---------------------------------------------------------------- builder args


class AutoscalingSpec(StrictModel):
    """Subset of Serve's ``autoscaling_config`` that operators set per tenant."""

    min_replicas: int = Field(1, ge=0, description="0 lets an idle tenant scale to zero.")
    max_replicas: int = Field(1, ge=1)
    target_ongoing_requests: float = Field(2.0, gt=0)
    upscale_delay_s: float = Field(5.0, ge=0)
    downscale_delay_s: float = Field(300.0, ge=0)

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError("min_replicas must not exceed max_replicas")
        return self


class ResourceSpec(StrictModel):
    """What one replica reserves. Ray reserves GPU fractions; it does not isolate memory."""

    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    memory_mb: int | None = Field(None, ge=64)

    @field_validator("num_gpus")
    @classmethod
    def _gpu_share(cls, value: float) -> float:
        if value > 1 and value != int(value):
            raise ValueError("num_gpus above 1 must be a whole number of GPUs")
        return value

    def ray_actor_options(self) -> dict[str, float | int]:
        options: dict[str, float | int] = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        if self.memory_mb is not None:
            options["memory"] = self.memory_mb * 1024 * 1024
        return options


_SURGE = Field(
    100,
    ge=0,
    le=100,
    description="Extra replicas during a rolling restart, % of target: with 100, old replicas "
    "keep serving until their replacements are ready (they wait if the cluster lacks room).",
)


class DeploymentSpec(StrictModel):
    """Resources and scaling of one deployment."""

    resources: ResourceSpec = ResourceSpec()
    autoscaling: AutoscalingSpec = AutoscalingSpec()
    max_ongoing_requests: int = Field(16, ge=1)
    max_surge_percent: int = _SURGE
    max_replicas_per_node: int | None = Field(
        None,
        ge=1,
        description="At most this many of the deployment's replicas on one node (1 spreads "
        "them, so losing a node loses one replica); None lets Ray pack them.",
    )


class DedicatedTenant(DeploymentSpec):
    """A tenant with its own ``tenant-<id>`` Detector deployment."""

    id: str = Field(pattern=TENANT_ID_PATTERN)


class SharedPoolSpec(DeploymentSpec):
    """The ``shared-pool`` Detector that multiplexes every shared-tier tenant's models."""

    resources: ResourceSpec = ResourceSpec(num_cpus=0.5)


class DirectorySpec(StrictModel):
    """Where the tenant directory is (serve_app/directory.py) and how often to read it."""

    uri: str = Field(pattern=r"^(s3|file)://.+", description="The directory's folder.")
    store: StoreSettings = StoreSettings()
    poll_s: float = Field(DIRECTORY_POLL_S, gt=0, le=60)


class LedgerSpec(StrictModel):
    """The ``quota-ledger`` replica, its warm standby, and where they keep monthly usage."""

    state_path: str = Field(
        "var/ledger.db",
        description="SQLite file for monthly usage; relative paths resolve against the "
        "project root (YOLOSERVE_MODEL_ROOT). Put it on durable storage in production.",
    )
    usage_uri: str = Field(
        "file://var/usage",
        pattern=r"^(s3|file)://.+",
        description="Where metered usage is exported as JSON lines (file:// or s3://).",
    )
    store: StoreSettings = Field(
        default_factory=StoreSettings, description="S3 endpoint for usage_uri."
    )
    resources: ResourceSpec = ResourceSpec(num_cpus=0.1)
    max_surge_percent: int = _SURGE
    standby: bool = Field(
        True,
        description="Run a second ledger replica (``quota-ledger-standby``, same resources) "
        "that takes over the moment the leader's process dies (docs/reliability.md). It must "
        "see the same state_path file; one that sees another file never takes over.",
    )


class RouterSpec(DeploymentSpec):
    resources: ResourceSpec = ResourceSpec(num_cpus=0.25)
    max_ongoing_requests: int = Field(64, ge=1)


class AppArgs(StrictModel):
    """``args`` of ``serve_app.app:build_app``.

    Only what needs its own deployment is here: the dedicated tenants. Shared-tier
    tenants live in the router's and pool's ``user_config``, so onboarding them
    changes no args and restarts nothing.
    """

    tenants: list[DedicatedTenant] = Field(default_factory=list)
    shared_pool: SharedPoolSpec = SharedPoolSpec()
    router: RouterSpec = RouterSpec()
    ledger: LedgerSpec = LedgerSpec()
    uploads: UploadsSpec = UploadsSpec()

    @field_validator("tenants")
    @classmethod
    def _unique(cls, value: list[DedicatedTenant]) -> list[DedicatedTenant]:
        ids = [t.id for t in value]
        if len(ids) != len(set(ids)):
            raise ValueError("tenant ids must be unique")
        return value


# ------------------------------------------------------------ router user_config


class DetectionPolicy(StrictModel):
    """Bounds a tenant's per-request detection parameters are clamped into."""

    conf: float = Field(0.25, ge=0, le=1, description="Default confidence threshold.")
    min_conf: float = Field(0.01, ge=0, le=1, description="Lowest conf a request may ask for.")
    iou: float = Field(0.7, gt=0, le=1, description="Default NMS IoU threshold.")
    max_det: int = Field(300, ge=1, le=MAX_DETECTIONS)
    allowed_classes: list[str] | None = Field(None, description="None allows every class.")
    max_imgsz: int = Field(1280, ge=MIN_IMGSZ_PX, le=MAX_IMGSZ_PX)

    @model_validator(mode="after")
    def _conf_bounds(self) -> DetectionPolicy:
        if self.min_conf > self.conf:
            raise ValueError("min_conf must not exceed the default conf")
        return self


class TenantModel(StrictModel):
    name: str = Field(pattern=MODEL_NAME_PATTERN)
    versions: list[int] = Field(min_length=1)
    active_version: int
    fallback_version: int | None = Field(
        None, description="Serves when the active version cannot be loaded (the previous one)."
    )
    rollouts_paused: bool = Field(False, description="The tenant's rollouts get no traffic.")

    @model_validator(mode="after")
    def _active_known(self) -> TenantModel:
        if self.active_version not in self.versions:
            raise ValueError(f"active_version {self.active_version} is not in versions")
        if self.fallback_version is not None and self.fallback_version not in self.versions:
            raise ValueError(f"fallback_version {self.fallback_version} is not in versions")
        return self


class Quota(StrictModel):
    """Limits of one tenant; ``None`` means unlimited. Enforced by the QuotaLedger."""

    requests_per_s: float | None = Field(None, gt=0)
    burst: int | None = Field(None, ge=1)
    max_concurrent: int | None = Field(None, ge=1)
    monthly_images: int | None = Field(None, ge=0)

    @property
    def unlimited(self) -> bool:
        """No rate, concurrency or monthly limit: admitting needs nobody's permission,
        only metering (a burst without a rate limits nothing)."""
        return (
            self.requests_per_s is None
            and self.max_concurrent is None
            and (self.monthly_images is None)
        )

    @property
    def burst_size(self) -> int:
        """Requests that may arrive at once: ``burst``, else the rate rounded up (2.5/s
        allows 3). The ledger and the routers' allowances both use this one rule."""
        if self.burst is not None:
            return self.burst
        return max(1, math.ceil(self.requests_per_s or 1))


Tier = Literal["shared", "dedicated"]


class ApiKeyRef(StrictModel):
    """A key as the router knows it: the id (for logs, audit and last-used time) and the
    sha256 of the secret. The secret itself never enters a config."""

    id: str = Field(pattern=KEY_ID_PATTERN)
    sha256: str = Field(pattern=SHA256_HEX_PATTERN)


class TenantEntry(StrictModel):
    id: str = Field(pattern=TENANT_ID_PATTERN)
    name: str = Field(min_length=1, max_length=128)
    tier: Tier = "dedicated"
    status: Literal["active", "suspended"] = "active"
    quota: Quota = Quota()
    api_keys: list[ApiKeyRef] = Field(
        default_factory=list, description="The tenant's unrevoked keys, by id and sha256."
    )
    jwt: JwtSettings | None = Field(None, description="Identity provider for JWT bearer tokens.")
    models: list[TenantModel] = Field(min_length=1)
    default_model: str
    policy: DetectionPolicy = DetectionPolicy()

    @model_validator(mode="after")
    def _default_known(self) -> TenantEntry:
        if self.default_model not in {m.name for m in self.models}:
            raise ValueError(f"default_model {self.default_model!r} is not one of the models")
        return self

    def model(self, name: str) -> TenantModel | None:
        return next((m for m in self.models if m.name == name), None)


class RouterConfig(StrictModel):
    """The Router's ``user_config``: the tenant table, or where to follow it from."""

    tenants: list[TenantEntry] = Field(default_factory=list)
    directory: DirectorySpec | None = Field(None, description="Also follow this (listed win).")
    audit_dir: str = Field(
        AUDIT_DIR,
        min_length=1,
        description="Folder of the router replicas' audit logs (one JSON-lines file each); "
        "relative paths resolve against the project root.",
    )

    @model_validator(mode="after")
    def _unique(self) -> RouterConfig:
        ids = [t.id for t in self.tenants]
        if len(ids) != len(set(ids)):
            raise ValueError("tenant ids must be unique")
        hashes = [k.sha256 for t in self.tenants for k in t.api_keys]
        if len(hashes) != len(set(hashes)):
            raise ValueError("an API key hash may belong to one tenant only")
        key_ids = [k.id for t in self.tenants for k in t.api_keys]
        if len(key_ids) != len(set(key_ids)):
            raise ValueError("API key ids must be unique")
        issuers = [t.jwt.issuer for t in self.tenants if t.jwt is not None]
        if len(issuers) != len(set(issuers)):
            raise ValueError("a JWT issuer may belong to one tenant only")
        return self


# ---------------------------------------------------------- detector user_config


class BatchSettings(StrictModel):
    """How a detector batches concurrent requests for one model (``batcher.Batcher``)."""

    max_batch_size: int = Field(BATCH_MAX_SIZE, ge=1, le=MAX_BATCH_SIZE)
    batch_wait_timeout_s: float = Field(BATCH_WAIT_TIMEOUT_S, ge=0.0, le=1.0)


class ModelSource(StrictModel):
    """Where a model version's files are, and (rendered from the registry) which weights
    they must be: the sha256 recorded when the version was pushed. The manifest stored
    beside the weights only describes them; it does not say which weights they are."""

    uri: str
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")


class DetectorConfig(StrictModel):
    """A Detector's ``user_config``: which model ids it may load, and from where. A
    hand-written config may give a bare URI (then the manifest's digest is checked)."""

    models: dict[str, ModelSource] = Field(default_factory=dict)
    directory: DirectorySpec | None = Field(None, description="For ids not in models.")
    store: StoreSettings = StoreSettings()
    max_models_per_replica: int | None = Field(
        None, ge=1, description="Most model ids held; None keeps the built-in default."
    )
    model_bytes_per_replica: int | None = Field(
        None, ge=1024 * 1024, description="Bytes of networks held; None: the reservation's half"
    )
    preload: list[str] = Field(
        default_factory=list,
        description="Model ids loaded in reconfigure(), before a new replica takes traffic.",
    )
    active: list[str] = Field(
        default_factory=list,
        description="Model ids that are their model's active version; the others are "
        "pinned versions (a request's version=), limited by pinned_per_tenant.",
    )
    pinned_per_tenant: int | None = Field(
        None,
        ge=1,
        description="Most pinned versions of one tenant a replica holds at a time: loading "
        "another unloads that tenant's oldest first (the shared pool); None: no limit.",
    )
    batching: BatchSettings = Field(
        default_factory=BatchSettings,
        description="Dynamic batching; applied by reconfigure(), no restart.",
    )

    @model_validator(mode="after")
    def _preload_known(self) -> DetectorConfig:
        for field_name in ("preload", "active"):
            unknown = [m for m in getattr(self, field_name) if m not in self.models]
            if unknown:
                raise ValueError(f"{field_name} names models not in models: {', '.join(unknown)}")
        return self

    @field_validator("models", mode="before")
    @classmethod
    def _bare_uris(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: {"uri": v} if isinstance(v, str) else v for k, v in value.items()}
        return value

    @field_validator("models")
    @classmethod
    def _ids(cls, value: dict[str, ModelSource]) -> dict[str, ModelSource]:
        for key, source in value.items():
            if not MODEL_ID_RE.fullmatch(key):
                raise ValueError(f"{key!r} is not a model id <tenant>/<model>@<version>")
            if not source.uri.startswith(("file://", "s3://")):
                raise ValueError(f"{source.uri!r}: store URIs start with file:// or s3://")
        return value
