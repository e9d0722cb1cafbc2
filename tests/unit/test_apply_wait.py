"""`tenantctl apply --wait`: live means the newly submitted config (its deploy time moved)
is RUNNING with every deployment HEALTHY and every replica RUNNING — not the old config
still running, not the first replica to reconfigure."""

from __future__ import annotations

import pytest

from tenant_registry import cluster
from tenant_registry.errors import ClusterError


def _details(deployed_at: float, app: str, router: str, replicas: tuple[str, ...]) -> dict:
    return {
        "applications": {
            "yolo": {
                "status": app,
                "last_deployed_time_s": deployed_at,
                "deployments": {
                    "router": {"name": "router", "status": router,
                               "replicas": [{"state": r} for r in replicas]},
                },
            }
        }
    }  # fmt: skip


def _script(monkeypatch, seen: list[dict]) -> list[dict]:
    served = list(seen)
    monkeypatch.setattr(cluster, "serve_details", lambda _address: served.pop(0))
    monkeypatch.setattr(cluster, "APPLY_POLL_S", 0.0)
    return served


def test_waits_past_the_old_config_and_a_rollout_in_progress(monkeypatch):
    served = _script(monkeypatch, [
        _details(100.0, "RUNNING", "HEALTHY", ("RUNNING",)),  # the old config, all healthy
        _details(200.0, "DEPLOYING", "UPDATING", ("RUNNING", "RUNNING")),
        _details(200.0, "RUNNING", "HEALTHY", ("RUNNING", "STARTING")),
        _details(200.0, "RUNNING", "HEALTHY", ("RUNNING", "RUNNING")),
        _details(200.0, "RUNNING", "HEALTHY", ("RUNNING", "RUNNING")),
    ])  # fmt: skip
    cluster.wait_applied("http://x", since=100.0, timeout_s=10)
    assert len(served) == 1  # returned at the first live answer, not before


def test_a_config_that_never_goes_live_fails_with_what_it_saw(monkeypatch):
    _script(monkeypatch, [_details(200.0, "DEPLOYING", "UPDATING", ("RUNNING",))] * 10_000)
    with pytest.raises(ClusterError, match="router UPDATING"):
        cluster.wait_applied("http://x", since=100.0, timeout_s=0.05)


def test_a_config_the_cluster_already_runs_is_not_submitted_again(monkeypatch, tmp_path):
    """`apply` compares what it rendered with the cluster's config as Ray Serve stores it
    (parsed, unset fields left out): equal means nothing to submit."""
    from ray.serve.schema import ServeApplicationSchema

    from tenant_registry.render import render_registry
    from tenant_registry.store import Registry

    with Registry(tmp_path / "r.db") as reg:
        config = render_registry(reg)
    app = config["applications"][0]
    stored = ServeApplicationSchema.model_validate(app).model_dump(mode="json", exclude_unset=True)
    running = {
        "proxy_location": config["proxy_location"],
        "http_options": {**config["http_options"], "request_timeout_s": 60},
        "applications": {"yolo": {"deployed_app_config": stored}},
    }
    monkeypatch.setattr(cluster, "serve_details", lambda _address: running)
    assert cluster.is_deployed(config, "http://x")
    running["http_options"]["port"] += 1  # a platform change outside the application
    assert not cluster.is_deployed(config, "http://x")
    running["http_options"]["port"] -= 1
    app["deployments"][0]["user_config"]["audit_dir"] = "elsewhere"  # a platform change
    assert not cluster.is_deployed(config, "http://x")
    running["applications"] = {}  # nothing deployed yet
    assert not cluster.is_deployed(config, "http://x")
