"""Hot-path settings every deployment carries in code (a config file may not drop them)."""

from __future__ import annotations

from serve_app.app import deployment_options
from serve_app.config import DedicatedTenant
from serve_app.constants import DETECTOR_MAX_QUEUED_REQUESTS
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
