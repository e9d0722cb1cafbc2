"""The adversarial tier: one real platform over real HTTP, attacked.

One app for the whole tier, rendered from a real registry file: two router
replicas, a shared pool, one dedicated tenant, tenants with tight quotas, a
suspended tenant, a tenant with a revoked key, and two tenants that accept JWTs
(one with a PEM public key, one with a JWKS URL served by a local HTTP server
that counts its fetches).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from tests.conftest import (
    delete_yolo_app,
    free_port,
    start_local_ray,
    stop_local_ray,
    wait_for,
)
from tests.platform_app import Platform, demo_model

ALPHA_ISSUER = "https://idp.alpha.test"
GAMMA_ISSUER = "https://idp.gamma.test"
AUDIENCE = "yolo"
RATED_PER_S, RATED_BURST = 2, 2
# Names that must never appear in an answer to anybody but their owner.
BETA_SECRETS = ("beta", "Beta Industries", "widgets")


@pytest.fixture(scope="package")
def ray_cluster():
    yield start_local_ray(num_gpus=0)
    stop_local_ray()


@dataclass
class JwksServer:
    """A tenant's identity provider publishing its keys; counts fetches."""

    url: str
    keys: list[dict[str, Any]] = field(default_factory=list)
    fetches: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture(scope="package")
def jwks_server():
    port = free_port()
    state = JwksServer(url=f"http://127.0.0.1:{port}/.well-known/jwks.json")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with state.lock:
                state.fetches += 1
                body = json.dumps({"keys": state.keys}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()


@pytest.fixture(scope="package")
def idp_keys():
    from cryptography.hazmat.primitives.asymmetric import rsa

    def new():
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)

    return {"alpha": new(), "gamma": new(), "attacker": new()}


def public_pem(private_key) -> str:
    from cryptography.hazmat.primitives import serialization

    return (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def public_jwk(private_key, kid: str) -> dict[str, Any]:
    from jwt.algorithms import RSAAlgorithm

    return {**json.loads(RSAAlgorithm.to_jwk(private_key.public_key())), "kid": kid}


@pytest.fixture(scope="package")
def platform(ray_cluster, tmp_path_factory, jwks_server, idp_keys):
    delete_yolo_app()
    folder = tmp_path_factory.mktemp("security")
    app = Platform(ray_cluster, folder / "registry.db", free_port())
    app.audit_dir = folder / "audit"
    app.reg.set_platform(app.reg.platform().model_copy(update={"audit_dir": str(app.audit_dir)}))
    app.onboard("alpha")
    app.reg.set_jwt(
        "alpha",
        issuer=ALPHA_ISSUER,
        audience=AUDIENCE,
        public_keys_pem=(public_pem(idp_keys["alpha"]),),
    )
    app.reg.create_tenant("beta", "Beta Industries", "dedicated", demo_model("widgets"))
    record, app.keys["beta"] = app.reg.issue_key("beta")
    app.key_ids["beta"] = record.key_id
    jwks_server.keys = [public_jwk(idp_keys["gamma"], "g1")]
    app.onboard("gamma")
    app.reg.set_jwt("gamma", issuer=GAMMA_ISSUER, audience=AUDIENCE, jwks_url=jwks_server.url)
    app.onboard("rated", requests_per_s=RATED_PER_S, burst=RATED_BURST)
    app.onboard("capped", max_concurrent=1)
    app.onboard("monthly", monthly_images=3)
    app.onboard("metered", monthly_images=1000)
    app.onboard("frozen")
    app.reg.set_status("frozen", "suspended")
    app.onboard("rotated")
    old = app.keys["rotated"]
    app.reg.revoke_key(app.key_ids["rotated"])
    record, app.keys["rotated"] = app.reg.issue_key("rotated")
    app.key_ids["rotated"] = record.key_id
    app.keys["rotated-old"] = old
    app.onboard("free")
    app.onboard("poller")  # floods its usage and policy calls
    app.onboard("inferrer", monthly_images=1000)  # bills Open Inference Protocol calls
    app.onboard("chatty")  # floods its v2 model metadata calls
    app.onboard("uploader")  # uploads, rolls out and activates its own versions
    app.onboard("cycler")  # a shared tenant with six versions of one model
    _, first = demo_model()
    for version in (2, 3, 4, 5, 6):
        app.reg.add_model_version("cycler", "shapes", replace(first, version=version))
    app.apply()
    for tenant in ("free", "beta"):
        wait_for(lambda t=tenant: app.detect(t).status_code == 200, 300, f"{tenant} to be served")
    yield app
    delete_yolo_app()


def assert_no_leak(response: requests.Response, *secrets: str) -> None:
    """No other tenant's id, name or model in the body or any header."""
    text = response.text + " " + " ".join(f"{k}: {v}" for k, v in response.headers.items())
    for secret in secrets or BETA_SECRETS:
        assert secret not in text, (secret, text[:400])


def error_code(response: requests.Response, status: int) -> str:
    assert response.status_code == status, (response.status_code, response.text[:300])
    body = response.json()
    assert set(body) == {"error"} and body["error"]["message"]
    return str(body["error"]["code"])
