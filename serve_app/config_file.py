"""Strict validation of a whole Serve config file for this application.

Ray Serve silently ignores misspelled keys in deployment overrides
(``num_replica``, ``target_ongoing_request``). This schema forbids unknown keys at
every level it knows, validates builder ``args`` and every ``user_config``, and
cross-checks them: every routed tenant has a deployment, and every model version
the router can select is in that deployment's catalog.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, model_validator

from serve_app.config import (
    AppArgs,
    DetectorConfig,
    RouterConfig,
    deployment_name,
    serving_deployment,
)
from serve_app.constants import (
    APP_NAME,
    LEDGER_DEPLOYMENT,
    LEDGER_STANDBY_DEPLOYMENT,
    ROUTER_DEPLOYMENT,
    SHARED_POOL_DEPLOYMENT,
)
from serve_app.wire import StrictModel, model_id


class HttpOptions(StrictModel):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    request_timeout_s: float | None = None
    keep_alive_timeout_s: float | None = None
    # TLS: paths to PEM files on a secret mount. No key password field on purpose:
    # secrets stay out of configs.
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_ca_certs: str | None = None

    @model_validator(mode="after")
    def _tls_pair(self) -> HttpOptions:
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("ssl_certfile and ssl_keyfile go together")
        return self


class RuntimeEnv(StrictModel):
    """The ``runtime_env`` fields a deployment of this project may use; Ray treats an
    unknown key as a plugin name, so a misspelled ``env_var`` would not fail the file."""

    env_vars: dict[str, str] = Field(default_factory=dict)
    working_dir: str | None = None
    py_modules: list[str] | None = None
    pip: list[str] | dict[str, Any] | str | None = None
    uv: list[str] | dict[str, Any] | str | None = None
    conda: dict[str, Any] | str | None = None
    excludes: list[str] | None = None
    image_uri: str | None = None
    config: dict[str, Any] | None = None


class DeploymentOverride(StrictModel):
    """The deployment options this project lets a config file override."""

    name: str
    user_config: dict[str, Any] | None = None
    max_ongoing_requests: int | None = Field(None, ge=1)
    max_queued_requests: int | None = None
    graceful_shutdown_timeout_s: float | None = Field(None, ge=0)
    graceful_shutdown_wait_loop_s: float | None = Field(None, ge=0)
    health_check_period_s: float | None = Field(None, gt=0)
    health_check_timeout_s: float | None = Field(None, gt=0)


class ApplicationSpec(StrictModel):
    name: str
    route_prefix: str = "/"
    import_path: Literal["serve_app.app:build_app"]
    runtime_env: RuntimeEnv = Field(default_factory=RuntimeEnv)
    args: AppArgs
    deployments: list[DeploymentOverride] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> ApplicationSpec:
        dedicated = {t.id for t in self.args.tenants}
        known = {
            ROUTER_DEPLOYMENT,
            SHARED_POOL_DEPLOYMENT,
            LEDGER_DEPLOYMENT,
            LEDGER_STANDBY_DEPLOYMENT,
        } | {deployment_name(t) for t in dedicated}
        overrides = {d.name: d for d in self.deployments}
        for name in overrides:
            if name not in known:
                raise ValueError(
                    f"deployment {name!r} is not built by args (known: {', '.join(sorted(known))})"
                )

        def user_config(name: str) -> dict[str, Any]:
            override = overrides.get(name)
            return (override.user_config if override else None) or {}

        router_cfg = RouterConfig.model_validate(user_config(ROUTER_DEPLOYMENT))
        for tenant in router_cfg.tenants:
            if tenant.tier == "dedicated" and tenant.id not in dedicated:
                raise ValueError(
                    f"dedicated tenant {tenant.id!r} has no deployment: add it to args.tenants"
                )
            if tenant.tier == "shared" and tenant.id in dedicated:
                raise ValueError(f"shared tenant {tenant.id!r} also has a dedicated deployment")
            target = serving_deployment(tenant.id, tenant.tier)
            catalog = DetectorConfig.model_validate(user_config(target)).models
            for model in tenant.models:
                for version in model.versions:
                    mid = model_id(tenant.id, model.name, version)
                    if mid not in catalog:
                        raise ValueError(
                            f"{mid} is routable but missing from {target}'s user_config.models"
                        )
        return self


class ServeConfigFile(StrictModel):
    proxy_location: Literal["Disabled", "HeadOnly", "EveryNode"] = "EveryNode"
    http_options: HttpOptions = HttpOptions()
    logging_config: dict[str, Any] | None = None
    applications: list[ApplicationSpec] = Field(min_length=1)

    def app(self, name: str = APP_NAME) -> ApplicationSpec:
        return next(a for a in self.applications if a.name == name)


def load_serve_config(path: str | Path) -> ServeConfigFile:
    """Parse and strictly validate a Serve config file (raises pydantic's ValidationError)."""
    raw = yaml.safe_load(Path(path).read_text())
    return ServeConfigFile.model_validate(raw)
