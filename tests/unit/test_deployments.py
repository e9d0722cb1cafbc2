"""Hot-path settings every deployment carries in code (a config file may not drop them)."""

from __future__ import annotations

from serve_app.app import deployment_options
from serve_app.config import DedicatedTenant
from serve_app.constants import (
    DETECTOR_MAX_QUEUED_REQUESTS,
    LEDGER_HEALTH_CHECK_PERIOD_S,
    REPLICA_HEALTH_CHECK_PERIOD_S,
)
from serve_app.http.router import Router
from serve_app.inference.detector import Detector
from serve_app.quota.ledger import QuotaLedger


def test_serves_access_log_is_off_everywhere_the_audit_log_is_the_record():
    for deployment in (Router, Detector, QuotaLedger):
        assert deployment.logging_config["enable_access_log"] is False, deployment.name


def test_a_full_detector_refuses_fast_instead_of_queueing_without_bound():
    tenant = DedicatedTenant(id="acme")
    options = deployment_options(tenant, batching=True)
    bound = Detector.options(name="tenant-acme", **options)
    assert bound.max_queued_requests == DETECTOR_MAX_QUEUED_REQUESTS
    assert bound.max_ongoing_requests >= 8  # a batch can fill
    assert bound.logging_config["enable_access_log"] is False


def test_dead_replicas_are_noticed_within_a_second_not_rays_ten():
    """Serve finds a dead replica only at its next health check: the ledger (every
    admission that needs a grant waits on it) is probed most often."""
    assert _period(QuotaLedger) == LEDGER_HEALTH_CHECK_PERIOD_S <= 0.5
    for deployment in (Router, Detector):
        assert _period(deployment) == REPLICA_HEALTH_CHECK_PERIOD_S <= 1.0
    tenant = Detector.options(
        name="tenant-acme", **deployment_options(DedicatedTenant(id="acme"), batching=True)
    )
    assert _period(tenant) == REPLICA_HEALTH_CHECK_PERIOD_S  # options keep it


def _period(deployment) -> float:
    # Serve exposes no public getter for it; its deployment config holds it.
    period: float = deployment._deployment_config.health_check_period_s
    return period


def test_replicas_spread_over_nodes_only_when_asked():
    packed = Detector.options(
        name="tenant-acme", **deployment_options(DedicatedTenant(id="acme"), batching=True)
    )
    spread_spec = DedicatedTenant(id="acme", max_replicas_per_node=1)
    spread = Detector.options(name="tenant-acme", **deployment_options(spread_spec, batching=True))
    assert spread._replica_config.max_replicas_per_node == 1
    assert packed._replica_config.max_replicas_per_node is None
