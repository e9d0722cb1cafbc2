"""Application builder: ``import_path: serve_app.app:build_app``.

Binds one ``Router`` ingress, one ``shared-pool`` Detector that multiplexes every
shared-tier tenant, and one ``Detector`` per dedicated tenant (``tenant-<id>``),
each with its own autoscaling and resource reservation. Tenant tables and model
catalogs are not args: they arrive as ``user_config`` so that changing them
restarts nothing.
"""

from __future__ import annotations

from typing import Any

from ray.serve import Application
from ray.serve.config import RequestRouterConfig

from serve_app.blobs import resolve_path
from serve_app.config import AppArgs, DeploymentSpec, deployment_name
from serve_app.constants import (
    BATCH_MAX_SIZE,
    LEDGER_DEPLOYMENT,
    LEDGER_STANDBY_DEPLOYMENT,
    POOL_PLACEMENT,
    ROUTER_DEPLOYMENT,
    SHARED_POOL_DEPLOYMENT,
)
from serve_app.http.router import Router
from serve_app.inference.coalescer import limit_for
from serve_app.inference.detector import Detector
from serve_app.inference.pool_router import PoolRouter
from serve_app.quota.ledger import QuotaLedger


def deployment_options(spec: DeploymentSpec, *, batching: bool) -> dict[str, Any]:
    """Serve ``.options()`` for one deployment spec."""
    max_ongoing = spec.max_ongoing_requests
    if batching:  # batches only fill if a replica may hold at least a batch of requests
        max_ongoing = max(max_ongoing, BATCH_MAX_SIZE)
    options: dict[str, Any] = {
        "autoscaling_config": spec.autoscaling.model_dump(),
        "ray_actor_options": spec.resources.ray_actor_options(),
        "max_ongoing_requests": max_ongoing,
        "max_surge_percent": spec.max_surge_percent,
    }
    if spec.max_replicas_per_node is not None:
        options["max_replicas_per_node"] = spec.max_replicas_per_node
    return options


def build_app(args: AppArgs) -> Application:
    """Build the ``yolo`` application from validated builder args."""
    if isinstance(args, dict):  # called from Python rather than by Serve
        args = AppArgs.model_validate(args)
    # mypy cannot see that @serve.deployment turned the classes into Deployments.
    detectors = {
        tenant.id: Detector.options(  # type: ignore[attr-defined]
            name=deployment_name(tenant.id), **deployment_options(tenant, batching=True)
        ).bind(tenant.id, args.uploads)
        for tenant in args.tenants
    }
    pool_options = deployment_options(args.shared_pool, batching=True)
    if POOL_PLACEMENT != "serve":  # model-aware placement over the pool's replicas
        pool_options["request_router_config"] = RequestRouterConfig(request_router_class=PoolRouter)
    pool = Detector.options(  # type: ignore[attr-defined]
        name=SHARED_POOL_DEPLOYMENT, **pool_options
    ).bind(SHARED_POOL_DEPLOYMENT, args.uploads)
    # what the pool holds at most: the routers' turns at it are shares of this
    pool_slots = pool_options["max_ongoing_requests"] * args.shared_pool.autoscaling.max_replicas
    ledger_args = (str(resolve_path(args.ledger.state_path)), args.ledger.usage_uri,
                   args.ledger.store, args.uploads)  # fmt: skip
    ledgers = [
        QuotaLedger.options(  # type: ignore[attr-defined]
            name=name,
            ray_actor_options=args.ledger.resources.ray_actor_options(),
            max_surge_percent=args.ledger.max_surge_percent,
        ).bind(*ledger_args)
        for name in (LEDGER_DEPLOYMENT, LEDGER_STANDBY_DEPLOYMENT)[: 1 + args.ledger.standby]
    ]
    router = Router.options(  # type: ignore[attr-defined]
        name=ROUTER_DEPLOYMENT, **deployment_options(args.router, batching=False)
    )
    # Tenants that may scale to zero are not probed by /readyz: a probe would wake them.
    scale_to_zero = sorted(t.id for t in args.tenants if t.autoscaling.min_replicas == 0)
    # Per tenant, the calls in flight to a model beyond which the router coalesces them.
    limits = {t.id: limit_for(t.autoscaling.max_replicas, t.autoscaling.target_ongoing_requests)
              for t in args.tenants}  # fmt: skip
    app: Application = router.bind(
        detectors, pool, ledgers, scale_to_zero, pool_slots, args.uploads, limits
    )
    return app
