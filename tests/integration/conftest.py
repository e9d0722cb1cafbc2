"""One local Ray for the integration tier, with a pretend GPU.

The cluster has 1 fake GPU (``num_gpus=1``): Ray schedules fractional and whole GPU
reservations on it exactly as on a real one, and torch in the replicas finds no
CUDA and falls back to the CPU.
"""

from __future__ import annotations

import copy
import os

import pytest
import yaml

from serve_app.auth.keys import hash_api_key
from tests.conftest import (
    ROOT,
    delete_yolo_app,
    deploy_config,
    free_port,
    start_local_ray,
    stop_local_ray,
    wait_for,
)

GPU_CONFIG = ROOT / "configs" / "serve.gpu.yaml"


def tenant_key(tenant: str) -> str:
    return f"yk_integration_{tenant}"


JWT_ISSUER = "https://idp.initech.test"


@pytest.fixture(scope="package")
def jwt_key():
    """The private key of initech's identity provider (the platform only sees the public)."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(private_key) -> str:
    from cryptography.hazmat.primitives import serialization

    return (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def cpu_adapted_gpu_config(
    http_port: int, ledger_path: str, jwt_public_pem: str | None = None
) -> dict:
    """configs/serve.gpu.yaml with CPU shares small enough for 2 cores, one replica per
    tenant, and key hashes of keys the tests know. GPU shares are left as they are."""
    raw = copy.deepcopy(yaml.safe_load(GPU_CONFIG.read_text()))
    raw["http_options"] = {"host": "127.0.0.1", "port": http_port}
    raw["proxy_location"] = "HeadOnly"
    app = raw["applications"][0]
    app["args"]["router"]["resources"]["num_cpus"] = 0.1
    app["args"]["router"]["autoscaling"] = {"min_replicas": 1, "max_replicas": 1}
    app["args"]["shared_pool"]["resources"]["num_cpus"] = 0.1
    app["args"]["ledger"] = {"state_path": ledger_path}
    app["args"]["shared_pool"]["autoscaling"] = {"min_replicas": 1, "max_replicas": 1}
    for tenant in app["args"]["tenants"]:
        tenant["resources"]["num_cpus"] = 0.1
        tenant["autoscaling"] = {"min_replicas": 1, "max_replicas": 1}
    router = next(d for d in app["deployments"] if d["name"] == "router")
    for tenant in router["user_config"]["tenants"]:
        tenant["api_keys"] = [
            {"id": f"key_{tenant['id']}", "sha256": hash_api_key(tenant_key(tenant["id"]))}
        ]
        if tenant["id"] == "initech" and jwt_public_pem is not None:
            tenant["jwt"] = {
                "issuer": JWT_ISSUER,
                "audience": "yolo",
                "algorithms": ["RS256"],
                "public_keys_pem": [jwt_public_pem],
            }
    return raw


@pytest.fixture(scope="package")
def http_port() -> int:
    """One HTTP port for every app deployed in this tier: Serve's proxy keeps the port it
    started with, whatever a later config says."""
    return free_port()


@pytest.fixture(scope="package")
def ray_cluster(s3):
    yield start_local_ray(num_gpus=1)
    stop_local_ray()


deploy = deploy_config
delete_app = delete_yolo_app


@pytest.fixture(scope="module")
def gpu_app(ray_cluster, tmp_path_factory, http_port, jwt_key):
    """The GPU example app on the fake-GPU cluster; waits for the fractional tenants."""
    from ray import serve

    delete_app()  # start clean if another module deployed its own app
    ledger = tmp_path_factory.mktemp("ledger") / "ledger.db"
    config = cpu_adapted_gpu_config(http_port, str(ledger), public_pem(jwt_key))
    deploy(ray_cluster, config)

    def fractional_running():
        app = serve.status().applications.get("yolo")
        if app is None:
            return False
        deps = app.deployments
        names = ["router", "quota-ledger", "quota-ledger-standby", "tenant-acme",
                 "tenant-globex", "tenant-initech"]  # fmt: skip
        return all(n in deps and deps[n].status == "HEALTHY" for n in names)

    wait_for(fractional_running, 300, "router and the three fractional-GPU tenants to be healthy")
    return {"context": ray_cluster, "config": config}


@pytest.fixture(scope="package")
def s3(tmp_path_factory):
    """A real S3 endpoint (moto's server, separate process); credentials in the env so
    that Ray workers started afterwards inherit them, as on a real node."""
    import boto3

    from tests.conftest import S3_TEST_ENV, start_s3_server

    proc, url = start_s3_server(tmp_path_factory.mktemp("s3"))
    saved = {k: os.environ.get(k) for k in S3_TEST_ENV}
    os.environ.update(S3_TEST_ENV)
    client = boto3.client("s3", endpoint_url=url, region_name="us-east-1")
    yield {"url": url, "client": client}
    proc.terminate()
    proc.wait(timeout=30)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
