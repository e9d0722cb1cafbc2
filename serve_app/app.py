"""Application builder: ``import_path: serve_app.app:build_app``.

Binds one ``Router`` ingress and one ``Detector`` deployment per dedicated tenant,
named ``tenant-<id>``, each with its own autoscaling and resource reservation.
Tenant tables and model catalogs are not args: they arrive as ``user_config`` so
that changing them restarts nothing.
"""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from serve_app.config import AppArgs, AutoscalingSpec, deployment_name
from serve_app.constants import BATCH_MAX_SIZE, ROUTER_DEPLOYMENT
from serve_app.detector import Detector
from serve_app.router import Router


def autoscaling_config(spec: AutoscalingSpec) -> dict[str, Any]:
    return spec.model_dump()


def build_app(args: AppArgs) -> Application:
    """Build the ``yolo`` application from validated builder args."""
    if isinstance(args, dict):  # called from Python rather than by Serve
        args = AppArgs.model_validate(args)
    # mypy cannot see that @serve.deployment turned the classes into Deployments.
    detectors = {
        tenant.id: Detector.options(  # type: ignore[attr-defined]
            name=deployment_name(tenant.id),
            autoscaling_config=autoscaling_config(tenant.autoscaling),
            ray_actor_options=tenant.resources.ray_actor_options(),
            # Batches only fill if a replica may hold at least a batch of requests.
            max_ongoing_requests=max(tenant.max_ongoing_requests, BATCH_MAX_SIZE),
        ).bind(tenant.id)
        for tenant in args.tenants
    }
    router = Router.options(  # type: ignore[attr-defined]
        name=ROUTER_DEPLOYMENT,
        autoscaling_config=autoscaling_config(args.router.autoscaling),
        ray_actor_options=args.router.resources.ray_actor_options(),
        max_ongoing_requests=args.router.max_ongoing_requests,
    )
    app: Application = router.bind(detectors)
    return app
