"""The example tenants behind ``kuberay-cluster.yaml``: a registry built from this list.

    python scripts/example_tenants.py --db /tmp/example.db
    tenantctl --db /tmp/example.db render --format rayservice -o kuberay-cluster.yaml

(``make manifests`` does both.) Deterministic on purpose: no API keys (tenants sign in
with JWTs from their own identity providers, checked against JWKS URLs, so the manifest
holds no credential material at all), fixed model URIs on S3, and the production
platform settings below. ``tests/unit/test_kuberay.py`` rebuilds it and checks the
checked-in manifest is exactly what it renders.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from serve_app.config import (
    AutoscalingSpec,
    LedgerSpec,
    ResourceSpec,
    RouterSpec,
    SharedPoolSpec,
)
from tenant_registry.records import ModelVersion
from tenant_registry.store import Registry

MODEL_BUCKET = "s3://yoloserve-models"
# sha256 of models/demo/shapes/1/model.safetensors, which the example tenants start with
DEMO_SHA256 = "c0adaf27b4b648a07565b753cb163a5a8e8f31479b9a88b4ff64a54d31591b75"
CREATED_AT = "2026-01-01T00:00:00Z"

# id, tier, GPU share, CPUs, (min, max) replicas
TENANTS: list[tuple[str, str, float, float, tuple[int, int]]] = [
    ("acme", "dedicated", 0.5, 2.0, (1, 4)),
    ("globex", "dedicated", 0.25, 1.0, (1, 2)),
    ("initech", "dedicated", 0.25, 1.0, (1, 2)),
    ("umbrella", "dedicated", 1.0, 4.0, (0, 2)),  # a whole GPU, scaled to zero when idle
    ("hooli", "shared", 0.0, 0.0, (1, 1)),
    ("piedpiper", "shared", 0.0, 0.0, (1, 1)),
]


def build(db: Path) -> Registry:
    reg = Registry(db)
    reg.set_platform(
        reg.platform().model_copy(
            update={
                "http_host": "0.0.0.0",  # noqa: S104  (inside a pod, behind a Service)
                "proxy_location": "EveryNode",
                "router": RouterSpec(
                    resources=ResourceSpec(num_cpus=1),
                    autoscaling=AutoscalingSpec(
                        min_replicas=2, max_replicas=8, target_ongoing_requests=32
                    ),
                ),
                "shared_pool": SharedPoolSpec(
                    resources=ResourceSpec(num_cpus=2),
                    autoscaling=AutoscalingSpec(
                        min_replicas=1, max_replicas=4, target_ongoing_requests=8
                    ),
                ),
                "default_model_uri": f"{MODEL_BUCKET}/demo/shapes/1",
                "model_store_uri": f"{MODEL_BUCKET}/tenants",
                "ledger": LedgerSpec(usage_uri="s3://yoloserve-usage/metering"),
            }
        )
    )
    for tenant_id, tier, gpus, cpus, (low, high) in TENANTS:
        first = ModelVersion(
            version=1,
            uri=f"{MODEL_BUCKET}/tenants/{tenant_id}/shapes/1",
            architecture="yolov8n",
            sha256=DEMO_SHA256,
            created_at=CREATED_AT,
        )
        reg.create_tenant(tenant_id, tenant_id.title(), tier, ("shapes", first))  # type: ignore[arg-type]
        if tier == "dedicated":
            reg.set_resources(
                tenant_id,
                num_cpus=cpus,
                num_gpus=gpus,
                min_replicas=low,
                max_replicas=high,
                target_ongoing_requests=4,
            )
        reg.set_jwt(
            tenant_id,
            issuer=f"https://login.{tenant_id}.example",
            audience="yoloserve",
            algorithms=["RS256", "ES256"],
            jwks_url=f"https://login.{tenant_id}.example/.well-known/jwks.json",
        )
    return reg


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, required=True, help="a new registry file")
    args = parser.parse_args()
    if args.db.exists():
        parser.error(f"{args.db} exists: give a new file")
    build(args.db).close()
    print(f"example registry at {args.db}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
