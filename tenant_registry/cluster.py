"""Talking to a running Ray cluster through the Serve REST API (what `serve deploy` uses)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from tenant_registry.errors import ClusterError

DASHBOARD_ENV = "RAY_DASHBOARD_ADDRESS"
DEFAULT_DASHBOARD = "http://127.0.0.1:8265"
APPLY_POLL_S = 0.5


def default_address() -> str:
    return os.environ.get(DASHBOARD_ENV, DEFAULT_DASHBOARD)


def _auth_headers() -> dict[str, str]:
    """Ray's token-auth header, from where Ray documents the token lives: $RAY_AUTH_TOKEN,
    the file $RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token (written by `ray start`)."""
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
        return {}
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if not token:
        path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", str(Path.home() / ".ray" / "auth_token")))
        token = path.read_text().strip() if path.is_file() else ""
    return {"Authorization": f"Bearer {token}"} if token else {}


def _client(address: str) -> Any:
    from serve_app.ray_compat import serve_submission_client

    try:
        return serve_submission_client(address, headers=_auth_headers())
    except Exception as exc:
        raise ClusterError(
            f"cannot reach the Ray dashboard at {address} ({type(exc).__name__}): start the "
            "cluster (`ray start --head`) or pass --address http://HOST:8265"
        ) from None


def deploy(config: dict[str, Any], address: str) -> None:
    """Submit a whole Serve config, like ``serve deploy``."""
    client = _client(address)
    try:
        client.deploy_applications(config)
    except Exception as exc:
        raise ClusterError(f"the cluster refused the config: {exc}") from None


def is_deployed(config: dict[str, Any], address: str) -> bool:
    """Whether every application of ``config`` is what the cluster already runs, as
    Ray Serve itself parses it: then submitting it again would change nothing (with the
    tenant directory on, most tenant changes leave the Serve config as it was)."""
    from ray.serve.schema import ServeApplicationSchema

    def normal(app: dict[str, Any]) -> dict[str, Any]:
        parsed = ServeApplicationSchema.model_validate(app)
        normalised: dict[str, Any] = parsed.model_dump(mode="json", exclude_unset=True)
        return normalised

    details = serve_details(address)
    if details.get("proxy_location") != config.get("proxy_location"):
        return False
    http = details.get("http_options") or {}
    if any(http.get(k) != v for k, v in (config.get("http_options") or {}).items()):
        return False  # submitted, Serve itself says what it cannot change live
    running = details.get("applications", {})
    for app in config["applications"]:
        deployed = (running.get(app["name"]) or {}).get("deployed_app_config")
        if not deployed or normal(deployed) != normal(app):
            return False
    return True


def serve_details(address: str) -> dict[str, Any]:
    """Applications, deployments and replicas as the dashboard reports them."""
    details: dict[str, Any] = _client(address).get_serve_details()
    return details


def deployed_at(address: str, app: str = "yolo") -> float | None:
    """When ``app``'s config was last submitted, by the cluster's clock (None: no app)."""
    found = serve_details(address).get("applications", {}).get(app)
    return None if not found else float(found["last_deployed_time_s"])


def wait_applied(address: str, since: float | None, timeout_s: float, app: str = "yolo") -> None:
    """Wait until a config submitted after ``since`` (``deployed_at`` before submitting)
    is live: the app RUNNING, every deployment HEALTHY, every replica RUNNING. A
    ``user_config`` change (keys, models, policy) is live on every replica by then, not
    on the first one to reconfigure.

    Raises:
        ClusterError: Not live within ``timeout_s`` (with the last status seen).
    """
    deadline = time.monotonic() + timeout_s
    seen = "no status"
    while time.monotonic() < deadline:
        found = serve_details(address).get("applications", {}).get(app)
        if found and (since is None or float(found["last_deployed_time_s"]) > since):
            deployments = found["deployments"].values()
            seen = f"{found['status']}: " + ", ".join(
                f"{d['name']} {d['status']}" for d in deployments
            )
            if (
                found["status"] == "RUNNING"
                and all(d["status"] == "HEALTHY" for d in deployments)
                and all(r["state"] == "RUNNING" for d in deployments for r in d["replicas"])
            ):
                return
        time.sleep(APPLY_POLL_S)
    raise ClusterError(f"the config was not live within {timeout_s:g} s ({seen})")


def delete_applications(address: str) -> None:
    """Delete every Serve application on the cluster (like `serve shutdown`)."""
    try:
        _client(address).delete_applications()
    except ClusterError:
        raise
    except Exception as exc:
        raise ClusterError(f"the cluster refused to delete the applications: {exc}") from None


def load_status(ray_address: str, prefix: str) -> dict[str, dict[str, Any]]:
    """Model load outcomes the replicas reported, for model ids starting with ``prefix``."""
    import ray

    from serve_app.models.load_status import BOARD_NAME, BOARD_NAMESPACE

    try:
        _connect(ray_address, BOARD_NAMESPACE)
        board = ray.get_actor(BOARD_NAME, namespace=BOARD_NAMESPACE)
    except ValueError:
        return {}  # no replica has loaded anything yet
    except Exception as exc:
        raise ClusterError(
            f"cannot reach the Ray cluster at {ray_address} ({type(exc).__name__}): "
            "use --cluster auto on a cluster node, or the head's GCS address"
        ) from None
    status: dict[str, dict[str, Any]] = ray.get(board.get.remote(prefix), timeout=30)
    return status


def _connect(ray_address: str, namespace: str | None = None) -> None:
    import ray

    if not ray.is_initialized():
        ray.init(
            address=ray_address, namespace=namespace, logging_level="ERROR", log_to_driver=False
        )


def _ask_ledger(ray_address: str, method: str, *args: Any) -> Any:
    """Call one of the quota ledger's methods on the running application."""
    from ray import serve

    from serve_app.constants import APP_NAME, LEDGER_DEPLOYMENT, LEDGER_STANDBY_DEPLOYMENT
    from serve_app.quota.failover import ask_leader_blocking
    from serve_app.ray_compat import handle_for_blocking_callers

    try:
        _connect(ray_address)
        handles = [
            handle_for_blocking_callers(serve.get_deployment_handle(name, APP_NAME))
            for name in (LEDGER_DEPLOYMENT, LEDGER_STANDBY_DEPLOYMENT)
        ]
        return ask_leader_blocking(handles, method, *args, timeout_s=30)
    except Exception as exc:
        raise ClusterError(
            f"cannot ask the quota ledger at {ray_address} ({type(exc).__name__}): "
            "is the application running? use --cluster auto on a cluster node"
        ) from None


def key_last_used(ray_address: str, tenant: str) -> dict[str, float]:
    """Epoch seconds each of the tenant's keys was last presented, as the ledger saw it."""
    used: dict[str, float] = _ask_ledger(ray_address, "key_last_used", tenant)
    return used


def tenant_defaults(ray_address: str, tenant: str) -> dict[str, Any]:
    """The detection defaults the tenant saved itself (``PUT /v1/policy``); unset fields
    are None."""
    saved = _ask_ledger(ray_address, "tenant_defaults", tenant)
    if saved is None:
        return {"conf": None, "iou": None, "max_det": None}
    return dict(saved.model_dump())
