"""A real platform deployed from a real registry file, for the tiers that run one.

``Platform`` renders the registry with the production renderer and submits it the way
``serve deploy`` does, sized for a 2-core machine (router replicas, shared pool and
dedicated tenants at 0.1 CPU).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import requests

from tests.conftest import SAMPLES, deploy_config

IMAGE = (SAMPLES / "shapes_03.png").read_bytes()


def demo_model(name: str = "shapes"):
    from serve_app.models.store import fetch_version
    from serve_app.wire import utc_iso
    from tenant_registry.records import ModelVersion

    uri = "file://models/demo/shapes/1"
    manifest = fetch_version(uri).manifest
    return name, ModelVersion(
        version=1, uri=uri, architecture="yolov8n", sha256=manifest.sha256, created_at=utc_iso()
    )


class Platform:
    """The deployed app and what the tests know about it (keys, registry, URL)."""

    def __init__(self, context, db: Path, http_port: int, routers: int = 2, **ledger: Any) -> None:
        from tenant_registry.store import Registry

        self.context = context
        self.reg = Registry(db)
        p = self.reg.platform()
        cpu = {"num_cpus": 0.1}
        one = {"min_replicas": 1, "max_replicas": 1}
        self.reg.set_platform(
            p.model_copy(
                update={
                    "http_port": http_port,
                    # the tenant directory (and model pushes) in the test's own folder
                    "model_store_uri": f"file://{db.parent}/models",
                    "router": p.router.model_copy(
                        update={
                            "resources": p.router.resources.model_copy(update=cpu),
                            "autoscaling": p.router.autoscaling.model_copy(
                                update={"min_replicas": routers, "max_replicas": routers}
                            ),
                        }
                    ),
                    "shared_pool": p.shared_pool.model_copy(
                        update={
                            "resources": p.shared_pool.resources.model_copy(update=cpu),
                            "autoscaling": p.shared_pool.autoscaling.model_copy(update=one),
                        }
                    ),
                    "dedicated_resources": p.dedicated_resources.model_copy(update=cpu),
                    "dedicated_autoscaling": p.dedicated_autoscaling.model_copy(update=one),
                    "ledger": p.ledger.model_copy(
                        update={"state_path": str(db.parent / "l.db"), **ledger}
                    ),
                }
            )
        )
        self.url = f"http://127.0.0.1:{http_port}"
        self.keys: dict[str, str] = {}
        self.key_ids: dict[str, str] = {}

    def onboard(self, tenant: str, tier: str = "shared", model: str = "shapes", **quota) -> None:
        self.reg.create_tenant(tenant, tenant.title(), tier, demo_model(model))
        if quota:
            self.reg.set_quota(tenant, **quota)
        record, self.keys[tenant] = self.reg.issue_key(tenant)
        self.key_ids[tenant] = record.key_id

    def publish(self) -> None:
        """What ``tenantctl apply`` does first: the tenant directory brought up to date."""
        from tenant_registry.publish import publish_registry

        publish_registry(self.reg)

    def apply(self) -> None:
        from tenant_registry.publish import published_config

        deploy_config(self.context, published_config(self.reg))

    def post(
        self,
        credential: str,
        data: bytes = IMAGE,
        *,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        path: str = "/v1/detect",
    ) -> requests.Response:
        return requests.post(
            f"{self.url}{path}",
            data=data,
            params=params,
            timeout=60,
            headers={"Authorization": f"Bearer {credential}", **(headers or {})},
        )

    def detect(self, tenant: str, **kwargs: Any) -> requests.Response:
        return self.post(self.keys[tenant], **kwargs)
