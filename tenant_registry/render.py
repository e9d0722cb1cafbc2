"""Registry -> Serve config file, built from the data plane's own config models.

The output is deterministic (tenants, models and versions sorted) so an unchanged
registry renders an identical file, and it is validated twice before anyone sees
it: by Ray Serve's ``ServeDeploySchema`` and by our strict ``ServeConfigFile``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from serve_app.config import (
    ApiKeyRef,
    AppArgs,
    DedicatedTenant,
    DetectorConfig,
    ModelSource,
    RouterConfig,
    TenantEntry,
    TenantModel,
    Tier,
    deployment_name,
    serving_deployment,
)
from serve_app.config_file import ServeConfigFile
from serve_app.constants import (
    APP_NAME,
    PRELOAD_MODELS,
    ROUTER_DEPLOYMENT,
    SHARED_PINNED_VERSIONS,
    SHARED_POOL_DEPLOYMENT,
    ULTRALYTICS_ENV,
)
from serve_app.uploads_spec import UploadsSpec
from serve_app.wire import model_id
from tenant_registry.errors import InvalidInput
from tenant_registry.platform import PlatformSettings, directory_spec
from tenant_registry.records import Tenant
from tenant_registry.store import Registry

HEADER = (
    "# Rendered by `tenantctl render` from the tenant registry. Do not edit by hand:\n"
    "# change the registry with tenantctl and render (or apply) again.\n"
)


def servable(tenant: Tenant) -> bool:
    """Whether the tenant has a model with an active version (else nothing can answer it)."""
    return any(m.active_version is not None for m in tenant.models)


def tenant_entry(tenant: Tenant) -> TenantEntry:
    """What the routers know of ``tenant`` (a servable one: see ``servable``)."""
    models = [
        TenantModel(
            name=m.name,
            versions=[v.version for v in m.versions],
            active_version=m.active_version,
            fallback_version=m.previous_version,
            rollouts_paused=m.rollouts_paused,
        )
        for m in tenant.models
        if m.active_version is not None
    ]
    default = next((m.name for m in tenant.models if m.is_default and m.active_version), None)
    return TenantEntry(
        id=tenant.id,
        name=tenant.name,
        tier=tenant.tier,
        status=tenant.status,  # type: ignore[arg-type]
        quota=tenant.quota,
        api_keys=[ApiKeyRef(id=k.key_id, sha256=k.sha256) for k in tenant.active_keys()],
        models=models,
        default_model=default or models[0].name,
        policy=tenant.policy,
        jwt=tenant.jwt,
    )


def _dump(config: RouterConfig | DetectorConfig) -> dict[str, Any]:
    """A ``user_config`` as JSON; ``directory`` only where it is on (configs rendered
    without it stay as they were)."""
    return config.model_dump(
        mode="json", exclude={"directory"} if config.directory is None else None
    )


def render_registry(reg: Registry) -> dict[str, Any]:
    """The Serve config of the registry. With the tenant directory on, only dedicated
    tenants are read: they are the only ones the config names (a deployment each), so a
    change to any other tenant neither costs nor changes a render."""
    platform = reg.platform()
    tier: Tier | None = "dedicated" if platform.tenant_directory else None
    return render_config(reg.tenants(tier), platform)


def render_config(tenants: list[Tenant], platform: PlatformSettings) -> dict[str, Any]:
    """The Serve config (as a dict) for ``tenants`` on ``platform``."""
    served = sorted((t for t in tenants if servable(t)), key=lambda t: t.id)
    args = AppArgs(
        tenants=[
            DedicatedTenant(id=t.id, resources=t.resources, autoscaling=t.autoscaling)
            for t in served
            if t.tier == "dedicated"
        ],
        shared_pool=platform.shared_pool,
        router=platform.router,
        ledger=platform.ledger.model_copy(update={"store": platform.store}),
        # tenants' own versions sit beside the operator's, under an uploads/ prefix
        uploads=UploadsSpec(
            uri=f"{platform.model_store_uri.rstrip('/')}/uploads", store=platform.store
        ),
    )
    catalogs: dict[str, dict[str, ModelSource]] = {SHARED_POOL_DEPLOYMENT: {}}
    for tenant in served:
        catalog = catalogs.setdefault(serving_deployment(tenant.id, tenant.tier), {})
        for model in tenant.models:
            for version in model.versions:
                mid = model_id(tenant.id, model.name, version.version)
                catalog[mid] = ModelSource(uri=version.uri, sha256=version.sha256)
    entries = [tenant_entry(t) for t in served]
    actives: dict[str, list[str]] = {}
    for entry in entries:
        for tenant_model in entry.models:
            actives.setdefault(serving_deployment(entry.id, entry.tier), []).append(
                model_id(entry.id, tenant_model.name, tenant_model.active_version)
            )
    preloads: dict[str, list[str]] = {}
    for entry in entries:  # each tenant's default model, warm before traffic arrives
        default = entry.model(entry.default_model)
        assert default is not None
        target = serving_deployment(entry.id, entry.tier)
        preloads.setdefault(target, []).append(
            model_id(entry.id, default.name, default.active_version)
        )
    # The pool holds only so many models per replica: preloading more would evict them.
    preloads[SHARED_POOL_DEPLOYMENT] = preloads.get(SHARED_POOL_DEPLOYMENT, [])[:PRELOAD_MODELS]
    # With the tenant directory, routers and the pool follow it: the config lists no
    # tenant (dedicated tenants keep their deployment and its own catalog).
    directory = directory_spec(platform)
    if directory is not None:
        entries, catalogs[SHARED_POOL_DEPLOYMENT] = [], {}
        actives[SHARED_POOL_DEPLOYMENT] = preloads[SHARED_POOL_DEPLOYMENT] = []
    router = RouterConfig(tenants=entries, audit_dir=platform.audit_dir, directory=directory)
    deployments: list[dict[str, Any]] = [{"name": ROUTER_DEPLOYMENT, "user_config": _dump(router)}]
    specs = {SHARED_POOL_DEPLOYMENT: args.shared_pool.max_ongoing_requests}
    specs.update({deployment_name(t.id): t.max_ongoing_requests for t in args.tenants})
    for name, max_ongoing in specs.items():
        models = dict(sorted(catalogs.get(name, {}).items()))
        detector = DetectorConfig(
            models=models,
            preload=preloads.get(name, []),
            # Pinned versions share the pool by tenant (pool_share.evictions);
            # a dedicated tenant's replicas are its own.
            active=sorted(actives.get(name, [])) if name == SHARED_POOL_DEPLOYMENT else [],
            directory=directory if name == SHARED_POOL_DEPLOYMENT else None,
            pinned_per_tenant=(SHARED_PINNED_VERSIONS if name == SHARED_POOL_DEPLOYMENT else None),
            store=platform.store,
            max_models_per_replica=platform.max_models_per_replica,
            model_bytes_per_replica=platform.model_bytes_per_replica,
            batching=platform.batching,
        )
        deployments.append(
            {
                "name": name,
                "user_config": _dump(detector),
                # A batch only fills if a replica may hold that many requests; both
                # settings change without restarting a replica.
                "max_ongoing_requests": max(max_ongoing, platform.batching.max_batch_size),
            }
        )
    config = {
        "proxy_location": platform.proxy_location,
        "http_options": {"host": platform.http_host, "port": platform.http_port},
        "applications": [
            {
                "name": APP_NAME,
                "route_prefix": "/",
                "import_path": "serve_app.app:build_app",
                "runtime_env": {"env_vars": dict(ULTRALYTICS_ENV)},
                "args": args.model_dump(mode="json"),
                "deployments": deployments,
            }
        ],
    }
    validate_config(config)
    return config


def validate_config(raw: Any) -> ServeConfigFile:
    """Validate a Serve config as Ray Serve would, then strictly as this project does.

    Raises:
        InvalidInput: With every problem found, each with its location in the file.
    """
    from ray.serve.schema import ServeDeploySchema

    if not isinstance(raw, dict):
        raise InvalidInput("a Serve config file must be a YAML mapping with 'applications'")
    for schema, label in ((ServeDeploySchema, "Ray Serve"), (ServeConfigFile, "strict check")):
        try:
            parsed = schema.model_validate(raw)
        except ValidationError as exc:
            problems = "\n".join(
                f"  {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
            raise InvalidInput(f"config rejected by {label}:\n{problems}") from None
    assert isinstance(parsed, ServeConfigFile)
    return parsed


def to_yaml(config: dict[str, Any]) -> str:
    return HEADER + yaml.safe_dump(config, sort_keys=False, default_flow_style=False)


def load_yaml_documents(path: Path) -> list[Any]:
    """Every document of a YAML file (``---`` separated); at least one."""
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidInput(f"cannot read {path}: {exc}") from None
    if not docs:
        raise InvalidInput(f"{path} is empty: give a Serve config or a manifest")
    return docs
